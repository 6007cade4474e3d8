"""The start algorithm, written once, without I/O.

``start_flow`` and ``finish_flow`` are generators that *yield* the I/O they need as
small frozen operations that carry all their arguments (:class:`Acquire`,
:class:`Read`, :class:`Schedule`, ...) and receive its result (or have its exception
thrown in). The sync and async starters are thin drivers that execute those
operations with blocking or awaiting calls, so both run the very same decisions; a
scripted driver (``tests/test_flow_unit.py``) runs them in memory. Time comes from an
injected monotonic clock (and, for comparing creation times, an injected wall clock).

Safety argument, step by step:

1. Arguments were validated, and the schedule request built (input serialized),
   before the flow runs: no lease is taken for bad input, and no lease time is spent
   serializing.
2. The lease is acquired with a fresh random token. Its validity is counted from just
   *before* the acquire request was sent, minus a clock-drift allowance, so our
   deadline never outlives the store's.
3. Under the lease, the instance's status is read; an active instance is answered
   ALREADY_RUNNING and nothing is scheduled.
4. Before scheduling, the lease is *confirmed* by the store (a token-checked extend)
   whenever more than ``confirm_after`` seconds passed since the store last confirmed
   it (a slow read, a pause), and renewed when less than ``schedule_margin`` validity
   is left or it is older than a third of its TTL. A lease whose deadline has passed
   is never renewed: a late renew can succeed on some stores even though someone else
   held the lease meanwhile. Then we raise ``LeaseLostError``.
5. The schedule op carries an absolute *send-by* time: the lease's deadline minus a
   reserve. The driver refuses to send at or after it (``NotSent`` ->
   ``LeaseLostError``), and otherwise gives the RPC the time left as its gRPC
   deadline, computed immediately before the RPC. The request carries a reuse policy
   that only replaces terminal instances (ALREADY_EXISTS becomes ALREADY_RUNNING).
6. An ambiguous failure (deadline, lost connection, cancellation) does not let go: a
   gRPC deadline ends our wait, not the server's work. The lease is kept (renewed,
   token-checked) while we watch for *our* instance for ``ambiguity_timeout``; if it
   appears the answer is STARTED, else ``ScheduleError(maybe_scheduled=True)``, and
   only then is the lease released.
7. After a successful schedule no later caller may act on a stale "no instance" read
   (hosts whose status index lags). With a lock store that keeps *start records*
   (every shipped backend), the lease is released at once together with a record of
   the start (its send time and the instance it replaced), kept for
   ``visibility_timeout``; the next holder whose status read does not show that start
   yet keeps the lease and re-reads until it does (at most ``visibility_timeout``)
   before deciding anything. So the visibility wait is paid only by a caller that
   really comes inside the lag window. Without records, or if storing the record
   failed, the lease is held (renewed) until the new instance is visible, at most
   ``visibility_timeout``. Every path ends in a token-checked release: no hold is
   unbounded, including on leases that never expire (the file lease).
8. If the caller abandons the call (async cancellation, KeyboardInterrupt), the driver
   throws :class:`Abandoned` in and runs the rest where the interruption cannot reach:
   a held lease is released, and a schedule that may be in flight is watched for as
   in step 6 first.

"Our instance" is recognised by its creation time: an instance that was not there
before (or replaced the one read in step 3, so it was created later) and was created
no earlier than ``clock_skew`` seconds before we sent the request. A start record is
"shown" by a read by the same test. durabletask's ``GetInstance``
omits tags, so the fencing tag cannot serve as evidence on that path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from durabletask.client import OrchestrationState, OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton._drift import drift
from strict_singleton._validation import FENCING_TAG, REQUEST_ID_TAG, StartCall, StarterConfig
from strict_singleton.errors import (
    AlreadyRunningError,
    LeaseLostError,
    LockUnavailableError,
    ScheduleError,
    SignalError,
    StatusReadError,
    StrictSingletonError,
    TerminateError,
)
from strict_singleton.lock_backends.base import Grant, RequestRecord, StartRecord
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.result import StartOutcome, StartResult

_log = logging.getLogger("strict_singleton")

# Statuses a new start may replace. Listing Running/Pending here would mean
# "terminate and replace", so only terminal statuses are listed.
REPLACEABLE_STATUSES: tuple[int, ...] = ReusePolicy.ALLOW_DUPLICATE.replaceable
_TERMINAL = frozenset({OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED})


def reuse_policy() -> pb.OrchestrationIdReusePolicy:
    return ReusePolicy.ALLOW_DUPLICATE.request_policy()


def is_active(state: OrchestrationState | None) -> bool:
    """An instance that exists and is not in a replaceable (terminal) status."""
    return state is not None and state.runtime_status not in _TERMINAL


def _utc(moment: datetime) -> datetime:
    # durabletask returns naive UTC datetimes (protobuf Timestamp.ToDatetime()).
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def epoch_us(moment: datetime) -> int:
    """Integer microseconds since the Unix epoch (exact; naive datetimes are UTC)."""
    delta = _utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def shows_start(state: OrchestrationState | None, previous_us: int | None, sent_us: int, skew: float) -> bool:
    """Whether a status read shows the instance a start sent at ``sent_us`` created.

    It must be newer than the instance read under the lease before that start
    (``previous_us``: its creation time, ``None`` if there was none; a replacement is
    always created later) and created no earlier than ``skew`` seconds before the
    request was sent (the starter's wall clock).
    """
    if state is None or state.created_at is None:
        return False
    created = epoch_us(state.created_at)
    if previous_us is not None and created <= previous_us:
        return False
    return created >= sent_us - round(skew * 1_000_000)


def is_ours(
    state: OrchestrationState | None, previous: OrchestrationState | None, sent_at: datetime, skew: float
) -> bool:
    """Whether a status read shows an instance our schedule request created (see :func:`shows_start`)."""
    return shows_start(state, created_us(previous), epoch_us(sent_at), skew)


def created_us(state: OrchestrationState | None) -> int | None:
    return None if state is None or state.created_at is None else epoch_us(state.created_at)


def shows_record(state: OrchestrationState | None, record: StartRecord, skew: float) -> bool:
    """Whether a status read already shows the start ``record`` describes.

    As :func:`shows_start`, and also an *active* instance with the replaced one's
    creation time: a start only replaces a terminal instance, so an active one with
    that time is the new one on a host whose creation times have one-second resolution
    (Durable Functions), or the replaced one seen from before it ended; either way an
    active instance is there, which is all a caller deciding whether to start needs.
    """
    return shows(state, record.previous_created_us, record.sent_at_us, skew)


def shows(state: OrchestrationState | None, previous_us: int | None, sent_us: int, skew: float) -> bool:
    """:func:`shows_start`, or an active instance with the replaced one's creation time (see :func:`shows_record`)."""
    if shows_start(state, previous_us, sent_us, skew):
        return True
    return previous_us is not None and is_active(state) and created_us(state) == previous_us


# gRPC codes after which the backend may or may not have created the instance.
AMBIGUOUS_CODES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "UNKNOWN", "CANCELLED", "INTERNAL", "ABORTED"})


