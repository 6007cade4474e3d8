"""The binding's ``DurableOrchestrationClient`` as a :class:`~strict_singleton.transport.Transport`: its
answers classified (definite or maybe-executed), its statuses turned into ``OrchestrationState``."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import azure.durable_functions as df
from durabletask.client import OrchestrationState, OrchestrationStatus

from strict_singleton._validation import StartCall
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.functions._errors import HostError
from strict_singleton.functions._urls import _EVENT, _FUNCTION, _INSTANCE_ID, _for_url

if TYPE_CHECKING:
    pass


_ALREADY_EXISTS = re.compile(r"An Orchestration instance with the status \w+ already exists")


_STATUS = {
    "Running": OrchestrationStatus.RUNNING,
    "Pending": OrchestrationStatus.PENDING,
    "Suspended": OrchestrationStatus.SUSPENDED,
    "ContinuedAsNew": OrchestrationStatus.CONTINUED_AS_NEW,
    "Completed": OrchestrationStatus.COMPLETED,
    "Failed": OrchestrationStatus.FAILED,
    "Terminated": OrchestrationStatus.TERMINATED,
    # durabletask's OrchestrationStatus has no Canceled; both are finished and every reuse
    # policy treats them alike.
    "Canceled": OrchestrationStatus.TERMINATED,
}


def _message_of(body: Any) -> str:
    """The host's error text in a response body (the parsed JSON, or a string)."""
    if isinstance(body, dict):
        return str(body.get("ExceptionMessage") or body.get("Message") or body)
    return str(body)


def _transport_error(exc: BaseException, doing: str) -> HostError | None:
    """A failure to get an answer at all: the request may or may not have been executed."""
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return HostError("DEADLINE_EXCEEDED", f"{doing}: no answer before the lease's send-by deadline")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return HostError("UNAVAILABLE", f"{doing}: {type(exc).__name__}: {exc}")
    return None


def _start_answer(status: int, body: Any) -> str:
    """The instance ID from the host's answer to a start, or the :class:`HostError` it means.

    Only a 400 (an unknown function, a bad request) surely created nothing; the host's
    duplicate rejection (500, or 409 on newer hosts, "An Orchestration instance with the
    status X already exists.") is ``ALREADY_EXISTS``; anything else may have been executed (``INTERNAL``, ambiguous).
    """
    if status <= 202 and isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    text = _message_of(body)
    if status == 400:
        raise HostError("INVALID_ARGUMENT", f"start refused by the host (400): {text}")
    if status in (409, 500) and _ALREADY_EXISTS.search(text):  # newer hosts answer a duplicate 409 Conflict
        raise HostError("ALREADY_EXISTS", f"start: {text}")
    raise HostError("INTERNAL", f"start: the host answered {status}: {text}")


# What the 1.x client raises for raise_event / terminate answers that surely did nothing.
_DEFINITE = re.compile(r"^(Instance with ID .* is gone|No instance with ID .* found|Only application/json)")


def _classify_message(exc: BaseException, doing: str) -> HostError:
    """An event or terminate failure: definite for the host's 400/404/410 answers, else ambiguous."""
    transport = _transport_error(exc, doing)
    if transport is not None:
        return transport
    text = str(exc.args[0]) if exc.args else str(exc)
    if _DEFINITE.search(text):
        return HostError("INVALID_ARGUMENT" if text.startswith("Only") else "NOT_FOUND", f"{doing}: {text}")
    return HostError("INTERNAL", f"{doing}: {type(exc).__name__}: {text}")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def to_state(status: Any, instance_id: str) -> OrchestrationState | None:
    """A ``DurableOrchestrationStatus`` as durabletask's ``OrchestrationState`` (``None``: no instance).

    The 1.x client answers a missing instance (HTTP 404, empty body) with a *falsy* status
    whose ``message`` is ``""``; any other falsy status is an error body (HTTP 500 or 400),
    raised as :class:`HostError`.
    """
    if not status:
        if getattr(status, "message", None) == "" and not getattr(status, "ExceptionMessage", None):
            return None
        detail = getattr(status, "ExceptionMessage", None) or getattr(status, "Message", None) or status
        raise HostError("INTERNAL", f"status read failed: {detail}")
    runtime = getattr(status.runtime_status, "value", status.runtime_status)
    if runtime not in _STATUS:
        raise HostError("INTERNAL", f"status read returned an unknown runtimeStatus {runtime!r}")
    created = _parse_time(status.created_time)
    updated = _parse_time(status.last_updated_time) or created
    if created is None:  # pragma: no cover - a truthy status always has a creation time
        raise HostError("INTERNAL", "status read returned no createdTime")
    return OrchestrationState(
        instance_id,
        status.name or "",
        _STATUS[runtime],
        created,
        updated or created,
        None if status.input_ is None else str(status.input_),
        None if status.output is None else str(status.output),
        None if status.custom_status is None else str(status.custom_status),
        None,
    )


def forget_stale_session() -> None:
    """Drop the 1.x client's module-global aiohttp session if it belongs to another event loop.

    The client creates one session on first use, bound to the loop running then, and keeps it
    until it is closed; a second event loop in the same process (``asyncio.run`` twice, test
    runs) would fail with "Event loop is closed". It cannot be closed from here (its loop is
    gone or another one); it is forgotten, and the client creates a new one on this loop.
    """
    from azure.durable_functions.models.utils import http_utils

    session = getattr(http_utils, "_client_session", None)
    if session is None:
        return
    loop = getattr(session, "_loop", None)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if session.closed or loop is not running:
        http_utils._client_session = None
        http_utils._session_lock = asyncio.Lock()


