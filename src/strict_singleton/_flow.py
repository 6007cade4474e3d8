"""The start algorithm, written once, without I/O.

``start_flow`` and ``finish_flow`` are generators that *yield* the I/O they need
(:class:`Acquire`, :class:`Read`, :class:`Schedule`, ...) and receive its result (or
have its exception thrown in). The sync and async starters are thin drivers that
execute those operations with blocking or awaiting calls, so both run the very same
decisions. Time comes from an injected monotonic clock.

Safety argument, step by step:

1. Arguments were validated before the flow runs (no lease taken for bad input).
2. The lease is acquired with a fresh random token. Its validity is counted from just
   *before* the acquire request was sent, minus a clock-drift allowance, so our
   deadline never outlives the store's.
3. Under the lease, the instance's status is read; an active instance is answered
   ALREADY_RUNNING and nothing is scheduled.
4. Before scheduling, the lease must have ``schedule_margin`` seconds of validity
   left (renewing it with a token-checked extend if needed). A lease whose deadline
   has passed is never renewed: a late renew can succeed on some stores even though
   someone else held the lease meanwhile. Then we raise ``LeaseLostError`` instead.
5. The schedule call passes a reuse policy that only replaces terminal instances, so
   a backend that dedupes atomically rejects a duplicate even if the lease failed;
   ALREADY_EXISTS becomes ALREADY_RUNNING.
6. After a successful schedule, the lease is held until the new instance is visible
   to a status read (``finish_flow``), so no later caller can read a stale "no
   instance" and start again. Then it is released with a token check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from durabletask.client import OrchestrationState, OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton._validation import FENCING_TAG, StartCall, StarterConfig
from strict_singleton.errors import BackendError, LeaseLostError, LockUnavailableError, ScheduleError
from strict_singleton.lock_backends.base import Grant
from strict_singleton.result import StartOutcome, StartResult

_log = logging.getLogger("strict_singleton")

# Statuses a new start may replace. Listing Running/Pending here would mean
# "terminate and replace", so only terminal statuses are listed.
REPLACEABLE_STATUSES: tuple[int, ...] = (
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CANCELED,
)
_TERMINAL = frozenset({OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED})


def reuse_policy() -> pb.OrchestrationIdReusePolicy:
    statuses: Any = list(REPLACEABLE_STATUSES)  # the generated stubs type enum fields loosely
    return pb.OrchestrationIdReusePolicy(replaceableStatus=statuses)


def is_active(state: OrchestrationState | None) -> bool:
    """An instance that exists and is not in a replaceable (terminal) status."""
    return state is not None and state.runtime_status not in _TERMINAL


def is_visible(state: OrchestrationState | None, previous: OrchestrationState | None) -> bool:
    """Whether a status read shows the instance we created (not the one we replaced)."""
    return state is not None and (previous is None or state.created_at != previous.created_at)


# gRPC codes after which the backend may or may not have created the instance.
_AMBIGUOUS_CODES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "UNKNOWN", "CANCELLED", "INTERNAL", "ABORTED"})


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
    """-> Grant | None"""


@dataclass(frozen=True, slots=True)
class Extend:
    """-> bool (still ours)"""


@dataclass(frozen=True, slots=True)
class Release:
    """-> bool"""


@dataclass(frozen=True, slots=True)
class WaitRelease:
    """-> None; wait up to ``timeout`` for the holder's release."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Read:
    """-> OrchestrationState | None; ``payloads=False`` skips inputs and outputs."""

    payloads: bool = True


@dataclass(frozen=True, slots=True)
class Schedule:
    """-> str; ``schedule_new_orchestration`` with the terminal-only reuse policy.

    ``deadline`` bounds the call to the lease's remaining validity (None: no expiry).
    """

    tags: dict[str, str]
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """-> None"""

    seconds: float


Op = Acquire | Extend | Release | WaitRelease | Read | Schedule | Sleep


# A caller that finds the lease held waits this long for the holder before its first read.
FIRST_WAIT = 0.05

# Clock-drift allowance subtracted from every lease's validity (as in Redlock / pottery).
DRIFT_FACTOR = 0.01
DRIFT_FLOOR = 0.002


