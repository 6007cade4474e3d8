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

import asyncio
import importlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote_plus, unquote, unquote_plus

import grpc
from aiohttp import web
from durabletask.client import OrchestrationState, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton.testing.backend import DurableTestBackend

T = TypeVar("T")

Profile = Literal["reject", "anystate", "racy"]
PROFILES: tuple[Profile, ...] = ("reject", "anystate", "racy")
DEFAULT_RACY_DELAY = 0.02
DEFAULT_TASK_HUB = "TestHubName"
CONNECTION_NAME = "Storage"  # what the real host names the default connection in its URLs

RPC_PREFIX = "/durabletask"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"

_RUNTIME_STATUS = {
    pb.ORCHESTRATION_STATUS_RUNNING: "Running",
    pb.ORCHESTRATION_STATUS_COMPLETED: "Completed",
    pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW: "ContinuedAsNew",
    pb.ORCHESTRATION_STATUS_FAILED: "Failed",
    pb.ORCHESTRATION_STATUS_CANCELED: "Canceled",
    pb.ORCHESTRATION_STATUS_TERMINATED: "Terminated",
    pb.ORCHESTRATION_STATUS_PENDING: "Pending",
    pb.ORCHESTRATION_STATUS_SUSPENDED: "Suspended",
}
ACTIVE_STATUSES = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})

_NON_RUNNING = pb.OrchestrationIdReusePolicy(
    replaceableStatus=[
        pb.ORCHESTRATION_STATUS_COMPLETED,
        pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_TERMINATED,
        pb.ORCHESTRATION_STATUS_CANCELED,
    ]
)
_ANY_STATE = pb.OrchestrationIdReusePolicy(replaceableStatus=list(_RUNTIME_STATUS))

_LOG = logging.getLogger(__name__)
_STACK = "   at strict_singleton.testing.functions_host (stand-in: no .NET stack trace)"


@dataclass(frozen=True)
class HostCounts:
    """What the host did, per instance ID (a snapshot; see :attr:`FunctionsHost.counts`)."""

    created: Counter[str] = field(default_factory=Counter)  # instances created or replaced
    accepted: Counter[str] = field(default_factory=Counter)  # starts answered 202
    rejected: Counter[str] = field(default_factory=Counter)  # starts answered 500 "already exists"
    unknown_function: Counter[str] = field(default_factory=Counter)  # starts answered 400

    @property
    def total_created(self) -> int:
        return sum(self.created.values())

    @property
    def total_accepted(self) -> int:
        return sum(self.accepted.values())

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


class _Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = HostCounts()

    def add(self, kind: str, instance_id: str) -> None:
        with self._lock:
            getattr(self._snap, kind)[instance_id] += 1

    def snapshot(self) -> HostCounts:
        with self._lock:
            s = self._snap
            return HostCounts(Counter(s.created), Counter(s.accepted), Counter(s.rejected), Counter(s.unknown_function))

    def reset(self) -> None:
        with self._lock:
            self._snap = HostCounts()


def _error_body(message: str, exception_message: str, exception_type: str) -> dict[str, str]:
    """The body ASP.NET Web API's ``CreateErrorResponse(status, message, exception)`` sends."""
    return {
        "Message": message,
        "ExceptionMessage": exception_message,
        "ExceptionType": exception_type,
        "StackTrace": _STACK,
    }