def rpc_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:
        return None
    return getattr(value, "name", None)


# -- operations the drivers execute ----------------------------------------------


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


# The operations the lock store executes (on the lock key); the others go to the Durable backend or the clock.
LOCK_OPS = (Acquire, Extend, Release, ReleaseRecording, RecordStart, RecordRequest, WaitRelease)


class NotSent(Exception):
    """Raised by a driver for a :class:`Schedule` whose send-by time passed: nothing was sent."""


class Abandoned(BaseException):
    """Thrown into a flow by a driver whose caller went away (cancelled, interrupted).

    The driver keeps running the flow where the interruption cannot reach it; the flow
    cleans up (release, or watch then release) and re-raises.
    """


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


Flow = Generator[Op, Any, FlowResult]
FinishFlow = Generator[Op, Any, None]


@dataclass(slots=True)
class _Progress:
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
class _Ctx:
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
    waited: float = 0.0
    progress: _Progress = field(default_factory=_Progress)

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
            waited=self.waited,
            elapsed=self.clock() - self.t0,
            fencing_token=fencing_token,
            backend=self.backend,
            replaced=replaced,
            deduplicated=deduplicated,
        )
        return FlowResult(result=result, hold=hold)

    def lost(self, message: str) -> LeaseLostError:
        return LeaseLostError(message, instance_id=self.iid, backend=self.backend)

    def read(self, payloads: bool = True, lease: LeaseClock | None = None) -> Read:
        """A status read; under a held lease (``lease``, else this call's own) it carries the lease's deadline."""
        p = self.progress
        held = lease if lease is not None else (p.lease if p.may_hold else None)
        return Read(self.iid, self.cfg.fetch_payloads and payloads, None if held is None else _send_by(self, held))

    def extend(self) -> Extend:
        return Extend(self.iid, self.token, self.cfg.lease_ttl)


def _released_after(ctx: _Ctx, body: Generator[Op, Any, None]) -> Generator[Op, Any, None]:
    """Run ``body`` holding the lease, then let go of it (:func:`_let_go`), also when ``body``
    raises (not on ``GeneratorExit``: a flow being discarded may yield nothing more)."""
    try:
        yield from body
    except GeneratorExit:
        raise
    except BaseException:
        yield from _let_go(ctx)
        raise
    yield from _let_go(ctx)


def _let_go(ctx: _Ctx) -> Generator[Op, Any, None]:
    """Give the lease up: after a start of ours, as :func:`finish_flow` does (released with
    the start's record, or held until the instance is visible), so that no way out of a
    call that created an instance, cancellation included, lets a later caller act on a
    stale "no instance" read; else a plain token-checked release."""
    hold = ctx.progress.started
    if hold is not None:
        ctx.progress.started = None
        yield from _finish(ctx, hold)
    elif ctx.progress.may_hold:
        yield from _release(ctx)


def _release(ctx: _Ctx) -> Generator[Op, Any, None]:
    """Token-checked release whose failure only costs waiting for expiry."""
    try:
        yield Release(ctx.iid, ctx.token)
    except LockUnavailableError as exc:
        _log.warning("release failed for %r; the lease will expire on its own: %s", ctx.iid, exc)
    ctx.progress.may_hold = False


def _read(ctx: _Ctx) -> Generator[Op, Any, OrchestrationState | None]:
    op = ctx.read()
    try:
        state: OrchestrationState | None = yield op
    except Exception as exc:
        if op.send_by is not None and (isinstance(exc, NotSent) or rpc_code(exc) == "DEADLINE_EXCEEDED"):
            # Cut at the lease's own deadline: the lease ran out while the backend was answering.
            raise ctx.lost("the lease's deadline passed during the status read; nothing was scheduled") from exc
        raise StatusReadError(
            f"status read failed; nothing was scheduled: {type(exc).__name__}: {exc}",
            instance_id=ctx.iid,
            backend=ctx.backend,
        ) from exc
    return state


def _keep(ctx: _Ctx, lease: LeaseClock, *, confirm: bool) -> Generator[Op, Any, str | None]:
    """Keep a held lease: renew it when due (or confirm it when ``confirm``).

    Returns None while it is ours with at least ``schedule_margin`` left (or no
    expiry), else the reason it may no longer be ours. Never renews past the deadline.
    With ``confirm`` (just before scheduling) a store error is raised, not returned.
    """
    cfg = ctx.cfg
    now = ctx.clock()
    remaining = lease.remaining(now)
    if remaining is not None and remaining <= 0:
        return "the lease may have expired"
    due = remaining is not None and (remaining < cfg.schedule_margin or lease.age(now) > cfg.renew_after)
    if not (due or (confirm and lease.age(now) > cfg.confirm_after)):
        return None
    before = ctx.clock()
    try:
        still_ours = yield ctx.extend()
    except LockUnavailableError as exc:
        if confirm:  # before scheduling: fail closed with the store's own error
            raise
        return f"the lock store could not renew the lease ({exc.message})"
    if not still_ours:
        return "the lease is no longer ours (renewal refused)"
    lease.granted_at = before
    remaining = lease.remaining(ctx.clock())
    if remaining is not None and remaining < cfg.schedule_margin:
        return "the renewed lease leaves too little time"
    return None


def _confirm(ctx: _Ctx, lease: LeaseClock) -> Generator[Op, Any, str | None]:
    """A token-checked extend now, unless the lease may already have expired: None if still ours."""
    remaining = lease.remaining(ctx.clock())
    if remaining is not None and remaining <= 0:
        return "the lease may have expired while watching"
    before = ctx.clock()
    try:
        still_ours = yield ctx.extend()
    except LockUnavailableError as exc:
        return f"the lock store could not confirm the lease ({exc.message})"
    if not still_ours:
        return "the lease is no longer ours (confirmation refused)"
    lease.granted_at = before
    return None


