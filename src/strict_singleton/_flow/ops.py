"""The operations a flow yields: small frozen values that carry every argument, each naming
its target (the lock store, the Durable backend, or the clock) and the method that serves
it. :data:`CALLS` is the one table from an operation to that call: the sync and async
drivers, the simulated world and the explorer all dispatch through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from strict_singleton._validation import StartCall
from strict_singleton.lock_backends.base import RequestRecord, StartRecord


@dataclass(frozen=True, slots=True)
class Acquire:
    """-> Grant | None: one non-blocking attempt to take the lease under ``token``."""

    instance_id: str
    token: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Extend:
    """-> bool: reset the lease's TTL if ``token`` still holds it (a confirmation too)."""

    instance_id: str
    token: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Release:
    """-> bool: free the lease if ``token`` still holds it."""

    instance_id: str
    token: str


@dataclass(frozen=True, slots=True)
class ReleaseRecording:
    """-> bool: free the lease if ``token`` still holds it, leaving ``record`` for ``ttl`` seconds."""

    instance_id: str
    token: str
    record: StartRecord
    ttl: float


@dataclass(frozen=True, slots=True)
class RecordStart:
    """-> bool: leave ``record`` for ``ttl`` seconds if ``token`` still holds the lease (kept)."""

    instance_id: str
    token: str
    record: StartRecord
    ttl: float


@dataclass(frozen=True, slots=True)
class RecordRequest:
    """-> bool: leave the request record ``record`` for ``ttl`` seconds if ``token`` still holds the lease (kept)."""

    instance_id: str
    token: str
    record: RequestRecord
    ttl: float


@dataclass(frozen=True, slots=True)
class WaitRelease:
    """-> None: wait up to ``timeout`` seconds for the holder's release."""

    instance_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Read:
    """-> OrchestrationState | None; ``payloads=False`` skips inputs and outputs.

    ``send_by`` as for :class:`Schedule`, for a read made under the lease: the RPC ends
    inside it (``NotSent`` once the time has passed), so no read hangs a held lease.
    """

    instance_id: str
    payloads: bool
    send_by: float | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """-> str: send ``call``'s schedule request with ``tags`` and the terminal-only reuse policy.

    ``send_by`` is an absolute time on the flow's clock (None: the lease never
    expires). The driver must not send at or after it: it raises :class:`NotSent`
    instead; otherwise the RPC's deadline is ``send_by`` minus the clock, read
    immediately before the RPC.
    """

    call: StartCall
    tags: dict[str, str]
    send_by: float | None


@dataclass(frozen=True, slots=True)
class Terminate:
    """-> None: ask the backend to terminate the instance (``ConflictPolicy.TERMINATE_EXISTING``).

    ``send_by`` as for :class:`Schedule`: made under the lease, the RPC ends inside it.
    """

    instance_id: str
    reason: str
    send_by: float | None = None


@dataclass(frozen=True, slots=True)
class RaiseEvent:
    """-> None: raise ``event_name`` with ``data`` to the instance (``start_or_signal``).

    ``send_by`` as for :class:`Schedule`: made under the lease, the RPC ends inside it
    (``NotSent`` if the time has passed: the event was surely not raised).
    """

    instance_id: str
    event_name: str
    data: Any
    send_by: float | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """-> None"""

    seconds: float


Op = (
    Acquire
    | Extend
    | Release
    | ReleaseRecording
    | RecordStart
    | RecordRequest
    | WaitRelease
    | Read
    | Schedule
    | Terminate
    | RaiseEvent
    | Sleep
)


class NotSent(Exception):
    """Raised by a driver for a :class:`Schedule` whose send-by time passed: nothing was sent."""


class Abandoned(BaseException):
    """Thrown into a flow by a driver whose caller went away (cancelled, interrupted).

    The driver keeps running the flow where the interruption cannot reach it; the flow
    cleans up (release, or watch then release) and re-raises.
    """


Target = Literal["lock", "backend", "clock"]


@dataclass(frozen=True, slots=True)
class Call:
    """How one kind of operation is served: ``target``'s ``method`` called with ``arguments(op)``.

    ``lock``: the lease backend (on the lock key; the driver maps the instance ID to it),
    ``backend``: the Durable transport (:class:`strict_singleton.transport.Transport`; the
    driver adds ``timeout=``, the time left before the op's ``send_by``), ``clock``: the
    driver's own sleep.
    """

    target: Target
    method: str
    arguments: Callable[[Any], tuple[Any, ...]]


# The one table from an operation to the call that serves it: a new operation is one entry
# here and one method on the target it names.
CALLS: dict[type[Any], Call] = {
    Acquire: Call("lock", "acquire", lambda op: (op.instance_id, op.token, op.ttl)),
    Extend: Call("lock", "extend", lambda op: (op.instance_id, op.token, op.ttl)),
    Release: Call("lock", "release", lambda op: (op.instance_id, op.token)),
    ReleaseRecording: Call("lock", "release_with_record", lambda op: (op.instance_id, op.token, op.record, op.ttl)),
    RecordStart: Call("lock", "record_start", lambda op: (op.instance_id, op.token, op.record, op.ttl)),
    RecordRequest: Call("lock", "record_request", lambda op: (op.instance_id, op.token, op.record, op.ttl)),
    WaitRelease: Call("lock", "wait_for_release", lambda op: (op.instance_id, op.timeout)),
    Read: Call("backend", "read", lambda op: (op.instance_id, op.payloads)),
    Schedule: Call("backend", "schedule", lambda op: (op.call, op.tags)),
    Terminate: Call("backend", "terminate", lambda op: (op.instance_id, op.reason)),
    RaiseEvent: Call("backend", "raise_event", lambda op: (op.instance_id, op.event_name, op.data)),
    Sleep: Call("clock", "sleep", lambda op: (op.seconds,)),
}


def call_of(op: Op) -> Call:
    """The entry of :data:`CALLS` that serves ``op``."""
    return CALLS[type(op)]


def targets(op: Op, target: Target) -> bool:
    """Whether ``op`` goes to ``target`` (``"lock"``, ``"backend"`` or ``"clock"``)."""
    return CALLS[type(op)].target == target