def _host_time(value: datetime) -> str:
    """``DateTime.ToString("s") + "Z"``: ISO-8601, truncated to the second (the real host's format)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class FunctionsHost:
    """An aiohttp stand-in for the Functions host's Durable HTTP API (see the module docstring).

    ``backend``: a started :class:`~strict_singleton.testing.DurableTestBackend` to serve (not
    stopped by the host); when None the host starts its own (``atomic``) and stops it in
    :meth:`stop`. ``known_functions``: orchestrator names a start may use (None: any).
    """

    def __init__(
        self,
        backend: DurableTestBackend | None = None,
        *,
        profile: Profile = "reject",
        known_functions: Iterable[str] | None = None,
        task_hub: str = DEFAULT_TASK_HUB,
        racy_window: Callable[[str], None] | None = None,
        racy_delay: float = DEFAULT_RACY_DELAY,
        max_workers: int = 64,
        duplicate_status: int = 500,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
        if backend is not None and backend.profile == "overwrite":
            raise ValueError("the backend must honour reuse policies: use its 'atomic' or 'eventual' profile")
        self.profile: Profile = profile
        self.known_functions: frozenset[str] | None = None if known_functions is None else frozenset(known_functions)
        self.task_hub = task_hub
        self.racy_window = racy_window
        self.racy_delay = racy_delay
        self.duplicate_status = duplicate_status  # what a duplicate start is answered: 500 (1.x-era hosts) or 409
        self._backend = backend
        self._owns_backend = backend is None
        self._max_workers = max_workers
        self._counts = _Counts()
        self._answers: list[tuple[str, str, int]] = []
        self._answers_lock = threading.Lock()
        self._grpc: TaskHubGrpcClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- addresses --------------------------------------------------------------

    @property
    def backend(self) -> DurableTestBackend:
        if self._backend is None:
            raise RuntimeError("the host is not started")
        return self._backend

    @property
    def grpc_address(self) -> str:
        """``127.0.0.1:port`` of the backend's gRPC server."""
        return self.backend.address

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the host is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_base_url(self) -> str:
        """What the binding's ``rpcBaseUrl`` holds (ends with ``/``, as the real one)."""
        return f"{self.base_url}{RPC_PREFIX}/"

    @property
    def webhook_base_url(self) -> str:
        """What the binding's ``baseUrl`` holds (no trailing ``/``, as the real one)."""
        return f"{self.base_url}{WEBHOOK_PREFIX}"

    # -- counts -----------------------------------------------------------------

    @property
    def counts(self) -> HostCounts:
        return self._counts.snapshot()

    def reset_counts(self) -> None:
        self._counts.reset()
        with self._answers_lock:
            self._answers.clear()

    @property
    def answers(self) -> list[tuple[str, str, int]]:
        """Every request answered so far, in order: (method, raw path with query, status code).
        A test asserts on what the host answered, not on how a client words the error it raises."""
        with self._answers_lock:
            return list(self._answers)

    @web.middleware
    async def _record_answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._note(request, exc.status)
            raise
        self._note(request, response.status)
        return response

    def _note(self, request: web.Request, status: int) -> None:
        with self._answers_lock:
            self._answers.append((request.method, request.raw_path, status))

    # -- life cycle -------------------------------------------------------------

    def start(self) -> FunctionsHost:
        if self._thread is not None:
            raise RuntimeError("the host is already started")
        try:
            if self._backend is None:
                self._backend = DurableTestBackend()
                self._backend.start()
            self._grpc = TaskHubGrpcClient(host_address=self._backend.address, logger=_LOG)
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="functions-host")
            loop = asyncio.new_event_loop()
            self._loop = loop
            ready = threading.Event()
            failed: list[BaseException] = []
            self._thread = threading.Thread(
                target=self._serve, args=(loop, ready, failed), name="functions-host", daemon=True
            )
            self._thread.start()
            if not ready.wait(30):
                raise RuntimeError("the Functions host stand-in did not start within 30 s")
            if failed:
                raise RuntimeError("the Functions host stand-in failed to start") from failed[0]
        except BaseException:
            self.stop()
            raise
        return self

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failed: list[BaseException]) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:
                failed.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            try:
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._record_answer])
        # One handler for every request: it routes the raw path as the real host does
        # (host_route_segments, then route), not as aiohttp's router would.
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(runner.addresses[0][1])

    def stop(self) -> None:
        """Stop serving (idempotent). Requests still blocked in a ``racy_window`` hook are cut off
        after one second; the hook's thread itself must return on its own (give hooks timeouts)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
        self._thread = None
        self._loop = None
        self._runner = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._grpc is not None:
            self._grpc.close()
            self._grpc = None
        if self._owns_backend and self._backend is not None:
            self._backend.stop(grace=0)
            self._backend = None
        self._port = None

    def __enter__(self) -> FunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- gRPC side (runs in the worker pool) --------------------------------------

    def _client(self) -> TaskHubGrpcClient:
        if self._grpc is None:
            raise RuntimeError("the host is stopped")
        return self._grpc

    def _state(self, instance_id: str) -> OrchestrationState | None:
        return self._client().get_orchestration_state(instance_id, fetch_payloads=True)

    @staticmethod
    def _status_name(state: OrchestrationState) -> str:
        return _RUNTIME_STATUS.get(state.runtime_status.value, "Unknown")

    def _create(self, name: str, instance_id: str, value: Any, version: str | None, policy: Any) -> None:
        self._client().schedule_new_orchestration(
            name, input=value, instance_id=instance_id, reuse_id_policy=policy, version=version
        )

    def _already_exists(self, instance_id: str, status: str | None) -> tuple[int, Any]:
        if status is None or status not in ACTIVE_STATUSES:
            state = self._state(instance_id)
            status = self._status_name(state) if state is not None else None
            if status not in ACTIVE_STATUSES:  # finished or gone since: name what was refused
                status = "Running"
        self._counts.add("rejected", instance_id)
        return self.duplicate_status, _error_body(
            "Something went wrong while processing your request",
            f"An Orchestration instance with the status {status} already exists.",
            "System.InvalidOperationException",
        )

    def _start(self, name: str, instance_id: str, value: Any, version: str | None) -> tuple[int, Any]:
        if self.known_functions is not None and name not in self.known_functions:
            self._counts.add("unknown_function", instance_id)
            known = "', '".join(sorted(self.known_functions))
            info = (
                f"The following are the known orchestrator functions: '{known}'."
                if self.known_functions
                else "No orchestrator functions are currently registered!"
            )
            return 400, _error_body(
                "One or more of the arguments submitted is incorrect",
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                f"Additional info: {info}",
                "System.ArgumentException",
            )
        if self.profile == "reject":
            try:
                self._create(name, instance_id, value, version, _NON_RUNNING)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                return self._already_exists(instance_id, None)
        else:
            if self.profile == "racy":
                state = self._state(instance_id)
                if state is not None and self._status_name(state) in ACTIVE_STATUSES:
                    return self._already_exists(instance_id, self._status_name(state))
                if self.racy_window is not None:
                    self.racy_window(instance_id)
                elif self.racy_delay > 0:
                    time.sleep(self.racy_delay)
            self._create(name, instance_id, value, version, _ANY_STATE)
        self._counts.add("created", instance_id)
        self._counts.add("accepted", instance_id)
        return 202, None

    def _status_payload(self, state: OrchestrationState, show_input: bool) -> dict[str, Any]:
        status = self._status_name(state)
        output = _loads(state.serialized_output)
        if status == "Failed" and state.failure_details is not None:
            output = state.failure_details.message
        return {
            "name": state.name,
            "instanceId": state.instance_id,
            "runtimeStatus": status,
            "input": _loads(state.serialized_input) if show_input else None,
            "customStatus": _loads(state.serialized_custom_status),
            "output": output,
            "createdTime": _host_time(state.created_at),
            "lastUpdatedTime": _host_time(state.last_updated_at),
        }

    # -- HTTP side (runs on the host's event loop) --------------------------------

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @staticmethod
    def _internal_error(exc: BaseException) -> web.Response:
        body = _error_body("Something went wrong while processing your request", str(exc), type(exc).__name__)
        return web.json_response(body, status=500)

    def management_urls(self, instance_id: str, *, task_hub: str | None = None) -> dict[str, str]:
        """The check-status payload for ``instance_id`` (the real host's ``HttpManagementPayload``)."""
        prefix = f"{self.webhook_base_url}/instances/{_url_encode(instance_id)}"
        hub = _url_encode(task_hub if task_hub is not None else self.task_hub)
        query = f"taskHub={hub}&connection={_url_encode(CONNECTION_NAME)}"
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{query}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{prefix}?{query}",
            "restartPostUri": f"{prefix}/restart?{query}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{query}",
        }

    @staticmethod
    async def _handle_not_implemented(request: web.Request) -> web.Response:
        # JSON, so the 1.x client (which parses every body as JSON) reports the status code.
        message = (
            f"{request.method} {request.raw_path} is not implemented by the strict-singleton Functions host stand-in"
        )
        return web.json_response({"Message": message}, status=501)

    async def _dispatch(self, request: web.Request) -> web.Response:
        """Route ``request`` as the real host's ``HttpApiHandler`` does (see :func:`route`)."""
        segments = host_route_segments(request.raw_path)
        matched = route(request.method, segments) if segments is not None else None
        if matched is None:
            return web.Response(status=404)  # the real host's request.CreateResponse(NotFound): no body
        action, values = matched
        if action == "start":
            return await self._handle_start(request, values[0], values[1])
        if action == "status":
            return await self._handle_status(request, values[0])
        if action == "terminate":
            return await self._handle_terminate(request, values[0])
        if action == "raise_event":
            return await self._handle_raise_event(request, values[0], values[1])
        return await self._handle_not_implemented(request)

    async def _handle_start(self, request: web.Request, name: str, instance_id: str) -> web.Response:
        instance_id = instance_id or uuid.uuid4().hex  # the host's Guid.NewGuid().ToString("N")
        raw = await request.read()
        try:
            value = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            return web.json_response(
                _error_body("Invalid JSON content", str(exc), "Newtonsoft.Json.JsonReaderException"), status=400
            )
        try:
            status, body = await self._off_loop(self._start, name, instance_id, value, request.query.get("version"))
        except Exception as exc:
            return self._internal_error(exc)
        if status != 202:
            return web.json_response(body, status=status)
        payload = self.management_urls(instance_id)
        return web.json_response(
            payload, status=202, headers={"Location": payload["statusQueryGetUri"], "Retry-After": "10"}
        )

    async def _handle_status(self, request: web.Request, instance_id: str) -> web.Response:
        try:
            state = await self._off_loop(self._state, instance_id)
        except Exception as exc:
            return self._internal_error(exc)
        if state is None:
            return web.Response(status=404)
        show_input = request.query.get("showInput", "true").lower() != "false"
        payload = self._status_payload(state, show_input)
        runtime_status = payload["runtimeStatus"]
        headers: dict[str, str] = {}
        if runtime_status in ACTIVE_STATUSES:
            code = 202
            headers = {"Location": str(request.url), "Retry-After": "5"}
        elif runtime_status == "Failed":
            fail_500 = request.query.get("returnInternalServerErrorOnFailure", "false").lower() == "true"
            code = 500 if fail_500 else 200
        elif runtime_status in TERMINAL_STATUSES:
            code = 200
        else:
            code = 500
        return web.json_response(payload, status=code, headers=headers)

    async def _handle_terminate(self, request: web.Request, instance_id: str) -> web.Response:
        reason = request.query.get("reason")

        def terminate() -> int:
            state = self._state(instance_id)
            if state is None:
                return 404
            if self._status_name(state) in TERMINAL_STATUSES:
                return 410
            self._client().terminate_orchestration(instance_id, output=reason, recursive=False)
            return 202

        try:
            return web.Response(status=await self._off_loop(terminate))
        except Exception as exc:
            return self._internal_error(exc)

    async def _handle_raise_event(self, request: web.Request, instance_id: str, event: str) -> web.Response:
        raw = await request.read()
        json_content = request.content_type.lower() == "application/json"

        def raise_event() -> tuple[int, Any]:
            state = self._state(instance_id)
            if state is None:
                return 404, None
            if self._status_name(state) in TERMINAL_STATUSES:
                return 410, None
            if not json_content:
                return 400, {"Message": "Only application/json request content is supported"}
            try:
                data = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                return 400, _error_body("Invalid JSON content", str(exc), "Newtonsoft.Json.JsonReaderException")
            self._client().raise_orchestration_event(instance_id, event, data=data)
            return 202, None

        try:
            status, body = await self._off_loop(raise_event)
        except Exception as exc:
            return self._internal_error(exc)
        return web.Response(status=status) if body is None else web.json_response(body, status=status)