def _watch(ctx: _Ctx, lease: LeaseClock) -> Generator[Op, Any, tuple[OrchestrationState | None, str | None]]:
    """After an ambiguous schedule failure: keep the lease and look for our instance.

    Returns (our instance's state, None) when it shows up, (None, None) when the
    window closed without it, (None, reason) when the lease could not be kept.
    """
    p = ctx.progress
    assert p.sent_at is not None
    if p.watch_until is None:
        # A request that executes late in the window may then take up to visibility_timeout
        # to show in reads (a lagging host): watch that long too, or a later caller could
        # read a stale "no instance" after we let go (found by the explorer's review).
        lag = ctx.cfg.visibility_timeout if ctx.cfg.confirm_visible else 0.0
        p.watch_until = ctx.clock() + ctx.cfg.ambiguity_timeout + lag
        if ctx.cfg.confirm_visible and ctx.cfg.start_records:
            # Leave a record of the maybe-start while the lease is surely ours: if the lease
            # is lost during the watch (a read slower than the lease), the next holder still
            # waits for this start to show instead of acting on a stale read (attack review F3).
            yield from _record_start(ctx, lease, ctx.cfg.ambiguity_timeout + lag)
    delay = 0.002
    while True:
        reason = yield from _keep(ctx, lease, confirm=False)
        if reason is not None:
            return None, reason
        try:
            state = yield ctx.read(payloads=False)
        except Exception as exc:
            _log.debug("status read while watching %r failed: %r", ctx.iid, exc)
            state = None
        if is_ours(state, p.previous, p.sent_at, ctx.cfg.clock_skew):
            # Only proof if the lease was ours all along: a read that outlived the lease
            # may show an instance someone else created after taking the lease over.
            reason = yield from _confirm(ctx, lease)
            return (None, reason) if reason is not None else (state, None)
        left = p.watch_until - ctx.clock()
        if left <= 0:
            return None, None
        yield Sleep(_pause(ctx, delay, left))
        delay = min(delay * 2, MAX_POLL)


def _release_recording(ctx: _Ctx, hold: Hold) -> Generator[Op, Any, bool]:
    """Release leaving a start record: True when done (released, or the lease was no longer ours)."""
    record = _new_record(hold.fencing_token, hold.sent_at, hold.previous, ctx.wall_clock(), ctx.cfg.visibility_timeout)
    op = ReleaseRecording(ctx.iid, ctx.token, record, ctx.cfg.visibility_timeout)
    for _attempt in range(2):  # an abandoned release is tried once more (token-checked)
        try:
            released = yield op
        except Abandoned:
            continue
        except LockUnavailableError as exc:
            _log.warning("could not leave a start record for %r (%s); holding the lease until visible", ctx.iid, exc)
            return False
        if not released:
            _log.warning("lost the lease for %r before releasing it with its start record", ctx.iid)
        ctx.progress.may_hold = False
        return True
    return False


def _record_start(ctx: _Ctx, lease: LeaseClock, ttl: float) -> Generator[Op, Any, None]:
    """Leave a record of the start in flight (or just made), keeping the lease; failures only cost the record."""
    p = ctx.progress
    sent_at = p.sent_at if p.started is None else p.started.sent_at
    assert sent_at is not None and p.fencing_token is not None
    record = _new_record(p.fencing_token, sent_at, p.previous, ctx.wall_clock(), ttl)
    try:
        stored = yield RecordStart(ctx.iid, ctx.token, record, ttl)
    except LockUnavailableError as exc:
        _log.warning("could not leave a start record for %r: %s", ctx.iid, exc)
        return
    if not stored:
        _log.warning("could not leave a start record for %r: the lease is no longer ours", ctx.iid)


def _new_record(
    fencing_token: int, sent_at: datetime, previous: OrchestrationState | None, now: datetime, ttl: float
) -> StartRecord:
    return StartRecord(
        fencing_token=fencing_token,
        sent_at_us=epoch_us(sent_at),
        previous_created_us=created_us(previous),
        expires_at_us=epoch_us(now) + round(ttl * 1_000_000),
    )


def _pause(ctx: _Ctx, delay: float, left: float) -> float:
    """A poll interval short enough that the lease is renewed in time."""
    return max(0.0, min(delay, left, ctx.cfg.renew_after / 2))


def _record_left(ctx: _Ctx, grant: Grant) -> float:
    """Seconds the previous holder's start record still counts, for this holder.

    The store's own remaining TTL where it expires records (Redis, Redlock: its clock,
    not the writer's, so two starters' wall clocks never meet here: attack review F1);
    else the record's wall-clock expiry plus ``clock_skew`` (the file lease: one host's
    clock; Blob: starters' clocks within ``clock_skew`` of each other, an assumption),
    never more than the writer's own window plus twice the skew. The writer's
    ``visibility_timeout`` governs, not ours.
    """
    record = grant.last_start
    assert record is not None
    if grant.last_start_left is not None:
        return grant.last_start_left
    skew_us = round(ctx.cfg.clock_skew * 1_000_000)
    left_us = record.expires_at_us + skew_us - epoch_us(ctx.wall_clock())
    window_us = record.expires_at_us - record.sent_at_us + 2 * skew_us
    return min(left_us, window_us) / 1_000_000


def _await_record(
    ctx: _Ctx, lease: LeaseClock, grant: Grant, state: OrchestrationState | None
) -> Generator[Op, Any, OrchestrationState | None]:
    """The previous holder left a start record: act only on a read that shows that start.

    A read that does not show it is stale (a lagging status index): keep the lease and
    read again until it does, at most until the record expires (:func:`_record_left`).
    Raises ``LeaseLostError`` if the lease cannot be kept.
    """
    cfg = ctx.cfg
    record = grant.last_start
    assert record is not None
    left = _record_left(ctx, grant)
    if shows_record(state, record, cfg.clock_skew) or left <= 0:
        return state
    state, shown = yield from _reread_until(
        ctx,
        lease,
        ctx.clock() + left,
        lambda s: shows_record(s, record, cfg.clock_skew),
        waiting_for="an earlier start to show; nothing was scheduled",
    )
    if not shown:
        _log.warning(
            "the start of %r recorded by the previous holder (fencing token %d) is still not visible; "
            "going on with the latest read (visibility_timeout)",
            ctx.iid,
            record.fencing_token,
        )
    return state


