"""Durable backend profiles for race tests, on Microsoft's in-memory backend over real gRPC.

``DurableTestBackend`` subclasses ``durabletask.testing.InMemoryOrchestrationBackend``
(a real gRPC servicer) and counts what actually happened in the backend, per
instance ID, in a :class:`BackendLedger`:

* ``atomic``: as shipped: a duplicate instance ID is rejected with ALREADY_EXISTS
  unless the request's reuse policy lists the existing status as replaceable.
* ``overwrite``: a start on an existing ID replaces it whatever its status, as hosts
  configured to override existing instances do. Each *active* instance replaced is a
  lost start. The lock is then the only protection.
* ``eventual``: like ``atomic``, but a new instance becomes visible to status reads only
  ``visibility_delay`` seconds after it was created (default 0.05 s); until then reads
  show what was there before (nothing, or the replaced instance), as on hosts whose
  status index lags. ``visibility_delay`` can be set on any profile.
* ``latency``: seconds added to every unary gRPC call the backend serves: status
  reads, starts and every other client or worker call (not the worker's long-lived
  work-item stream), as a round trip to a remote backend would. It is a sleep in the
  server thread serving the call, before the call's own hooks and work: no CPU is
  burned, and the server has ``max_workers`` threads (default 256, made as needed)
  so that stalls overlap.

Every call served is counted in :attr:`DurableTestBackend.calls` (a :class:`BackendCalls`),
per gRPC method and per the instance ID the request names: counted on the server, so
a client's own retries, background reads and every other round trip show up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.testing import InMemoryOrchestrationBackend

from strict_singleton.testing._process import free_port

Profile = Literal["atomic", "overwrite", "eventual"]
PROFILES: tuple[Profile, ...] = ("atomic", "overwrite", "eventual")
DEFAULT_EVENTUAL_DELAY = 0.05


@dataclass
class LedgerSnapshot:
    created: Counter[str] = field(default_factory=Counter)
    overwritten_active: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    tags: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def total_created(self) -> int:
        return sum(self.created.values())

    @property
    def total_overwritten(self) -> int:
        return sum(self.overwritten_active.values())


class BackendLedger:
    """Thread-safe counts of what the backend did, per instance ID."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = LedgerSnapshot()

    def record_created(self, instance_id: str, *, overwrote_active: bool, tags: dict[str, str]) -> None:
        with self._lock:
            self._snap.created[instance_id] += 1
            self._snap.tags.setdefault(instance_id, []).append(tags)
            if overwrote_active:
                self._snap.overwritten_active[instance_id] += 1

    def record_rejected(self, instance_id: str) -> None:
        with self._lock:
            self._snap.rejected[instance_id] += 1

    def snapshot(self) -> LedgerSnapshot:
        with self._lock:
            s = self._snap
            return LedgerSnapshot(
                created=Counter(s.created),
                overwritten_active=Counter(s.overwritten_active),
                rejected=Counter(s.rejected),
                tags={k: list(v) for k, v in s.tags.items()},
            )

    def clear(self) -> None:
        with self._lock:
            self._snap = LedgerSnapshot()