@dataclass(slots=True)
class LeaseClock:
    """Our own view of a held lease's validity, on a monotonic clock."""

    granted_at: float  # clock reading taken just before the acquire/extend request was sent
    valid_for: float | None  # None: never expires while we live

    def remaining(self, now: float) -> float | None:
        if self.valid_for is None:
            return None
        drift = self.valid_for * DRIFT_FACTOR + DRIFT_FLOOR
        return self.granted_at + self.valid_for - drift - now

    def age(self, now: float) -> float:
        return now - self.granted_at


@dataclass(slots=True)
class Hold:
    """A lease still held after a successful schedule, for ``finish_flow``."""

    lease: LeaseClock
    previous: OrchestrationState | None
    fencing_token: int


@dataclass(slots=True)
class FlowResult:
    result: StartResult
    hold: Hold | None  # set when the driver must run finish_flow


Flow = Generator[Op, Any, FlowResult]
FinishFlow = Generator[Op, Any, None]


class _Ctx:
    """What one start's flow needs besides I/O."""

    def __init__(self, call: StartCall, cfg: StarterConfig, backend: str, clock: Callable[[], float]) -> None:
        self.call = call
        self.cfg = cfg
        self.backend = backend
        self.clock = clock
        self.t0 = clock()
        self.waited = 0.0

    def done(
        self,
        outcome: StartOutcome,
        existing: OrchestrationState | None = None,
        fencing_token: int | None = None,
        hold: Hold | None = None,
    ) -> FlowResult:
        result = StartResult(
            outcome=outcome,
            instance_id=self.call.instance_id,
            existing=existing,
            waited=self.waited,
            elapsed=self.clock() - self.t0,
            fencing_token=fencing_token,
            backend=self.backend,
        )
        return FlowResult(result=result, hold=hold)

    def lost(self, message: str) -> LeaseLostError:
        return LeaseLostError(message, instance_id=self.call.instance_id, backend=self.backend)


def _release_quietly(instance_id: str) -> Generator[Op, Any, None]:
    """Token-checked release whose failure only costs waiting for expiry."""
    try:
        yield Release()
    except LockUnavailableError as exc:
        _log.warning("release failed for %r; the lease will expire on its own: %s", instance_id, exc)


def _read_under_lease(ctx: _Ctx) -> Generator[Op, Any, OrchestrationState | None]:
    try:
        state: OrchestrationState | None = yield Read()
    except Exception as exc:
        yield from _release_quietly(ctx.call.instance_id)
        raise BackendError(
            f"status read failed; nothing was scheduled: {type(exc).__name__}: {exc}",
            instance_id=ctx.call.instance_id,
            backend=ctx.backend,
        ) from exc
    return state


def _read_unlocked(ctx: _Ctx) -> Generator[Op, Any, OrchestrationState | None]:
    try:
        state: OrchestrationState | None = yield Read()
    except Exception as exc:
        raise BackendError(
            f"status read failed; nothing was scheduled: {type(exc).__name__}: {exc}",
            instance_id=ctx.call.instance_id,
            backend=ctx.backend,
        ) from exc
    return state


def _ensure_validity(ctx: _Ctx, lease: LeaseClock) -> Generator[Op, Any, None]:
    """Step 4: enough validity left to schedule, renewing while it is safe to."""
    remaining = lease.remaining(ctx.clock())
    if remaining is None:
        return
    if remaining <= 0:
        raise ctx.lost("the lease may have expired before scheduling; nothing was scheduled")
    if remaining >= ctx.cfg.schedule_margin and lease.age(ctx.clock()) <= ctx.cfg.renew_after:
        return
    before = ctx.clock()
    if not (yield Extend()):
        raise ctx.lost("the lease is no longer ours (renewal refused); nothing was scheduled")
    lease.granted_at = before
    remaining = lease.remaining(ctx.clock())
    if remaining is not None and remaining < ctx.cfg.schedule_margin:
        raise ctx.lost("the renewed lease leaves too little time to schedule; nothing was scheduled")