def _reread_until(
    ctx: _Ctx,
    lease: LeaseClock,
    until: float,
    done: Callable[[OrchestrationState | None], bool],
    *,
    waiting_for: str,
    tolerant: bool = False,
) -> Generator[Op, Any, tuple[OrchestrationState | None, bool]]:
    """Keep the lease and read again, pausing from 2 ms up, until ``done(read)`` or ``until``.

    Returns (the last read, whether it was done). Raises ``LeaseLostError`` if the lease
    cannot be kept (``waiting_for`` ends its message) and ``StatusReadError`` if a read fails,
    unless ``tolerant``: then a failed read is one more read that did not show it done (a
    watch that must not let go early, as for a terminate that may still land).
    """
    delay = 0.002
    while True:
        yield Sleep(_pause(ctx, delay, until - ctx.clock()))
        delay = min(delay * 2, MAX_POLL)
        reason = yield from _keep(ctx, lease, confirm=False)
        if reason is not None:
            raise ctx.lost(f"{reason} while waiting for {waiting_for}")
        try:
            state = yield from _read(ctx)
            read = True
        except StatusReadError as exc:
            if not tolerant:
                raise
            _log.debug("status read while waiting for %s failed: %r", waiting_for, exc)
            state, read = None, False
        if read and done(state):
            return state, True
        if ctx.clock() >= until:
            return state, False


def start_flow(
    call: StartCall,
    cfg: StarterConfig,
    *,
    token: str,
    backend: str,
    clock: Callable[[], float],
    wall_clock: Callable[[], datetime],
) -> Flow:
    """One start, from the first lease attempt to the caller's answer."""
    ctx = _Ctx(call=call, cfg=cfg, token=token, backend=backend, clock=clock, wall_clock=wall_clock, t0=clock())
    try:
        return (yield from _start(ctx))
    except Abandoned:
        yield from _abandon(ctx)
        raise
    except Exception:
        # Every documented error has released (or watched, then released) already: this is a
        # no-op for them. Anything else thrown into the flow (a SIGINT handler of the user's that
        # raises its own exception during a wait, say) is cleaned up as an abandonment is.
        yield from _abandon(ctx)
        raise


def _abandon(ctx: _Ctx) -> Generator[Op, Any, None]:
    p = ctx.progress
    if p.terminating is not None and p.lease is not None and p.may_hold:
        until, p.terminating = p.terminating, None
        try:  # the terminate may still land: keep the lease until the instance is seen ended
            yield from _reread_until(
                ctx, p.lease, until, lambda s: not is_active(s), waiting_for="a terminate", tolerant=True
            )
        except (StrictSingletonError, Abandoned) as exc:
            _log.warning("abandoned start of %r stopped watching its terminate: %r", ctx.iid, exc)
    if p.sent_at is not None and p.lease is not None:
        state, reason = yield from _watch(ctx, p.lease)
        if state is not None and p.fencing_token is not None:
            p.started = Hold(p.lease, p.previous, p.sent_at, ctx.token, p.fencing_token)
        _log.warning(
            "start of %r abandoned while its schedule request was in flight: %s",
            ctx.iid,
            "the instance was created" if state is not None else reason or "the instance did not show up",
        )
        if state is None and reason is None:
            yield from _note_event(ctx, "not-raised")  # start_or_signal: its event was never raised
    yield from _let_go(ctx)


def _existing_answer(ctx: _Ctx, state: OrchestrationState | None) -> StartOutcome | None:
    """What an instance seen in a read means for this call; ``None``: a start may go ahead.

    An active instance: ALREADY_RUNNING, or :class:`AlreadyRunningError` under
    ``ConflictPolicy.FAIL``. A finished one the call's reuse policy does not allow
    replacing: ALREADY_COMPLETED. Raises only; the caller releases a held lease first.
    """
    if state is None:
        return None
    if is_active(state):
        if ctx.call.on_conflict is ConflictPolicy.TERMINATE_EXISTING:
            # One replacement per wave: the instance that was active when this call began is
            # replaced, however young; any other is the wave's replacement, this call's answer.
            return None if _began_with(ctx, state) else StartOutcome.ALREADY_RUNNING
        if ctx.call.on_conflict is ConflictPolicy.FAIL:
            raise AlreadyRunningError(
                f"an active instance exists ({state.runtime_status.name}) and on_conflict=FAIL; nothing was scheduled",
                instance_id=ctx.iid,
                backend=ctx.backend,
                existing=state,
            )
        return StartOutcome.ALREADY_RUNNING
    if not ctx.call.reuse.allows(state.runtime_status):
        return StartOutcome.ALREADY_COMPLETED
    return None


def _send_by(ctx: _Ctx, lease: LeaseClock | None = None) -> float | None:
    """The latest time an RPC made under the held lease may be sent and answered: the lease's
    deadline (as this call counts it) minus the send reserve; ``None`` for a lease without expiry."""
    lease = lease if lease is not None else ctx.progress.lease
    assert lease is not None
    now = ctx.clock()
    remaining = lease.remaining(now)
    return None if remaining is None else now + remaining - ctx.cfg.send_reserve


def _signal(ctx: _Ctx, *, started: bool) -> Generator[Op, Any, None]:
    """Raise the call's event (``start_or_signal``): once, never retried (a retry could deliver
    it twice). Under the lease (a start of ours, or a request record to note it in), the lease
    is renewed first when due and the RPC is cut at the lease's deadline; an event to an
    instance found running, after the lease was released, carries no deadline of ours."""
    assert ctx.call.signal is not None
    name, data = ctx.call.signal
    p = ctx.progress
    try:
        send_by = None
        if p.lease is not None and p.may_hold:
            reason = yield from _keep(ctx, p.lease, confirm=False)
            if reason is not None:
                raise NotSent(reason)
            send_by = _send_by(ctx)
        yield RaiseEvent(ctx.iid, name, data, send_by)
    except Exception as exc:
        code = rpc_code(exc)
        maybe = not isinstance(exc, NotSent) and (code is None or code in AMBIGUOUS_CODES)
        if not maybe:
            yield from _note_event(ctx, "not-raised")
        where = "this call started the instance, then " if started else ""
        raise SignalError(
            f"{where}raising event {name!r} failed ({code or type(exc).__name__}): {exc}; "
            + ("it may have been delivered" if maybe else "it was not delivered"),
            instance_id=ctx.iid,
            backend=ctx.backend,
            maybe_delivered=maybe,
            started=started,
        ) from exc
    yield from _note_event(ctx, "raised")