@dataclass(frozen=True)
class CallCounts:
    """A snapshot of :class:`BackendCalls`: (method, instance ID) -> calls served.

    The instance ID is ``""`` for calls whose request names none (the worker's stream, Hello).
    """

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def by_method(self, where: Callable[[str], bool] | None = None) -> Counter[str]:
        """Calls per method, only for instance IDs ``where`` accepts (all when None)."""
        out: Counter[str] = Counter()
        for (method, instance_id), n in self.counts.items():
            if where is None or where(instance_id):
                out[method] += n
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class BackendCalls:
    """Thread-safe counts of the gRPC calls the backend served, per method and instance ID."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, method: str, instance_id: str = "") -> None:
        with self._lock:
            self._counts[method, instance_id] += 1

    def snapshot(self) -> CallCounts:
        with self._lock:
            return CallCounts(Counter(self._counts))

    def reset(self) -> None:
        with self._lock:
            self._counts = Counter()


class _Served(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped here
    """Counts every call and adds the backend's latency to unary ones, in the serving thread.

    ``intercept_service`` itself runs on the server's single polling thread: it only
    wraps the handler; the sleep happens in the handler, on a pool thread.
    """

    def __init__(self, backend: DurableTestBackend) -> None:
        self._backend = backend

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method = str(details.method).rsplit("/", 1)[-1]
        backend = self._backend
        if handler is None:
            return None
        if handler.unary_unary is None:  # a stream: counted, never delayed
            backend.calls.record(method)
            return handler
        inner = handler.unary_unary

        def served(request: Any, context: grpc.ServicerContext) -> Any:
            backend.calls.record(method, getattr(request, "instanceId", "") or "")
            if backend.latency:
                backend._sleep(backend.latency)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            served, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class DurableTestBackend(InMemoryOrchestrationBackend):
    """The in-memory Durable backend with a race profile, injected latency and a ledger."""

    def __init__(
        self,
        *,
        profile: Profile = "atomic",
        latency: float = 0.0,
        visibility_delay: float | None = None,
        port: int | None = None,
        max_workers: int = 256,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
        super().__init__(port=port if port is not None else free_port())
        self.profile: Profile = profile
        self.latency = latency
        if visibility_delay is None:
            visibility_delay = DEFAULT_EVENTUAL_DELAY if profile == "eventual" else 0.0
        self.visibility_delay = visibility_delay
        # instance ID -> (monotonic time it becomes visible, the response reads give until then)
        self._lagging: dict[str, tuple[float, pb.GetInstanceResponse]] = {}
        self.ledger = BackendLedger()
        self.calls = BackendCalls()
        self._max_workers = max_workers
        self._sleep = sleep
        self.read_hook: Callable[[str], None] | None = None  # called before each status read
        self.start_hook: Callable[[str], None] | None = None  # called before each start is processed

    @property
    def port(self) -> int:
        return int(self._port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> str:
        # As the base class, with more server threads so injected stalls can overlap, and
        # an interceptor that counts every call and injects the latency.
        self._shutdown_event.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="durable-test-backend"),
            interceptors=[_Served(self)],
        )
        self._server = server
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        bound = server.add_insecure_port(f"127.0.0.1:{self._port}")
        if bound == 0:
            raise RuntimeError(f"could not bind the Durable test backend to port {self._port}")
        server.start()
        return self.address

    def __enter__(self) -> DurableTestBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=0)

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        self.ledger.clear()
        self.calls.reset()

    def instance_count(self) -> int:
        with self._lock:
            return len(self._instances)

    def finish_instance(self, instance_id: str, status: int = pb.ORCHESTRATION_STATUS_COMPLETED) -> bool:
        """Mark an instance finished without a worker (for reuse rounds). True if it existed."""
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return False
            now = datetime.now(timezone.utc)
            inst.status = status  # type: ignore[assignment]  # the stubs type enum fields loosely
            inst.completed_at = now
            inst.last_updated_at = now
            self._orchestration_queue_set.discard(instance_id)
            self._lagging.pop(instance_id, None)
            return True

    def status_of(self, instance_id: str) -> int | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return None if inst is None else int(inst.status)

    # -- gRPC methods ----------------------------------------------------------

    def GetInstance(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        if self.read_hook is not None:
            self.read_hook(request.instanceId)
        with self._lock:
            lag = self._lagging.get(request.instanceId)
            if lag is not None:
                if time.monotonic() < lag[0]:
                    return lag[1]
                del self._lagging[request.instanceId]
        return super().GetInstance(request, context)

    def StartInstance(self, request: pb.CreateInstanceRequest, context: grpc.ServicerContext) -> Any:
        if self.start_hook is not None:
            self.start_hook(request.instanceId)
        instance_id = request.instanceId or uuid.uuid4().hex
        if not request.instanceId:
            request.instanceId = instance_id
        with self._lock:  # an RLock: the base method re-enters it
            existing = self._instances.get(instance_id)
            active = existing is not None and not self._is_terminal_status(existing.status)
            if self.visibility_delay > 0:
                before = (
                    self._build_instance_response(existing, True)
                    if existing is not None
                    else pb.GetInstanceResponse(exists=False)
                )
            if self.profile == "overwrite" and existing is not None:
                del self._instances[instance_id]
                self._orchestration_queue_set.discard(instance_id)
            try:
                response = super().StartInstance(request, context)
            except Exception:
                self.ledger.record_rejected(instance_id)
                raise
            if self.visibility_delay > 0:
                self._lagging[instance_id] = (time.monotonic() + self.visibility_delay, before)
            self.ledger.record_created(
                instance_id,
                overwrote_active=active and self.profile == "overwrite",
                tags=dict(request.tags),
            )
            return response


__all__ = [
    "PROFILES",
    "BackendCalls",
    "BackendLedger",
    "CallCounts",
    "DurableTestBackend",
    "LedgerSnapshot",
]
