"""An in-memory world that answers the start flow's operations, on a virtual clock.

The start algorithm (``strict_singleton._flow``) yields self-describing operations;
this module answers them without any I/O, the way h11's tests drive its state machine
with bytes in memory:

* :class:`VirtualClock`: a monotonic clock and a wall clock that only move when told.
* :class:`SimLockStore`: leases per instance ID with TTLs on the virtual clock,
  token-checked extend and release, fencing counters, and faults (a key lost, the
  store unreachable, a wall-clock step that expires everything).
* :class:`SimBackend`: a Durable backend with the ``atomic`` / ``overwrite`` /
  ``eventual`` profiles that records every create and every overwrite of an active
  instance, and can hold a request and execute it later (a request delayed in the
  backend lands after its caller gave up).
* :func:`drive`: runs a flow against a world, with an optional ``intercept`` that
  sees each operation first and may answer it, raise into the flow, or let the world
  answer (return :data:`DEFAULT`).

Used by the flow's unit tests; everything here is deterministic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from durabletask.client import OrchestrationState, OrchestrationStatus

from strict_singleton import _flow
from strict_singleton._validation import FENCING_TAG, REQUEST_ID_TAG
from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends.base import Grant, RequestRecord, StartRecord

Profile = Literal["atomic", "overwrite", "eventual"]
_TERMINAL = {OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED}


class VirtualClock:
    """Monotonic seconds and a UTC wall clock that advance only through :meth:`advance`."""

    def __init__(self, start: float = 1000.0, wall: datetime | None = None) -> None:
        self.now = start
        self._start = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.now - self._start)

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        for listener in list(self.listeners):
            listener()


@dataclass
class _Lease:
    token: str
    expires_at: float | None


class SimLockStore:
    """Leases per instance ID on a virtual clock; ``expiring=False`` models the file lease.

    ``records=True`` keeps start records (``release_with_record``) with a TTL, returned
    by the next acquire, as every shipped backend does.
    """

    def __init__(self, clock: VirtualClock, *, expiring: bool = True, records: bool = True) -> None:
        self.clock = clock
        self.expiring = expiring
        self.records = records
        self.leases: dict[str, _Lease] = {}
        self.fences: dict[str, int] = {}
        self.starts: dict[str, tuple[StartRecord, float]] = {}  # instance ID -> (record, expiry)
        self.requests: dict[str, tuple[RequestRecord, float]] = {}  # instance ID -> (request record, expiry)
        self.down = False
        self.calls = 0

    def _check(self, instance_id: str) -> None:
        self.calls += 1
        if self.down:
            raise LockUnavailableError("simulated lock store outage", instance_id=instance_id, backend="sim")

    def holder(self, instance_id: str) -> str | None:
        lease = self.leases.get(instance_id)
        if lease is None:
            return None
        if lease.expires_at is not None and self.clock() >= lease.expires_at:
            del self.leases[instance_id]
            return None
        return lease.token

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        self._check(instance_id)
        if self.holder(instance_id) is not None:
            return None
        self.leases[instance_id] = _Lease(token, self.clock() + ttl if self.expiring else None)
        self.fences[instance_id] = self.fences.get(instance_id, 0) + 1
        record = self.last_start(instance_id)
        return Grant(
            fencing_token=self.fences[instance_id],
            valid_for=ttl if self.expiring else None,
            last_start=record,
            last_start_left=None if record is None else self.starts[instance_id][1] - self.clock(),
            last_request=self.last_request(instance_id),
        )

    def last_request(self, instance_id: str) -> RequestRecord | None:
        kept = self.requests.get(instance_id)
        if kept is None or self.clock() >= kept[1]:
            self.requests.pop(instance_id, None)
            return None
        return kept[0]

    def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        self._check(instance_id)
        if self.holder(instance_id) != token:
            return False
        # Kept as a real store keeps it: encoded (bounded, oldest signal entries left out) and read back.
        kept = RequestRecord.decode(record.encode())
        assert kept is not None
        self.requests[instance_id] = (kept, self.clock() + ttl)
        return True

    def last_start(self, instance_id: str) -> StartRecord | None:
        kept = self.starts.get(instance_id)
        if kept is None or self.clock() >= kept[1]:
            self.starts.pop(instance_id, None)
            return None
        return kept[0]

    def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        if not self.record_start(instance_id, token, record, ttl):
            return False
        del self.leases[instance_id]
        return True

    def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        if not self.records:
            raise AssertionError("this store keeps no start records")
        self._check(instance_id)
        if self.holder(instance_id) != token:
            return False
        self.starts[instance_id] = (record, self.clock() + ttl)
        return True

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        self._check(instance_id)
        if self.holder(instance_id) != token:
            return False
        if self.expiring:
            self.leases[instance_id].expires_at = self.clock() + ttl
        return True

    def release(self, instance_id: str, token: str) -> bool:
        self._check(instance_id)
        if self.holder(instance_id) != token:
            return False
        del self.leases[instance_id]
        return True

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        """Virtual time passes until the holder's lease expires, at most ``timeout``."""
        if self.holder(instance_id) is not None:
            lease = self.leases[instance_id]
            until = lease.expires_at if lease.expires_at is not None else self.clock() + timeout
            self.clock.advance(min(timeout, until - self.clock()))

    def lose(self, instance_id: str) -> None:
        """Fault: the key vanishes (deleted, evicted, a restart without persistence)."""
        self.leases.pop(instance_id, None)


