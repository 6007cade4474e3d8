"""What the 1.x client needs from a test: the binding it is given, and its global aiohttp session."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from strict_singleton.testing.functions_host._host import DEFAULT_TASK_HUB, FunctionsHost

T = TypeVar("T")


def binding_json(host: FunctionsHost, *, task_hub: str | None = None) -> str:
    """The ``starter`` binding JSON the Functions host passes to a durable client input, pointing at
    ``host``: build a 1.x client with ``DurableOrchestrationClient(binding_json(host))``.

    Same fields as the real host's HTTP-protocol payload (``taskHubName``, ``creationUrls``,
    ``managementUrls`` with the ``INSTANCEID`` placeholder, ``baseUrl``,
    ``requiredQueryStringParameters``, ``rpcBaseUrl``; ``connectionName`` and ``httpBaseUrl``
    null). The client needs ``taskHubName``, ``creationUrls`` and ``managementUrls`` (its
    constructor's required arguments) and sends every call to ``rpcBaseUrl``. No ``code`` key:
    the stand-in does no authentication.
    """
    hub = task_hub if task_hub is not None else host.task_hub
    base = host.webhook_base_url
    creation = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
    management = host.management_urls("INSTANCEID", task_hub=hub)
    # The binding's payload also has the rewind URI (the check-status response does not).
    management["rewindPostUri"] = management["terminatePostUri"].replace("/terminate?", "/rewind?")
    return json.dumps(
        {
            "taskHubName": hub,
            "connectionName": None,
            "creationUrls": {
                "createNewInstancePostUri": f"{creation}?",
                "createAndWaitOnNewInstancePostUri": (
                    f"{creation}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&"
                ),
            },
            "managementUrls": management,
            "baseUrl": base,
            "requiredQueryStringParameters": "",
            "rpcBaseUrl": host.rpc_base_url,
            "httpBaseUrl": None,
        }
    )


def grpc_binding_json(grpc_address: str, *, task_hub: str = DEFAULT_TASK_HUB, http_base_url: str = "") -> str:
    """The binding JSON for the gRPC Durable client (``durabletask-azurefunctions``
    ``DurableFunctionsClient``), whose ``rpcBaseUrl`` is the backend's gRPC address
    (``127.0.0.1:port``, e.g. :attr:`FunctionsHost.grpc_address` or ``DurableTestBackend.address``).

    Fields as the real host's "middleware passthrough" payload (``taskHubName``, ``connectionName``,
    ``rpcBaseUrl``, ``requiredQueryStringParameters``, ``httpBaseUrl``). ``DurableFunctionsClient``
    reads them with ``.get`` defaults and passes ``rpcBaseUrl`` as a ``TaskHubGrpcClient``
    ``host_address``. Written from that package's source; the test dependencies do not include
    it, so this JSON is checked only by giving its ``rpcBaseUrl`` to a ``TaskHubGrpcClient`` the same way.
    """
    return json.dumps(
        {
            "taskHubName": task_hub,
            "connectionName": None,
            "rpcBaseUrl": grpc_address,
            "requiredQueryStringParameters": "",
            "httpBaseUrl": http_base_url,
        }
    )


_HTTP_UTILS = "azure.durable_functions.models.utils.http_utils"


def _http_utils() -> Any:
    """The 1.x client's HTTP module, or None when azure-functions-durable is not installed."""
    try:
        return importlib.import_module(_HTTP_UTILS)
    except ModuleNotFoundError:
        return None


async def close_client_session() -> None:
    """Close the 1.x client's module-global aiohttp session on the running loop and forget it
    (and replace its module-global lock), so the next event loop starts clean. Call it at the end of each
    event loop that used a ``DurableOrchestrationClient`` (before ``asyncio.run`` returns)."""
    http_utils = _http_utils()
    if http_utils is None:
        return
    session = getattr(http_utils, "_client_session", None)
    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()
    if session is not None and not session.closed:
        await session.close()


def reset_client_session() -> None:
    """Forget the 1.x client's module-global aiohttp session and lock, without awaiting anything:
    call it between event loops (before ``asyncio.run``) so the next loop's first call makes a
    new session and lock. It cannot close a session still open on a loop that has ended (its
    close needs that loop): that session's sockets are closed when it is garbage-collected, with
    aiohttp's "Unclosed client session" and ResourceWarnings. Prefer :func:`close_client_session`
    at the end of each loop (or :func:`run`), which closes it properly."""
    http_utils = _http_utils()
    if http_utils is None:
        return
    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` with the 1.x client's global session reset before and closed at the
    end of that loop: safe to call any number of times in one process."""

    async def scoped() -> T:
        try:
            return await coro
        finally:
            await close_client_session()

    reset_client_session()
    return asyncio.run(scoped())
