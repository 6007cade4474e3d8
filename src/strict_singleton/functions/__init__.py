r"""Durable Functions for Python (``azure-functions-durable`` 1.x): the docs' singleton HTTP trigger, strict.

The singleton article's Python example reads the instance's status with the binding's
``DurableOrchestrationClient`` and starts a new instance if there is none (or it finished):
two invocations can both start, and one start is lost or a running instance replaced.
:class:`DurableFunctionsStarter` runs this library's start algorithm (the same flow as
:class:`~strict_singleton.AsyncSingletonStarter`, not a copy) over that client::

    import azure.durable_functions as df
    import azure.functions as func
    from strict_singleton.functions import DurableFunctionsStarter

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="orchestrators/{functionName}/{instanceId}")
    @app.durable_client_input(client_name="client")
    async def http_start_single(req: func.HttpRequest, client: df.DurableOrchestrationClient):
        starter = DurableFunctionsStarter(client)  # the lock: AzureWebJobsStorage's Blob service
        result = await starter.start(req.route_params["functionName"], instance_id=req.route_params["instanceId"],
                                     input=req.get_body() or None)
        return starter.http_response(req, result)

Guarantees and outcomes are those of the async starter (``docs/guarantees.md``), with what
this path cannot do:

* **No tags**: the host's HTTP API has none, so the fencing token is not written on the
  instance (``result.fencing_token`` is still returned); request IDs (``request_id=``) are
  kept in the lock store only.
* **No deadline in the client**: the schedule call is cut by the lease's send-by time with
  ``asyncio`` (a cut call is ambiguous: the host may still create the instance, which the
  starter then watches for, as after a gRPC deadline).
* **One-second ``createdTime``**: handled as on every backend (``clock_skew`` covers it; see
  the Functions row of the evidence table in ``docs/guarantees.md``).
* **The host's own duplicate check** (``overridableExistingInstanceStates``) is the second
  line of defence: with ``NonRunningStates`` a duplicate that gets past the lease is rejected
  with HTTP 500 "... already exists", which this module reads as ALREADY_RUNNING; with
  ``AnyState`` (or the Azure Storage provider's non-atomic check) only the lease protects.

Every value the 1.x client writes into a URL unescaped is checked before any lease or host
request (:class:`~strict_singleton.InvalidArgumentError`, the message says what is allowed): the
client formats instance IDs, orchestrator (function) names and event names straight into the
path, where ``?`` would start the query, ``#`` end the URL, ``/`` add a segment and ``..`` remove
one, and the host URL-decodes the whole path (``%2F`` is ``/`` again, ``+`` a space) before
routing: ``start("orch?", instance_id="nightly")`` would start a random-ID instance, and the event
name ``../terminate`` terminate the instance. The rules:

* instance IDs: 1 to 100 characters, none of ``/ \ # ? % +``, not ``.`` or ``..``, no leading
  ``@`` (entity IDs), no control characters or surrounding whitespace;
* function names: the Functions host's own rule, ``^[A-Za-z][A-Za-z0-9_-]{0,127}$`` and not
  ``host`` (no function can have another name, so nothing valid is refused);
* event names: as instance IDs (any other character, spaces and non-ASCII letters included,
  reaches the orchestration as written), at most 256 characters, ``@`` allowed.

The version and the terminate reason go into the query ``quote``-d by the client and come back
exactly; the task hub and connection name come from the binding, not from the caller.
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401
    import azure.durable_functions
    import azure.functions  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from strict_singleton._extras import missing_extra_message

    raise ImportError(missing_extra_message("strict_singleton.functions", "functions", exc)) from exc

from strict_singleton.functions._client import FunctionsClient
from strict_singleton.functions._errors import HostError
from strict_singleton.functions._locks import default_lock, shared_lock
from strict_singleton.functions._starter import DurableFunctionsStarter
from strict_singleton.functions._urls import (
    MAX_FUNCTIONS_EVENT_NAME_LENGTH,
    MAX_FUNCTIONS_INSTANCE_ID_LENGTH,
    MAX_FUNCTIONS_NAME_LENGTH,
    validate_functions_event_name,
    validate_functions_instance_id,
    validate_functions_name,
)

__all__ = [
    "MAX_FUNCTIONS_EVENT_NAME_LENGTH",
    "MAX_FUNCTIONS_INSTANCE_ID_LENGTH",
    "MAX_FUNCTIONS_NAME_LENGTH",
    "DurableFunctionsStarter",
    "FunctionsClient",
    "HostError",
    "default_lock",
    "shared_lock",
    "validate_functions_event_name",
    "validate_functions_instance_id",
    "validate_functions_name",
]