# -- routing, as the real host does it ----------------------------------------------------------------
#
# The Durable extension's HttpApiHandler (Azure/azure-functions-durable-extension,
# src/WebJobs.Extensions.DurableTask/HttpApiHandler.cs, HandleRequestAsync) routes
#     "/" + WebUtility.UrlDecode(request.RequestUri.AbsolutePath).Substring(basePath.Length).Trim('/')
# through TemplateMatchers, in this order: orchestrators/{functionName}/{instanceId?},
# entities/{entityName?}/{entityKey?}, instances/{instanceId?}/{operation?},
# instances/{instanceId?}/raiseEvent/{eventName}, makeprimary; anything else is a 404 without a
# body. Before that, Kestrel decodes the request target's path (every %XX but %2F) and removes
# "." and ".." segments, and the query ("?") and fragment ("#") are not part of AbsolutePath.
# UrlDecode then decodes what is left (%2F too, so it splits a segment) and reads "+" as a space.


def _url_encode(text: str) -> str:
    """``WebUtility.UrlEncode``: space as ``+``, everything but letters, digits and ``-_.!*()`` as %XX."""
    return quote_plus(text, safe="-_.!*()")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path (what Kestrel's path normalisation does)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def host_route_segments(raw_target: str) -> list[str] | None:
    """The path segments the real host routes for a raw request target (path and query as sent),
    below the RPC or webhook base path; None outside both (the real host never sees such a path).

    The path ends at ``?`` or ``#``; Kestrel decodes %XX except %2F and removes dot segments;
    ``WebUtility.UrlDecode`` decodes the rest (%2F becomes ``/``) with ``+`` as a space; the
    base path is cut off and ``/`` trimmed at both ends before splitting.
    """
    path = raw_target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    pieces = [unquote(piece) for piece in path.replace("%2f", "%2F").split("%2F")]
    path = _remove_dot_segments("%2F".join(pieces))
    decoded = unquote_plus(path)
    for prefix in (RPC_PREFIX, WEBHOOK_PREFIX):
        if decoded.lower() == prefix or decoded.lower().startswith(prefix + "/"):
            rest = decoded[len(prefix) :].strip("/")
            return rest.split("/") if rest else []
    return None


# Operations the real host serves on instances/{instanceId}/{operation} that the stand-in does not.
_UNIMPLEMENTED_OPERATIONS = frozenset({"rewind", "restart", "suspend", "resume"})


def route(method: str, segments: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """What the real host does with ``method`` on ``segments``: ``("start", (function, id))`` (id
    ``""``: the host makes one), ``("status", (id,))``, ``("terminate", (id,))``,
    ``("raise_event", (id, event))``, ``("not_implemented", ())`` for a route the real host serves
    and the stand-in does not, or None for the real host's 404. Literal segments and operations
    match case-insensitively, as ASP.NET routing and the handler's OrdinalIgnoreCase compare them.
    """
    n = len(segments)
    head = segments[0].lower() if segments else ""
    post = method == "POST"
    if head == "orchestrators" and n in (2, 3) and segments[1]:
        return ("start", (segments[1], segments[2] if n == 3 else "")) if post else None
    if head == "entities" and n <= 3:  # read, list, signal (POST) and delete entities
        return ("not_implemented", ()) if method in ("GET", "POST", "DELETE") else None
    if head == "instances" and n <= 3:
        instance_id = segments[1] if n >= 2 and segments[1] else None
        operation = segments[2].lower() if n == 3 and segments[2] else None
        if instance_id is None:  # list or purge by filters
            return ("not_implemented", ()) if method in ("GET", "DELETE") else None
        if operation is None:
            if method == "GET":
                return "status", (instance_id,)
            return ("not_implemented", ()) if method == "DELETE" else None
        if post and operation == "terminate":
            return "terminate", (instance_id,)
        if post and operation in _UNIMPLEMENTED_OPERATIONS:
            return "not_implemented", ()
        return None
    if head == "instances" and n == 4 and segments[2].lower() == "raiseevent" and segments[1] and segments[3]:
        return ("raise_event", (segments[1], segments[3])) if post else None
    if head == "makeprimary" and n == 1:
        return "not_implemented", ()
    return None


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
    ``host_address``. Written from that package's source: it was not installable here, so this
    JSON is checked only by giving its ``rpcBaseUrl`` to a ``TaskHubGrpcClient`` the same way.
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


# -- the 1.x client's global aiohttp session -------------------------------------

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