def start_flow(call: StartCall, cfg: StarterConfig, *, backend: str, clock: Callable[[], float]) -> Flow:
    """One start, from the first lease attempt to the caller's answer."""
    ctx = _Ctx(call, cfg, backend, clock)
    wait_until = ctx.t0 + cfg.wait
    seen: OrchestrationState | None = None
    woken = False
    while True:
        if woken:
            # After a wake-up the holder has most likely finished: one read answers
            # most callers without touching the lock at all.
            seen = yield from _read_unlocked(ctx)
            if is_active(seen):
                return ctx.done(StartOutcome.ALREADY_RUNNING, seen)
        granted_at = clock()
        grant: Grant | None = yield Acquire()
        if grant is not None:
            break
        left = wait_until - clock()
        if left <= 0:
            if not woken:  # one look before giving up: an active instance is an answer
                seen = yield from _read_unlocked(ctx)
                if is_active(seen):
                    return ctx.done(StartOutcome.ALREADY_RUNNING, seen)
            return ctx.done(StartOutcome.BUSY, seen)
        # Someone holds the lease. In a start wave the holder has not scheduled yet, so
        # reading now would be wasted load on the backend: wait for its release first,
        # briefly, then read (a holder that is stuck costs at most FIRST_WAIT before an
        # already active instance is answered ALREADY_RUNNING).
        before_wait = clock()
        yield WaitRelease(left if woken else min(left, FIRST_WAIT))
        ctx.waited += clock() - before_wait
        woken = True

    lease = LeaseClock(granted_at=granted_at, valid_for=grant.valid_for)
    try:
        state = yield from _read_under_lease(ctx)
        if is_active(state):
            yield from _release_quietly(ctx.call.instance_id)
            return ctx.done(StartOutcome.ALREADY_RUNNING, state, grant.fencing_token)
        yield from _ensure_validity(ctx, lease)
    except LeaseLostError:
        yield from _release_quietly(ctx.call.instance_id)  # token-checked: frees it only if still ours
        raise

    tags = {**call.tags, FENCING_TAG: str(grant.fencing_token)}
    try:
        yield Schedule(tags, deadline=lease.remaining(clock()))
    except Exception as exc:
        code = rpc_code(exc)
        if code == "ALREADY_EXISTS":
            # The backend's own dedupe caught a duplicate our lease did not prevent.
            try:
                existing = yield Read()
            except Exception:
                existing = None
            yield from _release_quietly(ctx.call.instance_id)
            return ctx.done(StartOutcome.ALREADY_RUNNING, existing, grant.fencing_token)
        ambiguous = code is None or code in _AMBIGUOUS_CODES
        if not ambiguous:
            yield from _release_quietly(ctx.call.instance_id)
        # When ambiguous the lease is left to expire: if the instance was created,
        # nobody may read "no instance" and start a duplicate meanwhile.
        raise ScheduleError(
            f"schedule call failed ({code or type(exc).__name__}): {exc}",
            instance_id=call.instance_id,
            backend=backend,
            maybe_scheduled=ambiguous,
            grpc_code=code,
        ) from exc
    hold = Hold(lease=lease, previous=state, fencing_token=grant.fencing_token)
    return ctx.done(StartOutcome.STARTED, None, grant.fencing_token, hold)


def finish_flow(call: StartCall, cfg: StarterConfig, hold: Hold, *, clock: Callable[[], float]) -> FinishFlow:
    """Step 6 and 7: hold the lease until the new instance is visible, then release it.

    If it never becomes visible within ``visibility_timeout``, or the lease cannot be
    renewed meanwhile, the lease is left to expire rather than released early.
    """
    if cfg.confirm_visible:
        started = clock()
        delay = 0.002
        while True:
            try:
                state = yield Read(payloads=False)  # only created_at matters here
            except Exception as exc:
                state = None
                _log.debug("visibility read for %r failed: %r", call.instance_id, exc)
            if is_visible(state, hold.previous):
                break
            if clock() - started >= cfg.visibility_timeout:
                _log.warning(
                    "instance %r not visible after %.1fs; leaving the lease to expire",
                    call.instance_id,
                    cfg.visibility_timeout,
                )
                return
            if hold.lease.valid_for is not None and hold.lease.age(clock()) > cfg.renew_after:
                before = clock()
                try:
                    renewed = yield Extend()
                except LockUnavailableError:
                    renewed = False
                if not renewed:
                    _log.warning("lost the lease for %r while waiting for visibility", call.instance_id)
                    return
                hold.lease.granted_at = before
            yield Sleep(delay)
            delay = min(delay * 2, 0.05)
    yield from _release_quietly(call.instance_id)
