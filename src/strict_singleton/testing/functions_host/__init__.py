"""A small Azure Functions host stand-in: the HTTP API the Durable Functions 1.x Python client calls.

The ``azure-functions-durable`` 1.x client (``azure.durable_functions.DurableOrchestrationClient``)
never talks to a Durable backend itself: it is built from the ``starter`` binding JSON the
Functions host passes to the HTTP trigger, and sends every call over HTTP (one module-global
aiohttp session) to the host's loopback ``rpcBaseUrl`` (``http://127.0.0.1:17071/durabletask/``
on a real host). :class:`FunctionsHost` is an aiohttp server, in a thread of its own with its own
event loop on a free 127.0.0.1 port, that serves the part of that API the client's start, status,
terminate and raise-event calls use, over the in-memory Durable backend
(:class:`~strict_singleton.testing.DurableTestBackend`) through a real durabletask gRPC client:

* ``POST {rpc}orchestrators/{name}[/{id}]``: start. 202 with the check-status payload (``id``,
  ``statusQueryGetUri``, ``sendEventPostUri``, ``terminatePostUri``, ``purgeHistoryDeleteUri``,
  ``restartPostUri``, ``suspendPostUri``, ``resumePostUri``), a ``Location`` header and
  ``Retry-After: 10``; 400 (``ArgumentException``-style JSON) for a name outside
  ``known_functions``; 500 with ``{"Message": "Something went wrong while processing your
  request", "ExceptionMessage": "An Orchestration instance with the status Running already
  exists.", "ExceptionType": "System.InvalidOperationException", "StackTrace": ...}`` when a
  duplicate is rejected. Without an ID the host makes one (``uuid4().hex``).
* ``GET {rpc}instances/{id}``: status. 404 with an empty body when missing; else the host's
  status JSON (``name``, ``instanceId``, ``runtimeStatus``, ``input``, ``customStatus``, ``output``,
  ``createdTime``, ``lastUpdatedTime``; times as ``2024-01-02T03:04:05Z``, truncated to the
  second as the real host formats them), 202 (with ``Location`` and ``Retry-After: 5``) for
  Pending/Running/ContinuedAsNew/Suspended, 200 for Completed/Failed/Terminated/Canceled (500
  for Failed with ``returnInternalServerErrorOnFailure=true``). ``showInput=false`` drops the
  input.
* ``POST {rpc}instances/{id}/terminate?reason=...``: 404 missing, 410 already terminal, else 202
  (the reason becomes the terminated instance's output).
* ``POST {rpc}instances/{id}/raiseEvent/{event}``: 404 missing, 410 terminal, 400 unless
  ``Content-Type: application/json`` (or invalid JSON), else 202.

The same routes are also served under the webhook base (``/runtime/webhooks/durabletask/``), so
the ``statusQueryGetUri`` and other URLs in the check-status payload work too (the instance ID,
task hub and connection in them ``WebUtility.UrlEncode``-d, as the real host writes them).

Routing, as the real host's ``HttpApiHandler`` does it (:func:`host_route_segments`, :func:`route`),
not as aiohttp's router would: the path ends at ``?`` (the query) or ``#``; %XX other than %2F is
decoded and ``.``/``..`` segments are removed (Kestrel; ``%2e%2e`` is a dot segment too); then
the whole path is URL-decoded once more (``WebUtility.UrlDecode``: %2F becomes ``/`` and splits a
segment, ``+`` is a space), ``/`` is trimmed at both ends, and the routes are matched in the real
host's order with literal segments and operations case-insensitive. A path no route matches gets
the real host's 404 with no body (the 1.x client reads a 404 on raise-event or terminate as "no
instance"); a route the real host serves and the stand-in does not gets 501 (below). So a crafted
name moves a request exactly where it would move it on a real host: ``raiseEvent/%2E%2E/terminate``
terminates, ``orchestrators/orch/a%2Fb`` is a 404, ``orchestrators/orch/a+b`` starts ``a b``.

Payloads, as the real host treats them: the body's JSON value is the orchestration input (or
the event's data). The 1.x client serialises the input itself and aiohttp encodes that string
again, so the body is a JSON *string* holding JSON text; the input is then that string, and the
status ``input`` shows the JSON text, as the real host's does. Status ``output`` of a Failed
instance is its failure message.

Profiles (``profile=``), after host.json ``overridableExistingInstanceStates`` and the storage
provider:

* ``reject``: ``NonRunningStates`` (the default), atomic. The start goes to the backend with a
  reuse policy that lists only terminal statuses (Completed, Failed, Terminated, Canceled) as
  replaceable, so the backend itself, under its own lock, rejects a start on a Pending, Running,
  Suspended or ContinuedAsNew instance (gRPC ALREADY_EXISTS, answered as the 500 above; the status
  named in the message is read after the rejection) and replaces a terminal one.
* ``anystate``: ``AnyState``. The start is sent with a reuse policy listing *every* status as
  replaceable: the backend deletes whatever instance has the ID and creates the new one, in one
  step under its lock (terminate-and-replace without running the old instance's termination:
  the old instance simply disappears, as an overwritten Azure Storage instance's history does).
  Every start gets 202.
* ``racy``: ``NonRunningStates`` on the Azure Storage provider, whose check is not atomic: read
  the status (gRPC ``GetInstance``); reject with the 500 if it is active; else a *window*; then
  create allowing overwrite (as ``anystate``). Two starts whose reads both precede both creates
  both get 202 and the instance is created twice: the first start is lost. The window is
  ``racy_window(instance_id)`` when given (called in the request's worker thread, so a test can
  block it on a :class:`threading.Event` or :class:`threading.Barrier`, with a timeout), else a
  ``racy_delay``-second sleep (default 0.02 s).

The backend must honour reuse policies: the ``atomic`` or ``eventual`` profiles of
:class:`~strict_singleton.testing.DurableTestBackend` (``overwrite`` replaces whatever the policy
says, so it is refused).

Counts: :attr:`FunctionsHost.counts` is a snapshot (:class:`HostCounts`), per instance ID, of the
instances created (every successful create or replace), the starts accepted (202), the starts
rejected as duplicates (500) and the starts refused for an unknown function name (400). It counts
what went through this host's HTTP API only; the backend's own ledger counts every start.

The 1.x client's aiohttp session and event loops: ``azure.durable_functions.models.utils.http_utils``
keeps one module-global ``ClientSession``, created on first use and bound to the event loop running
then, and replaced only once it is ``closed`` (the package closes it only after a connection error).
A second ``asyncio.run`` in the same process reuses the session of the closed loop and fails with
``RuntimeError: Event loop is closed`` (aiohttp schedules its timeout on the session's loop). Call
:func:`close_client_session` (``await``) at the end of each event loop that used the client, or
:func:`reset_client_session` between loops; :func:`run` does both around one coroutine. Both also
replace the module-global ``asyncio.Lock``, as a precaution (in 1.7.0 nothing awaits while holding
it, so it is never contended and never bound to a loop).

Not implemented (honestly absent, not faked): authentication (no ``code`` key is checked or
issued: ``requiredQueryStringParameters`` is empty), ``taskHub``/``connection`` query parameters
(ignored: one task hub), entity APIs (``entities/...``, ``signal_entity``, ``read_entity_state``),
purge (DELETE), rewind, restart, suspend and resume, listing and querying instances
(``GET instances/`` with filters, ``get_status_all``/``get_status_by``), ``showHistory``
(no ``historyEvents``), the create-and-wait URI (``timeout``/``pollingInterval`` are ignored:
start always answers 202 at once), scheduled starts and tags (the 1.x path has neither), the
``Canceled`` status (the in-memory backend never produces it), and the gRPC protocol the
``durabletask-azurefunctions`` client speaks to the host (:func:`grpc_binding_json` points that
client straight at the backend's gRPC port instead). Those of these routes the real host serves
answer 501 with a JSON ``Message`` (so the 1.x client reports "unexpected status code 501");
paths no route of the real host matches answer its 404. No orchestrations run unless a worker is
connected to the backend (``durabletask.worker.TaskHubGrpcWorker``); without one, instances stay
Pending and terminate/raise-event are only queued.
"""

from __future__ import annotations

from strict_singleton.testing.functions_host._client_side import (
    binding_json,
    close_client_session,
    grpc_binding_json,
    reset_client_session,
    run,
)
from strict_singleton.testing.functions_host._host import (
    PROFILES,
    FunctionsHost,
    HostCounts,
    Profile,
)
from strict_singleton.testing.functions_host._routing import RPC_PREFIX, host_route_segments, route

__all__ = [
    "PROFILES",
    "RPC_PREFIX",
    "Profile",
    "FunctionsHost",
    "HostCounts",
    "binding_json",
    "close_client_session",
    "grpc_binding_json",
    "host_route_segments",
    "reset_client_session",
    "route",
    "run",
]
