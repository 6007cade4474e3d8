"""One call's state while its flow runs: the lease as this call counts it, what a held start
needs for finishing, and the bag of progress a clean-up after cancellation reads."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._drift import drift
from strict_singleton._flow import ops
from strict_singleton._validation import StartCall, StarterConfig
from strict_singleton.errors import (
    LeaseLostError,
)
from strict_singleton.lock_backends.base import RequestRecord, StartRecord
from strict_singleton.result import StartOutcome, StartResult

# A caller that finds the lease held waits this long for the holder before its first read.
FIRST_WAIT = 0.05


# Polling of status reads while watching for an instance: from 2 ms, doubling, to this.
MAX_POLL = 0.25


@dataclass(slots=True)
class LeaseClock:
    """Our own view of a held lease's validity, on a monotonic clock."""

    granted_at: float  # clock reading taken just before the acquire/extend request was sent
    valid_for: float | None  # None: never expires while we live

    def remaining(self, now: float) -> float | None:
        if self.valid_for is None:
            return None
        return self.granted_at + self.valid_for - drift(self.valid_for) - now

    def age(self, now: float) -> float:
        return now - self.granted_at


@dataclass(slots=True)
class Hold:
    """A lease still held after a successful schedule, for ``finish_flow``."""

    lease: LeaseClock
    previous: OrchestrationState | None
    sent_at: datetime
    token: str
    fencing_token: int = 0


@dataclass(slots=True)
class FlowResult:
    result: StartResult
    hold: Hold | None  # set when the driver must run finish_flow
    error: BaseException | None = None  # raise this after the finish (start_or_signal's failed event)


Flow = Generator[ops.Op, Any, FlowResult]


FinishFlow = Generator[ops.Op, Any, None]


@dataclass(slots=True)
class Progress:
    """Where a start is, for cleaning up after :class:`Abandoned`."""

    may_hold: bool = False  # an acquire was sent and the lease not yet released
    lease: LeaseClock | None = None
    previous: OrchestrationState | None = None
    sent_at: datetime | None = None  # set while a schedule may be in flight
    watch_until: float | None = None
    fencing_token: int | None = None
    earlier: RequestRecord | None = None  # the request record the store held when we took the lease
    stored: RequestRecord | None = None  # what the store holds now, as far as this call knows
    noting: str | None = None  # whose event _note_event updates: "start", "signal" or None
    started: Hold | None = None  # our schedule created the instance: every way out leaves its start record
    terminating: float | None = None  # a terminate may be in flight: watch for the end until then (clock)


@dataclass(slots=True)
class Notes:
    """What one start went through, for the drivers' metrics (:mod:`strict_singleton._telemetry`).

    The flow only writes it, and no decision reads it: it adds no operation and changes no
    behaviour. A driver passes its own to :func:`~strict_singleton._flow.start_flow` and reads
    it when the flow has ended, on every path (answer, error, clean-up after an abandonment).
    """

    lease_asked: bool = False  # the call went for the lease (a start that failed before it did not)
    lease_waited: float = 0.0  # seconds spent waiting for another holder's release (StartResult.waited)
    record_wait_began: float | None = None  # clock: the holder began re-reading for an earlier start's record
    record_wait_ended: float | None = None  # clock: ... and stopped, the record shown or its window over
    record_shown: bool = False
    watch: str | None = None  # an ambiguity watch: "watching", then "appeared", "gave_up" or "lease_lost"


@dataclass(slots=True)
class Ctx:
    """What one start's flow needs besides I/O."""

    call: StartCall
    cfg: StarterConfig
    token: str
    backend: str
    clock: Callable[[], float]
    wall_clock: Callable[[], datetime]
    t0: float = 0.0
    at_begin: OrchestrationState | None = None  # TERMINATE_EXISTING: the instance read when the call began
    last_start: StartRecord | None = None  # the start record the grant carried (TERMINATE_EXISTING)
    progress: Progress = field(default_factory=Progress)
    notes: Notes = field(default_factory=Notes)

    @property
    def iid(self) -> str:
        return self.call.instance_id

    def done(
        self,
        outcome: StartOutcome,
        existing: OrchestrationState | None = None,
        fencing_token: int | None = None,
        hold: Hold | None = None,
        replaced: OrchestrationState | None = None,
        deduplicated: bool = False,
    ) -> FlowResult:
        result = StartResult(
            outcome=outcome,
            instance_id=self.iid,
            existing=existing,
            waited=self.notes.lease_waited,
            elapsed=self.clock() - self.t0,
            fencing_token=fencing_token,
            backend=self.backend,
            replaced=replaced,
            deduplicated=deduplicated,
        )
        return FlowResult(result=result, hold=hold)

    def lost(self, message: str) -> LeaseLostError:
        return LeaseLostError(message, instance_id=self.iid, backend=self.backend)

    def read(self, payloads: bool = True, lease: LeaseClock | None = None) -> ops.Read:
        """A status read; under a held lease (``lease``, else this call's own) it carries the lease's deadline."""
        p = self.progress
        held = lease if lease is not None else (p.lease if p.may_hold else None)
        return ops.Read(self.iid, self.cfg.fetch_payloads and payloads, None if held is None else send_by(self, held))

    def extend(self) -> ops.Extend:
        return ops.Extend(self.iid, self.token, self.cfg.lease_ttl)


def send_by(ctx: Ctx, lease: LeaseClock | None = None) -> float | None:
    """The latest time an RPC made under the held lease may be sent and answered: the lease's
    deadline (as this call counts it) minus the send reserve; ``None`` for a lease without expiry."""
    lease = lease if lease is not None else ctx.progress.lease
    assert lease is not None
    now = ctx.clock()
    remaining = lease.remaining(now)
    return None if remaining is None else now + remaining - ctx.cfg.send_reserve
