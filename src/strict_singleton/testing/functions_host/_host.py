"""The stand-in host: the Durable Functions host's HTTP API over a real Durable backend."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

import grpc
from aiohttp import web
from durabletask.client import OrchestrationState, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton.testing.backend import DurableTestBackend
from strict_singleton.testing.functions_host._routing import (
    RPC_PREFIX,
    WEBHOOK_PREFIX,
    _url_encode,
    host_route_segments,
    route,
)

Profile = Literal["reject", "anystate", "racy"]


T = TypeVar("T")


PROFILES: tuple[Profile, ...] = ("reject", "anystate", "racy")


DEFAULT_RACY_DELAY = 0.02


DEFAULT_TASK_HUB = "TestHubName"


CONNECTION_NAME = "Storage"  # what the real host names the default connection in its URLs


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