# -- request records (request_id: idempotent retries) ---------------------------


def _expiry_us(ctx: _Ctx) -> int:
    return epoch_us(ctx.wall_clock()) + round(ctx.cfg.request_ttl * 1_000_000)


def _put_request(ctx: _Ctx, record: RequestRecord, *, must: bool) -> Generator[Op, Any, bool]:
    """Write ``record`` (token-checked, lease kept). ``must``: a store error or a refusal
    raises (``LockUnavailableError`` / ``LeaseLostError``: nothing may be sent); else it is
    logged and ``False`` returned (the store keeps what it had)."""
    p = ctx.progress
    try:
        stored = yield RecordRequest(ctx.iid, ctx.token, record, ctx.cfg.request_ttl)
    except LockUnavailableError as exc:
        if must:
            raise
        _log.warning("could not update the request record of %r: %s", ctx.iid, exc)
        return False
    if not stored:
        if must:
            raise ctx.lost("the lease is no longer ours (request record refused); nothing was sent")
        _log.warning("could not update the request record of %r: the lease is no longer ours", ctx.iid)
        return False
    p.stored = record
    return True


def _write_start(ctx: _Ctx, request_id: str | None, *, event: str, previous_us: int | None) -> Generator[Op, Any, None]:
    """Before a schedule is sent: this start's request ID (``None``: a tombstone, so no
    earlier request can claim the instance this start creates), keeping the signal entries."""
    p = ctx.progress
    assert p.fencing_token is not None
    record = RequestRecord(
        request_id=request_id,
        fencing_token=p.fencing_token,
        sent_at_us=epoch_us(ctx.wall_clock()),
        previous_created_us=previous_us,
        action="start",
        event=event,
        expires_at_us=_expiry_us(ctx),
        signals=p.stored.signals if p.stored is not None else (),
    )
    yield from _put_request(ctx, record, must=True)
    p.noting = "start" if request_id is not None else None


def _base_record(ctx: _Ctx) -> RequestRecord:
    """What the store holds, re-signed with this lease's fencing token (the newest for Redlock)
    and a fresh expiry; a bare tombstone if it holds nothing."""
    p = ctx.progress
    assert p.fencing_token is not None
    if p.stored is None:
        now_us = epoch_us(ctx.wall_clock())
        return RequestRecord(None, p.fencing_token, now_us, None, "start", "", _expiry_us(ctx))
    return dataclasses.replace(p.stored, fencing_token=p.fencing_token, expires_at_us=_expiry_us(ctx))


def _write_signal(ctx: _Ctx, target: OrchestrationState | None) -> Generator[Op, Any, None]:
    """Before raising the event to an existing instance: this request's signal entry,
    "pending". The start entry is left as it is (a signal creates nothing)."""
    rid = ctx.call.request_id
    assert rid is not None
    base = _base_record(ctx)
    yield from _put_request(
        ctx, dataclasses.replace(base, signals=base.with_signal(rid, "pending", created_us(target))), must=True
    )
    ctx.progress.noting = "signal"


def _note_event(ctx: _Ctx, event: str) -> Generator[Op, Any, None]:
    """Update this call's request record with what became of its event (lease still held).

    Best effort: if it cannot be written the record still says "pending", and a retry
    with the same request ID is told the event may have been delivered (never raised twice).
    """
    p = ctx.progress
    rid = ctx.call.request_id
    if rid is None or ctx.call.signal is None or p.stored is None or p.noting is None:
        return
    if p.noting == "start":
        if p.stored.request_id != rid or p.stored.event == event:
            return
        record = dataclasses.replace(p.stored, event=event)
    else:
        entry = p.stored.signal(rid)
        if entry is None or entry[1] == event:
            return
        record = dataclasses.replace(p.stored, signals=p.stored.with_signal(rid, event, entry[2]))
    yield from _put_request(ctx, record, must=False)


def _restore_request(ctx: _Ctx) -> Generator[Op, Any, None]:
    """Nothing was created after all (a refused or unsent schedule): put back the record the
    store held before this call's (under this lease's token), so an earlier request still
    knows its instance. Best effort."""
    p = ctx.progress
    if p.noting != "start":
        return
    assert p.fencing_token is not None
    if p.earlier is None:
        now_us = epoch_us(ctx.wall_clock())
        signals = p.stored.signals if p.stored is not None else ()
        record = RequestRecord(None, p.fencing_token, now_us, None, "start", "", _expiry_us(ctx), signals)
    else:
        record = dataclasses.replace(p.earlier, fencing_token=p.fencing_token, expires_at_us=_expiry_us(ctx))
        if p.stored is not None:  # keep signal entries written since (none in practice)
            record = dataclasses.replace(record, signals=p.stored.signals)
    p.noting = None
    yield from _put_request(ctx, record, must=False)


def _remembered(ctx: _Ctx, grant: Grant) -> RequestRecord | None:
    """The store's request record, unless expired (``None`` without a request ID)."""
    record = grant.last_request
    if ctx.call.request_id is None or record is None:
        return None
    if record.expires_at_us + round(ctx.cfg.clock_skew * 1_000_000) < epoch_us(ctx.wall_clock()):
        return None
    return record


def _shows_request(state: OrchestrationState | None, record: RequestRecord, skew: float) -> bool:
    """Whether ``state`` is the instance the record's start created: an instance strictly newer
    than the one that start replaced (an active instance with the replaced one's creation time
    is not proof here: it may be that one, resumed or read stale, which the request did not
    create). The record names the latest start sent under the lease (later starts leave a
    tombstone first), so a newer instance is that start's own; its creation time is not also
    compared with the send time, which a backend clock off by more than ``clock_skew`` would
    fail, and the retry would then run the request a second time."""
    created = created_us(state)
    previous = record.previous_created_us
    return created is not None and (previous is None or created > previous)