@dataclass
class SimInstance:
    instance_id: str
    created_at: datetime
    status: OrchestrationStatus
    tags: dict[str, str]

    def state(self) -> OrchestrationState:
        return OrchestrationState(
            self.instance_id, "orch", self.status, self.created_at.replace(tzinfo=None),
            self.created_at.replace(tzinfo=None), None, None, None, None,
        )  # fmt: skip


class RpcError(Exception):
    """A gRPC-like error: ``code().name`` is the status code's name."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self._code = type("Code", (), {"name": code})()

    def code(self) -> Any:
        return self._code


@dataclass
class CreateEvent:
    instance_id: str
    fencing_token: str | None
    overwrote_active: bool
    at: float
    request_id: str | None = None  # the request ID tag, if the start carried one
    created_at: datetime | None = None  # the instance's creation time (what reads show)


@dataclass
class SimBackend:
    """A Durable backend with a race profile and a ledger of creates."""

    clock: VirtualClock
    profile: Profile = "overwrite"
    visibility_lag: float = 0.0
    whole_seconds: bool = False  # creation times of one-second resolution (Durable Functions)
    instances: dict[str, SimInstance] = field(default_factory=dict)
    creates: list[CreateEvent] = field(default_factory=list)
    rejected: int = 0
    reads: int = 0
    schedules: int = 0
    _lagging: dict[str, tuple[float, SimInstance | None]] = field(default_factory=dict)
    _queued: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    terminate_lag: float | None = 0.0  # seconds until a terminated instance shows as ended
    terminates: int = 0
    terminated: list[datetime] = field(default_factory=list)  # creation times of active instances asked to end
    _terminating: dict[str, float] = field(default_factory=dict)
    events: list[tuple[str, datetime, str, Any]] = field(default_factory=list)  # (ID, instance created, name, data)

    def __post_init__(self) -> None:
        self.clock.listeners.append(self._deliver)

    def read(self, instance_id: str) -> OrchestrationState | None:
        self.reads += 1
        lag = self._lagging.get(instance_id)
        if lag is not None and self.clock() < lag[0]:
            return None if lag[1] is None else lag[1].state()
        current = self.instances.get(instance_id)
        return None if current is None else current.state()

    def schedule(self, instance_id: str, tags: dict[str, str]) -> str:
        """Execute a start request now (the reuse policy replaces terminal instances only)."""
        self.schedules += 1
        existing = self.instances.get(instance_id)
        active = existing is not None and existing.status not in _TERMINAL
        if active and self.profile != "overwrite":
            self.rejected += 1
            raise RpcError("ALREADY_EXISTS", f"instance {instance_id!r} already exists")
        created_at = self.clock.wall()
        if existing is not None and created_at <= existing.created_at:
            # A backend's clock moves on between creating an instance and replacing it, even
            # where this world lets no time pass between operations.
            created_at = existing.created_at + timedelta(microseconds=1)
        if self.whole_seconds:
            created_at = created_at.replace(microsecond=0)
        self.instances[instance_id] = SimInstance(instance_id, created_at, OrchestrationStatus.RUNNING, tags)
        if self.visibility_lag > 0 or self.profile == "eventual":
            self._lagging[instance_id] = (self.clock() + (self.visibility_lag or 0.05), existing)
        self.creates.append(
            CreateEvent(instance_id, tags.get(FENCING_TAG), active, self.clock(), tags.get(REQUEST_ID_TAG), created_at)
        )
        return instance_id

    def schedule_later(self, instance_id: str, tags: dict[str, str], delay: float) -> None:
        """Fault: the request is held in the backend and executes ``delay`` seconds from now."""
        self._queued.append((self.clock() + delay, instance_id, dict(tags)))

    def _deliver(self) -> None:
        for instance_id, at in list(self._terminating.items()):
            if at <= self.clock():
                del self._terminating[instance_id]
                self.finish(instance_id, OrchestrationStatus.TERMINATED)
        due = [q for q in self._queued if q[0] <= self.clock()]
        for item in due:
            self._queued.remove(item)
            with contextlib.suppress(RpcError):
                self.schedule(item[1], item[2])

    def terminate(self, instance_id: str) -> None:
        """A terminate request: the instance ends ``terminate_lag`` seconds later (never, if None)."""
        self.terminates += 1
        current = self.instances.get(instance_id)
        if current is not None and current.status not in _TERMINAL:
            self.terminated.append(current.created_at)
        if instance_id not in self.instances or self.terminate_lag is None:
            return
        if self.terminate_lag <= 0:
            self.finish(instance_id, OrchestrationStatus.TERMINATED)
        else:
            self._terminating[instance_id] = self.clock() + self.terminate_lag

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        """An event to the instance (``start_or_signal``); NOT_FOUND when there is none."""
        if instance_id not in self.instances:
            raise RpcError("NOT_FOUND", f"no instance {instance_id!r}")
        self.events.append((instance_id, self.instances[instance_id].created_at, name, data))

    def finish(self, instance_id: str, status: OrchestrationStatus = OrchestrationStatus.COMPLETED) -> None:
        self.instances[instance_id].status = status
        self._lagging.pop(instance_id, None)

    def created(self, instance_id: str) -> int:
        return sum(1 for c in self.creates if c.instance_id == instance_id)

    def overwritten(self, instance_id: str) -> int:
        return sum(1 for c in self.creates if c.instance_id == instance_id and c.overwrote_active)


class World:
    """A clock, a lock store and a backend that answer flow operations."""

    def __init__(
        self,
        *,
        profile: Profile = "overwrite",
        expiring: bool = True,
        visibility_lag: float = 0.0,
        records: bool = True,
        whole_seconds: bool = False,
    ) -> None:
        self.clock = VirtualClock()
        self.store = SimLockStore(self.clock, expiring=expiring, records=records)
        self.backend = SimBackend(
            self.clock, profile=profile, visibility_lag=visibility_lag, whole_seconds=whole_seconds
        )
        self.transport = SimTransport(self.backend)
        self.op_cost = 0.001  # virtual seconds each lock or backend operation takes

    def answer(self, op: _flow.Op) -> Any:
        """What the real drivers would get back for ``op`` (or raise): served through
        :data:`_flow.CALLS`, as the drivers serve it, by the store, the backend or the clock."""
        call = _flow.call_of(op)
        if call.method not in _WAITS:
            self.clock.advance(self.op_cost)
        kwargs: dict[str, Any] = {}
        if call.target == "clock":
            target: Any = self
        elif call.target == "lock":
            target = self.store
        else:
            target = self.transport
            # The time left as the operation reaches the backend, after its cost.
            kwargs["timeout"] = None if op.send_by is None else op.send_by - self.clock()  # type: ignore[union-attr]
        return getattr(target, call.method)(*call.arguments(op), **kwargs)

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)


# Operations that take the virtual time they wait for, not an operation's cost.
_WAITS = frozenset({"sleep", "wait_for_release"})


class SimTransport:
    """The simulated backend as a :class:`~strict_singleton.transport.Transport`. Only a
    schedule is refused once its send-by time has passed (the explorer decides that for
    events and terminates itself, as a fault it explores)."""

    def __init__(self, backend: SimBackend) -> None:
        self.backend = backend

    bounds_calls = True

    def prepare(self, call: Any, *, backend: str) -> Any:
        return call

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> OrchestrationState | None:
        return self.backend.read(instance_id)

    def schedule(self, call: Any, tags: dict[str, str], *, timeout: float | None) -> str:
        if timeout is not None and timeout <= 0:
            raise _flow.NotSent("send-by time passed")
        return self.backend.schedule(call.instance_id, tags)

    def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> None:
        self.backend.terminate(instance_id)

    def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> None:
        self.backend.raise_event(instance_id, event_name, data)


DEFAULT: Any = object()
"""Returned by an ``intercept`` to let the world answer the operation."""


def drive(
    flow: Generator[_flow.Op, Any, Any],
    world: World,
    intercept: Callable[[_flow.Op], Any] | None = None,
    *,
    log: list[_flow.Op] | None = None,
    max_ops: int = 100_000,
) -> Any:
    """Run ``flow`` to its end against ``world``; returns its value or raises its error.

    ``intercept(op)`` runs first for every operation: return :data:`DEFAULT` to let
    the world answer, any other value to answer it yourself, or raise to throw into
    the flow (raise :class:`~strict_singleton._flow.Abandoned` to cancel the call there,
    as the drivers do; the flow then cleans up and re-raises it). Every operation is appended to ``log`` when given.
    """
    send: Any = None
    error: BaseException | None = None
    for _ in range(max_ops):
        try:
            op = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        if log is not None:
            log.append(op)
        try:
            answer = intercept(op) if intercept is not None else DEFAULT
            send, error = (world.answer(op) if answer is DEFAULT else answer), None
        except (Exception, _flow.Abandoned) as exc:  # Abandoned: the caller went away (cancelled)
            send, error = None, exc
    raise AssertionError(f"flow did not finish within {max_ops} operations")


__all__ = [
    "DEFAULT",
    "RpcError",
    "SimBackend",
    "SimLockStore",
    "VirtualClock",
    "World",
    "drive",
]