class _Serializer:
    """The 1.x client's own input serializer (``df_dumps``), as a data converter for the input check."""

    def serialize(self, value: Any) -> str | None:
        text: str | None = df.DurableOrchestrationClient._get_json_input(value)
        return text

    def deserialize(self, text: str | None, expected_type: Any = None) -> Any:  # pragma: no cover - unused
        raise NotImplementedError


class FunctionsClient:
    """The binding's ``DurableOrchestrationClient`` behind the async durabletask client methods
    the starter calls (status read, start with a send-by deadline, terminate, raise event).

    Every value the 1.x client formats into a URL path is checked before the request (a
    definite ``INVALID_ARGUMENT`` :class:`HostError` otherwise, nothing sent), and a start the
    host answers with another instance ID than the one asked for is refused as definite too.
    """

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        if not callable(getattr(client, "start_new", None)) or not callable(getattr(client, "get_status", None)):
            raise InvalidArgumentError(
                f"client must be the binding's azure.durable_functions.DurableOrchestrationClient, "
                f"got {type(client).__name__}"
            )
        self.client = client
        bindings = getattr(client, "_orchestration_bindings", None)
        # The task hub the binding names: leases and records are kept per task hub (namespace=).
        self.task_hub_name: str = str(getattr(bindings, "task_hub_name", "") or "")
        self._data_converter = _Serializer()

    async def get_orchestration_state(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float | None = None
    ) -> OrchestrationState | None:
        _for_url(instance_id, _INSTANCE_ID, "status read")
        forget_stale_session()
        try:
            call = self.client.get_status(instance_id, show_input=fetch_payloads)
            status = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise (_transport_error(exc, "status read") or HostError("INTERNAL", f"status read: {exc!r}")) from exc
        return to_state(status, instance_id)

    async def schedule_new_orchestration(
        self,
        orchestrator: Any,
        *,
        input: Any = None,
        instance_id: str | None = None,
        version: str | None = None,
        timeout: float | None = None,
        **_ignored: Any,  # start_at, reuse_id_policy, tags: the host's HTTP API has none of them
    ) -> str:
        name = _for_url(orchestrator, _FUNCTION, "start")
        if instance_id is not None:
            _for_url(instance_id, _INSTANCE_ID, "start")
        forget_stale_session()
        call = self._post_start(name, instance_id, input, version)
        try:
            status, body = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:  # no answer, or one that could not be read: it may have executed
            raise (_transport_error(exc, "start") or HostError("INTERNAL", f"start: {exc!r}")) from exc
        started = _start_answer(status, body)
        if instance_id is not None and started != instance_id:
            # The host routed the URL to a start of another instance: ours surely was not created.
            raise HostError(
                "INVALID_ARGUMENT", f"start: the host started instance {started!r}, not {instance_id!r} (URL misread)"
            )
        return started

    # -- the Transport a starter sends through (strict_singleton.transport) --------

    bounds_calls = True  # every call below is cut at ``timeout`` by asyncio

    def prepare(self, call: StartCall, *, backend: str) -> StartCall:
        """Nothing to build before the lease: the host serializes the input itself."""
        return call

    async def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> OrchestrationState | None:
        return await self.get_orchestration_state(instance_id, fetch_payloads=payloads, timeout=timeout)

    async def schedule(self, call: StartCall, tags: dict[str, str], *, timeout: float | None) -> str:
        """The host's start API takes no tags: the fencing and request-ID tags are not sent."""
        return await self.schedule_new_orchestration(
            call.orchestrator, input=call.input, instance_id=call.instance_id, version=call.version, timeout=timeout
        )

    async def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> None:
        await self.terminate_orchestration(instance_id, output=reason, timeout=timeout)

    async def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> None:
        await self.raise_orchestration_event(instance_id, event_name, data=data, timeout=timeout)

    async def _post_start(self, name: str, instance_id: str | None, input: Any, version: str | None) -> tuple[int, Any]:
        """``start_new``'s own request (its URL, body and headers), answered with the status
        code: the public method folds every error into a bare ``Exception``, and only the
        status tells a request that surely did nothing (400) from one that may have (500)."""
        client = self.client
        url = client._get_start_new_url(instance_id=instance_id, orchestration_function_name=name, version=version)
        trace_parent, trace_state = df.DurableOrchestrationClient._get_current_activity_context()
        response = await client._post_async_request(
            url, client._get_json_input(input), trace_parent, trace_state, client._function_invocation_id
        )
        return int(response[0]), response[1]

    async def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any = None, timeout: float | None = None
    ) -> None:
        _for_url(instance_id, _INSTANCE_ID, "raise event")
        _for_url(event_name, _EVENT, "raise event")
        forget_stale_session()
        call = self.client.raise_event(instance_id, event_name, data)
        try:
            await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise _classify_message(exc, "raise event") from exc

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, timeout: float | None = None
    ) -> None:
        _for_url(instance_id, _INSTANCE_ID, "terminate")
        forget_stale_session()
        # The reason goes into the query quote()-d by the client: any text comes back exactly.
        call = self.client.terminate(instance_id, str(output or "terminated by strict-singleton"))
        try:
            await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise _classify_message(exc, "terminate") from exc