def _indistinguishable(state: OrchestrationState | None, record: RequestRecord) -> bool:
    """Whether ``state`` may be the instance the record's start created although it has the
    creation time of the instance that start replaced: both fall on the same whole second,
    as every time does on a client with one-second resolution (Durable Functions), where a
    replacement made within the second looks unchanged. With finer times (durabletask's gRPC
    clients: microseconds) the same time means the same instance; a time that falls exactly
    on a whole second there (one in a million) is taken as ambiguous too, which only costs a
    refusal, never a second start."""
    created = created_us(state)
    return created is not None and created == record.previous_created_us and created % 1_000_000 == 0


def _confirm_retry(ctx: _Ctx, lease: LeaseClock) -> Generator[Op, Any, None]:
    """The record is the latest request only if nobody else held the lease since we took
    it: confirm it (as before a schedule) before a retry claims anything (found by the
    explorer: a retry whose lease expired before its read claimed another caller's instance)."""
    reason = yield from _keep(ctx, lease, confirm=True)
    if reason is not None:
        raise ctx.lost(f"{reason} before answering a retry; nothing was sent")


def _retried(
    ctx: _Ctx, lease: LeaseClock, grant: Grant, state: OrchestrationState | None
) -> Generator[Op, Any, FlowResult | None]:
    """A retry of a request the store remembers: the earlier call's answer, or ``None`` to go on.

    The record's start entry names the latest request whose start was sent under the lease
    (later starts leave tombstones first), so an instance that shows that start (created
    after it was sent, and newer than the instance it replaced) is the one it created. That
    wins over every policy: a retry never fails on, terminates or replaces its own instance.
    Signal entries say what became of a ``start_or_signal``'s event to an existing instance.
    Holding the lease; raises only after releasing it.
    """
    record = _remembered(ctx, grant)
    rid = ctx.call.request_id
    if record is None or rid is None:
        return None
    signal = ctx.call.signal is not None
    started = record.request_id == rid and _shows_request(state, record, ctx.cfg.clock_skew)
    if record.request_id == rid and not started and _indistinguishable(state, record):
        yield from _release(ctx)
        raise ScheduleError(
            f"cannot tell whether the earlier call with request_id {rid!r} created this instance: its creation "
            "time is the same whole second as the instance that request replaced (a client whose times have "
            "one-second resolution, as Durable Functions'); nothing was started, so the request is never run "
            "twice. Check the instance (its input or output), or use a new request_id to start it anyway",
            instance_id=ctx.iid,
            backend=ctx.backend,
            maybe_scheduled=True,
        )
    entry = record.signal(rid) if signal else None
    if started:
        outcome, event = StartOutcome.STARTED, record.event if signal else "raised"
    elif entry is not None and entry[1] != "not-raised":
        outcome, event = StartOutcome.SIGNALED, entry[1]
    else:
        return None  # nothing this request did is known: go on as a new request
    yield from _confirm_retry(ctx, lease)
    if event in ("", "not-raised"):  # this request's instance; its event was surely never raised

        def owed_event() -> Generator[Op, Any, None]:
            base = _base_record(ctx)
            yield from _put_request(ctx, dataclasses.replace(base, event="pending"), must=True)
            ctx.progress.noting = "start"
            yield from _signal(ctx, started=False)

        yield from _released_after(ctx, owed_event())
        return ctx.done(outcome, state, record.fencing_token, deduplicated=True)
    yield from _release(ctx)
    if event == "pending":
        assert ctx.call.signal is not None
        raise SignalError(
            f"an earlier call with request_id {rid!r} was raising event {ctx.call.signal[0]!r} "
            "and may have delivered it; not raised again (use a new request_id to send it anyway)",
            instance_id=ctx.iid,
            backend=ctx.backend,
            maybe_delivered=True,
            started=False,
        )
    return ctx.done(outcome, state, record.fencing_token, deduplicated=True)


def _answered(
    ctx: _Ctx, answer: StartOutcome, state: OrchestrationState | None, fencing_token: int | None = None
) -> Generator[Op, Any, FlowResult]:
    """The answer for an existing instance; with ``start_or_signal`` an active one gets the event."""
    if answer is StartOutcome.ALREADY_RUNNING and ctx.call.signal is not None:
        yield from _signal(ctx, started=False)
        return ctx.done(StartOutcome.SIGNALED, state, fencing_token)
    return ctx.done(answer, state, fencing_token)


def _signal_remembered(
    ctx: _Ctx, state: OrchestrationState | None, fencing_token: int
) -> Generator[Op, Any, FlowResult]:
    """``start_or_signal`` with a request ID on an active instance: record, raise, note, release.

    The request record is left before the event is raised (a store that cannot take it
    means nothing is raised), so a retry with the same request ID never raises it twice.
    """

    def signalled() -> Generator[Op, Any, None]:
        yield from _write_signal(ctx, state)
        yield from _signal(ctx, started=False)

    yield from _released_after(ctx, signalled())
    return ctx.done(StartOutcome.SIGNALED, state, fencing_token)


def _began_with(ctx: _Ctx, state: OrchestrationState) -> bool:
    """``TERMINATE_EXISTING``: whether the active ``state`` is the instance that was active when
    this call began (its first read, before any lease), so this call is to replace it.

    Decided by identity, not by comparing clocks: the same creation time as the instance
    read at the beginning (a replacement is always created later). Where creation times
    have one-second resolution (Durable Functions) a replacement made within the same
    second looks the same, so a start record showing that an instance with that creation
    time was replaced since counts too: it is then this wave's replacement, not replaced again.
    """
    began = ctx.at_begin
    if not is_active(began) or created_us(began) != created_us(state):
        return False
    record = ctx.last_start
    return record is None or record.previous_created_us != created_us(began)


def _terminate(
    ctx: _Ctx, lease: LeaseClock, state: OrchestrationState
) -> Generator[Op, Any, OrchestrationState | None]:
    """Terminate the active instance and wait, keeping the lease, until a read shows it finished.

    The lease is confirmed first, as before a schedule: a terminate sent on a read that outlived
    the lease could end an instance another holder has started since. A terminate whose answer
    is ambiguous (cut at its deadline, connection lost) may still be executed: the lease is kept
    while watching for the instance to end for ``ambiguity_timeout`` at least, so that a late
    terminate never lands on a replacement someone else started after we let go.
    """
    reason = yield from _keep(ctx, lease, confirm=True)
    if reason is not None:
        raise ctx.lost(f"{reason} before terminating; nothing was terminated or started")
    window = ctx.call.terminate_timeout
    ambiguous = False
    p = ctx.progress
    # From here a terminate may be in flight: a call abandoned before it has seen the instance
    # end keeps watching (see _abandon), or the terminate could land on a later replacement.
    p.terminating = ctx.clock() + max(window, ctx.cfg.ambiguity_timeout)
    try:
        why = f"replaced by a strict-singleton start (fencing token {ctx.progress.fencing_token})"
        yield Terminate(ctx.iid, why, _send_by(ctx))
    except Exception as exc:
        code = rpc_code(exc)
        if isinstance(exc, NotSent) or not (code is None or code in AMBIGUOUS_CODES):
            p.terminating = None  # surely not executed
            raise TerminateError(
                f"terminating the active instance failed; nothing was started: {type(exc).__name__}: {exc}",
                instance_id=ctx.iid,
                backend=ctx.backend,
            ) from exc
        ambiguous = True
        window = max(window, ctx.cfg.ambiguity_timeout)
        _log.warning("terminate of %r failed ambiguously (%s); watching for it to end", ctx.iid, code)
    current, ended = yield from _reread_until(
        ctx,
        lease,
        ctx.clock() + window,
        lambda s: not is_active(s),
        waiting_for="the terminated instance to end; nothing was started",
        tolerant=True,
    )
    p.terminating = None
    if not ended:
        late = " (ambiguity_timeout: the terminate request's answer was lost)" if ambiguous else ""
        raise TerminateError(
            f"the instance did not end within terminate_timeout={ctx.call.terminate_timeout:g}s{late} after it "
            "was asked to terminate; nothing was started (it may still end later)",
            instance_id=ctx.iid,
            backend=ctx.backend,
        )
    return current


def _start(ctx: _Ctx) -> Flow:
    call, cfg, clock, p = ctx.call, ctx.cfg, ctx.clock, ctx.progress
    wait_until = ctx.t0 + cfg.wait
    seen: OrchestrationState | None = None
    woken = False
    if call.on_conflict is ConflictPolicy.TERMINATE_EXISTING:
        # What "the instance running when this call began" is: read before any lease, so every
        # call of a wave that began before the replacement shares it (and no later one does).
        ctx.at_begin = yield from _read(ctx)
    # A call with a request ID decides only under the lease: an instance seen without it
    # may be the one an earlier call with that request ID created (a retry's answer).
    lockless = call.request_id is None
    while True:
        if woken and lockless:
            # After a wake-up the holder has most likely finished: one read answers
            # most callers without touching the lock at all.
            seen = yield from _read(ctx)
            answer = _existing_answer(ctx, seen)
            if answer is not None:
                return (yield from _answered(ctx, answer, seen))
        granted_at = clock()
        p.may_hold = True  # a cancelled acquire may have been granted: release (token-checked) on abandon
        try:
            grant: Grant | None = yield Acquire(ctx.iid, ctx.token, cfg.lease_ttl)
        except LockUnavailableError:
            yield from _release(ctx)  # the store may have granted it before failing: token-checked
            raise
        if grant is not None:
            break
        p.may_hold = False
        left = wait_until - clock()
        if left <= 0:
            if not woken and lockless:  # one look before giving up: an existing instance may be an answer
                seen = yield from _read(ctx)
                answer = _existing_answer(ctx, seen)
                if answer is not None:
                    return (yield from _answered(ctx, answer, seen))
            return ctx.done(StartOutcome.BUSY, seen)
        # Someone holds the lease. In a start wave the holder has not scheduled yet, so
        # reading now would be wasted load on the backend: wait for its release first,
        # briefly, then read (a holder that is stuck costs at most FIRST_WAIT before an
        # already active instance is answered ALREADY_RUNNING).
        before_wait = clock()
        yield WaitRelease(ctx.iid, left if woken else min(left, FIRST_WAIT))
        ctx.waited += clock() - before_wait
        woken = True

    lease = p.lease = LeaseClock(granted_at=granted_at, valid_for=grant.valid_for)
    p.fencing_token = grant.fencing_token
    ctx.last_start = grant.last_start
    p.earlier = p.stored = grant.last_request
    replaced: OrchestrationState | None = None
    try:
        state = yield from _read(ctx)
        if grant.last_start is not None:
            state = yield from _await_record(ctx, lease, grant, state)
        p.previous = state
        retried = yield from _retried(ctx, lease, grant, state)
        if retried is not None:
            return retried
        try:
            answer = _existing_answer(ctx, state)
        except AlreadyRunningError:
            yield from _release(ctx)
            raise
        if answer is StartOutcome.ALREADY_RUNNING and call.signal is not None and call.request_id is not None:
            return (yield from _signal_remembered(ctx, state, grant.fencing_token))
        if answer is not None:
            yield from _release(ctx)
            return (yield from _answered(ctx, answer, state, grant.fencing_token))
        if is_active(state):  # TERMINATE_EXISTING on an instance older than this call
            replaced = state
            assert state is not None
            state = p.previous = yield from _terminate(ctx, lease, state)
        if call.request_id is not None or (
            grant.last_request is not None and grant.last_request.request_id is not None
        ):
            # Before sending: this start's request ID, or a tombstone over an earlier one.
            event = "pending" if call.signal is not None else ""
            yield from _write_start(ctx, call.request_id, event=event, previous_us=created_us(state))
        reason = yield from _keep(ctx, lease, confirm=True)
        if reason is not None:
            raise ctx.lost(f"{reason} before scheduling; nothing was scheduled")
    except (LeaseLostError, StatusReadError, LockUnavailableError, TerminateError):
        yield from _release(ctx)  # token-checked: frees it only if still ours
        raise

    now = clock()
    remaining = lease.remaining(now)
    send_by = None if remaining is None else now + remaining - cfg.send_reserve
    tags = {**call.tags, FENCING_TAG: str(grant.fencing_token)}
    if call.request_id is not None:
        tags[REQUEST_ID_TAG] = call.request_id
    p.sent_at = ctx.wall_clock()
    try:
        yield Schedule(call, tags, send_by)
    except NotSent:
        p.sent_at = None
        yield from _restore_request(ctx)
        yield from _release(ctx)
        raise ctx.lost("the lease's deadline passed before the request could be sent; nothing was scheduled") from None
    except Exception as exc:
        code = rpc_code(exc)
        if code == "ALREADY_EXISTS":
            # The backend's own dedupe caught a duplicate our lease did not prevent.
            p.sent_at = None
            try:
                existing = yield ctx.read()
            except Exception:
                existing = None
            if call.request_id is not None:
                # Nothing of ours was created: the earlier record is still the truth, and the
                # existing instance may be this request's own (an earlier call's late start).
                yield from _restore_request(ctx)
                try:
                    retried = yield from _retried(ctx, lease, grant, existing)
                except (LeaseLostError, LockUnavailableError):
                    yield from _release(ctx)
                    raise
                if retried is not None:
                    return retried
                if call.signal is not None and is_active(existing) and call.on_conflict is not ConflictPolicy.FAIL:
                    return (yield from _signal_remembered(ctx, existing, grant.fencing_token))
            yield from _release(ctx)
            # Active (or not readable): running; finished: the reuse policy forbade replacing it.
            finished = existing is not None and not is_active(existing)
            if not finished and ctx.call.on_conflict is ConflictPolicy.FAIL:
                raise AlreadyRunningError(
                    "the backend reports the instance exists and on_conflict=FAIL; nothing was scheduled",
                    instance_id=ctx.iid,
                    backend=ctx.backend,
                    existing=existing,
                ) from exc
            outcome = StartOutcome.ALREADY_COMPLETED if finished else StartOutcome.ALREADY_RUNNING
            return (yield from _answered(ctx, outcome, existing, grant.fencing_token))
        ambiguous = code is None or code in AMBIGUOUS_CODES
        detail = f"schedule call failed ({code or type(exc).__name__}): {exc}"
        if ambiguous:
            ours_sent = p.sent_at
            ours, reason = yield from _watch(ctx, lease)
            p.sent_at = None
            if ours is not None:
                _log.info("schedule of %r failed ambiguously (%s) but the instance was created", ctx.iid, code)
                p.started = Hold(lease, p.previous, ours_sent, ctx.token, grant.fencing_token)
                if call.signal is not None:
                    # under the lease, so the request record can note the event
                    yield from _released_after(ctx, _signal(ctx, started=True))
                else:
                    yield from _let_go(ctx)
                return ctx.done(StartOutcome.STARTED, None, grant.fencing_token, replaced=replaced)
            yield from _note_event(ctx, "not-raised")  # start_or_signal: its event was never raised
            yield from _release(ctx)
            why = reason or f"the instance did not show up within ambiguity_timeout={cfg.ambiguity_timeout:g}s"
            detail = f"{detail}; {why}; the backend may still create it"
        else:
            p.sent_at = None
            yield from _restore_request(ctx)
            yield from _release(ctx)
        if ambiguous and call.request_id is not None:
            detail += f"; retry with request_id={call.request_id!r} to find out (a retry never starts it twice)"
        raise ScheduleError(
            detail, instance_id=call.instance_id, backend=ctx.backend, maybe_scheduled=ambiguous, grpc_code=code
        ) from exc
    hold = Hold(lease=lease, previous=state, sent_at=p.sent_at, token=ctx.token, fencing_token=grant.fencing_token)
    p.started, p.sent_at = hold, None
    if call.signal is not None:
        # The start's record first, keeping the lease (one round trip): whatever the event's
        # RPC does (slow past the lease, cancelled, failed), a later caller inside the status
        # lag waits for this start instead of starting again.
        if cfg.confirm_visible and cfg.start_records:
            yield from _record_start(ctx, lease, cfg.visibility_timeout)
        try:
            yield from _signal(ctx, started=True)
        except SignalError as exc:
            # The instance is ours: the driver still finishes (releases with its record), then raises this.
            p.started = None
            started = ctx.done(StartOutcome.STARTED, None, grant.fencing_token, hold, replaced=replaced)
            started.error = exc
            return started
    p.started = None
    return ctx.done(StartOutcome.STARTED, None, grant.fencing_token, hold, replaced=replaced)


def finish_flow(
    call: StartCall,
    cfg: StarterConfig,
    hold: Hold,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], datetime] | None = None,
    backend: str = "",
) -> FinishFlow:
    """Step 7: release with a start record; else hold the lease until the new instance is visible.

    With ``cfg.start_records`` the lease is released at once, leaving a record of the
    start for ``visibility_timeout``. If the store could not take it (unavailable),
    or without records, the lease is held (renewed) until a read shows the instance,
    then released. Bounded on every backend: after ``visibility_timeout`` the lease is released even
    if the instance never showed (logged as a warning), and a lease that could not be
    kept is released too (token-checked, so harmless if it is someone else's now).
    :class:`Abandoned` thrown in at any point is absorbed: the flow goes on.
    """
    wall = wall_clock if wall_clock is not None else (lambda: hold.sent_at)
    ctx = _Ctx(call=call, cfg=cfg, token=hold.token, backend=backend, clock=clock, wall_clock=wall)
    ctx.progress.may_hold = True
    yield from _finish(ctx, hold)


def _finish(ctx: _Ctx, hold: Hold) -> FinishFlow:
    """:func:`finish_flow`'s steps, for any flow holding the lease after a start of its own."""
    cfg, call, clock = ctx.cfg, ctx.call, ctx.clock
    if cfg.confirm_visible and cfg.start_records and (yield from _release_recording(ctx, hold)):
        return
    if cfg.confirm_visible:
        until = clock() + cfg.visibility_timeout
        delay = 0.002
        while True:
            try:
                reason = yield from _keep(ctx, hold.lease, confirm=False)
            except Abandoned:
                continue
            if reason is not None:
                _log.warning("lost the lease for %r while waiting for visibility: %s", call.instance_id, reason)
                break
            try:
                state = yield ctx.read(payloads=False, lease=hold.lease)  # only created_at matters here
            except (Exception, Abandoned) as exc:
                state = None
                _log.debug("visibility read for %r failed: %r", call.instance_id, exc)
            if is_ours(state, hold.previous, hold.sent_at, cfg.clock_skew):
                break
            left = until - clock()
            if left <= 0:
                _log.warning(
                    "instance %r not visible after %.1fs; releasing the lease (visibility_timeout)",
                    call.instance_id,
                    cfg.visibility_timeout,
                )
                break
            with contextlib.suppress(Abandoned):
                yield Sleep(_pause(ctx, delay, left))
            delay = min(delay * 2, MAX_POLL)
    for _attempt in range(2):  # an abandoned release is tried once more (token-checked)
        try:
            yield from _release(ctx)
            break
        except Abandoned:
            continue
