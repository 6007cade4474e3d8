"""One start, from the first lease attempt to the caller's answer, in named steps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import (
    context,
    events,
    evidence,
    finish,
    keeping,
    ops,
    request_records,
    retry,
    start_records,
    terminate,
    watch,
)
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
from strict_singleton.lock_backends.base import Grant
from strict_singleton.policies import ConflictPolicy
from strict_singleton.result import StartOutcome

_log = logging.getLogger("strict_singleton")


def start_flow(
    call: StartCall,
    cfg: StarterConfig,
    *,
    token: str,
    backend: str,
    clock: Callable[[], float],
    wall_clock: Callable[[], datetime],
    notes: context.Notes | None = None,
) -> context.Flow:
    """One start, from the first lease attempt to the caller's answer; ``notes`` (written, never
    read) receives what it went through, for metrics."""
    ctx = context.Ctx(
        call=call,
        cfg=cfg,
        token=token,
        backend=backend,
        clock=clock,
        wall_clock=wall_clock,
        t0=clock(),
        notes=notes if notes is not None else context.Notes(),
    )
    try:
        return (yield from _start(ctx))
    except ops.Abandoned:
        yield from _abandon(ctx)
        raise
    except Exception:
        # Every documented error has released (or watched, then released) already: this is a
        # no-op for them. Anything else thrown into the flow (a SIGINT handler of the user's that
        # raises its own exception during a wait, say) is cleaned up as an abandonment is.
        yield from _abandon(ctx)
        raise


def _abandon(ctx: context.Ctx) -> Generator[ops.Op, Any, None]:
    p = ctx.progress
    if p.terminating is not None and p.lease is not None and p.may_hold:
        until, p.terminating = p.terminating, None
        try:  # the terminate may still land: keep the lease until the instance is seen ended
            yield from keeping.reread_until(
                ctx, p.lease, until, lambda s: not evidence.is_active(s), waiting_for="a terminate", tolerant=True
            )
        except (StrictSingletonError, ops.Abandoned) as exc:
            _log.warning("abandoned start of %r stopped watching its terminate: %r", ctx.iid, exc)
    if p.sent_at is not None and p.lease is not None:
        state, reason = yield from watch.watch(ctx, p.lease)
        if state is not None and p.fencing_token is not None:
            p.started = context.Hold(p.lease, p.previous, p.sent_at, ctx.token, p.fencing_token)
        _log.warning(
            "start of %r abandoned while its schedule request was in flight: %s",
            ctx.iid,
            "the instance was created" if state is not None else reason or "the instance did not show up",
        )
        if state is None and reason is None:
            yield from request_records.note_event(ctx, "not-raised")  # start_or_signal: its event was never raised
    yield from finish.let_go(ctx)


def _existing_answer(ctx: context.Ctx, state: OrchestrationState | None) -> StartOutcome | None:
    """What an instance seen in a read means for this call; ``None``: a start may go ahead.

    An active instance: ALREADY_RUNNING, or :class:`AlreadyRunningError` under
    ``ConflictPolicy.FAIL``. A finished one the call's reuse policy does not allow
    replacing: ALREADY_COMPLETED. Raises only; the caller releases a held lease first.
    """
    if state is None:
        return None
    if evidence.is_active(state):
        if ctx.call.on_conflict is ConflictPolicy.TERMINATE_EXISTING:
            # One replacement per wave: the instance that was active when this call began is
            # replaced, however young; any other is the wave's replacement, this call's answer.
            return None if terminate._began_with(ctx, state) else StartOutcome.ALREADY_RUNNING
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


def _start(ctx: context.Ctx) -> context.Flow:
    """Steps 2 to 6: take the lease, decide under it, send, answer."""
    if ctx.call.on_conflict is ConflictPolicy.TERMINATE_EXISTING:
        # What "the instance running when this call began" is: read before any lease, so every
        # call of a wave that began before the replacement shares it (and no later one does).
        ctx.at_begin = yield from keeping.read(ctx)
    taken = yield from _take_lease(ctx)
    if isinstance(taken, context.FlowResult):
        return taken
    grant = taken
    p = ctx.progress
    lease = p.lease
    assert lease is not None
    try:
        decided = yield from _decide(ctx, lease, grant)
    except (LeaseLostError, StatusReadError, LockUnavailableError, TerminateError):
        yield from keeping.release(ctx)  # token-checked: frees it only if still ours
        raise
    if isinstance(decided, context.FlowResult):
        return decided
    state, replaced = decided
    return (yield from _send(ctx, lease, grant, state, replaced))


def _take_lease(ctx: context.Ctx) -> Generator[ops.Op, Any, Grant | context.FlowResult]:
    """Step 2: acquire the lease, waiting for a holder's release up to ``wait``.

    Returns the grant (``ctx.progress.lease`` then counts its validity), or the answer
    when the call is settled without it: an existing instance read after a wake-up, or
    BUSY once ``wait`` has passed.
    """
    call, cfg, clock, p = ctx.call, ctx.cfg, ctx.clock, ctx.progress
    wait_until = ctx.t0 + cfg.wait
    seen: OrchestrationState | None = None
    woken = False
    # A call with a request ID decides only under the lease: an instance seen without it
    # may be the one an earlier call with that request ID created (a retry's answer).
    lockless = call.request_id is None
    ctx.notes.lease_asked = True
    while True:
        if woken and lockless:
            # After a wake-up the holder has most likely finished: one read answers
            # most callers without touching the lock at all.
            seen = yield from keeping.read(ctx)
            answer = _existing_answer(ctx, seen)
            if answer is not None:
                return (yield from events.answered(ctx, answer, seen))
        granted_at = clock()
        p.may_hold = True  # a cancelled acquire may have been granted: release (token-checked) on abandon
        try:
            grant: Grant | None = yield ops.Acquire(ctx.iid, ctx.token, cfg.lease_ttl)
        except LockUnavailableError:
            yield from keeping.release(ctx)  # the store may have granted it before failing: token-checked
            raise
        if grant is not None:
            p.lease = context.LeaseClock(granted_at=granted_at, valid_for=grant.valid_for)
            p.fencing_token = grant.fencing_token
            ctx.last_start = grant.last_start
            p.earlier = p.stored = grant.last_request
            return grant
        p.may_hold = False
        left = wait_until - clock()
        if left <= 0:
            if not woken and lockless:  # one look before giving up: an existing instance may be an answer
                seen = yield from keeping.read(ctx)
                answer = _existing_answer(ctx, seen)
                if answer is not None:
                    return (yield from events.answered(ctx, answer, seen))
            return ctx.done(StartOutcome.BUSY, seen)
        # Someone holds the lease. In a start wave the holder has not scheduled yet, so
        # reading now would be wasted load on the backend: wait for its release first,
        # briefly, then read (a holder that is stuck costs at most FIRST_WAIT before an
        # already active instance is answered ALREADY_RUNNING).
        before_wait = clock()
        try:
            yield ops.WaitRelease(ctx.iid, left if woken else min(left, context.FIRST_WAIT))
        finally:  # a wait cut short (cancelled, interrupted, failed) counts too
            ctx.notes.lease_waited += clock() - before_wait
        woken = True


def _decide(
    ctx: context.Ctx, lease: context.LeaseClock, grant: Grant
) -> Generator[ops.Op, Any, context.FlowResult | tuple[OrchestrationState | None, OrchestrationState | None]]:
    """Steps 3 and 4, under the lease: what the instance's status means for this call.

    Returns the answer when the call is settled without a start (an existing instance, a
    retry's own instance), else ``(state, replaced)``: the status the start goes ahead on
    and the instance ``TERMINATE_EXISTING`` ended for it, with the lease confirmed and a
    request record (or a tombstone) left. Raises with the lease still held; the caller
    releases it.
    """
    call, p = ctx.call, ctx.progress
    state = yield from keeping.read(ctx)
    if grant.last_start is not None:
        state = yield from start_records.await_record(ctx, lease, grant, state)
    p.previous = state
    retried = yield from retry.retried(ctx, lease, grant, state)
    if retried is not None:
        return retried
    try:
        answer = _existing_answer(ctx, state)
    except AlreadyRunningError:
        yield from keeping.release(ctx)
        raise
    if answer is StartOutcome.ALREADY_RUNNING and call.signal is not None and call.request_id is not None:
        return (yield from events.signal_remembered(ctx, state, grant.fencing_token))
    if answer is not None:
        yield from keeping.release(ctx)
        return (yield from events.answered(ctx, answer, state, grant.fencing_token))
    replaced: OrchestrationState | None = None
    if evidence.is_active(state):  # TERMINATE_EXISTING on an instance older than this call
        assert state is not None
        replaced = state
        state = p.previous = yield from terminate.terminate(ctx, lease, state)
    if call.request_id is not None or (grant.last_request is not None and grant.last_request.request_id is not None):
        # Before sending: this start's request ID, or a tombstone over an earlier one.
        event = "pending" if call.signal is not None else ""
        yield from request_records.write_start(
            ctx, call.request_id, event=event, previous_us=evidence.created_us(state)
        )
    yield from keeping.confirm_before_sending(ctx, lease, before="scheduling; nothing was scheduled")
    return state, replaced


def _send(
    ctx: context.Ctx,
    lease: context.LeaseClock,
    grant: Grant,
    state: OrchestrationState | None,
    replaced: OrchestrationState | None,
) -> context.Flow:
    """Step 5: send the schedule request before the lease's send-by time; then the answer."""
    call, p = ctx.call, ctx.progress
    tags = {**call.tags, FENCING_TAG: str(grant.fencing_token)}
    if call.request_id is not None:
        tags[REQUEST_ID_TAG] = call.request_id
    send_by = context.send_by(ctx, lease)
    p.sent_at = ctx.wall_clock()
    try:
        yield ops.Schedule(call, tags, send_by)
    except ops.NotSent:
        p.sent_at = None
        yield from request_records.restore_request(ctx)
        yield from keeping.release(ctx)
        raise ctx.lost("the lease's deadline passed before the request could be sent; nothing was scheduled") from None
    except Exception as exc:
        code = evidence.rpc_code(exc)
        if code == "ALREADY_EXISTS":
            return (yield from _already_exists(ctx, lease, grant, exc))
        return (yield from _schedule_failed(ctx, lease, grant, exc, code, replaced))
    return (yield from _started(ctx, lease, grant, state, replaced))


def _already_exists(ctx: context.Ctx, lease: context.LeaseClock, grant: Grant, exc: Exception) -> context.Flow:
    """The backend's own dedupe caught a duplicate our lease did not prevent: nothing of ours
    was created; the answer is the instance that exists."""
    call, p = ctx.call, ctx.progress
    p.sent_at = None
    try:
        existing = yield ctx.read()
    except Exception:
        existing = None
    if call.request_id is not None:
        # Nothing of ours was created: the earlier record is still the truth, and the
        # existing instance may be this request's own (an earlier call's late start).
        yield from request_records.restore_request(ctx)
        try:
            retried = yield from retry.retried(ctx, lease, grant, existing)
        except (LeaseLostError, LockUnavailableError):
            yield from keeping.release(ctx)
            raise
        if retried is not None:
            return retried
        if call.signal is not None and evidence.is_active(existing) and call.on_conflict is not ConflictPolicy.FAIL:
            return (yield from events.signal_remembered(ctx, existing, grant.fencing_token))
    yield from keeping.release(ctx)
    # Active (or not readable): running; finished: the reuse policy forbade replacing it.
    finished = existing is not None and not evidence.is_active(existing)
    if not finished and call.on_conflict is ConflictPolicy.FAIL:
        raise AlreadyRunningError(
            "the backend reports the instance exists and on_conflict=FAIL; nothing was scheduled",
            instance_id=ctx.iid,
            backend=ctx.backend,
            existing=existing,
        ) from exc
    outcome = StartOutcome.ALREADY_COMPLETED if finished else StartOutcome.ALREADY_RUNNING
    return (yield from events.answered(ctx, outcome, existing, grant.fencing_token))


def _schedule_failed(
    ctx: context.Ctx,
    lease: context.LeaseClock,
    grant: Grant,
    exc: Exception,
    code: str | None,
    replaced: OrchestrationState | None,
) -> context.Flow:
    """Step 6: a failed schedule. A refusal released at once; an ambiguous failure keeps the
    lease and watches for the instance the request may still create (STARTED if it shows)."""
    call, cfg, p = ctx.call, ctx.cfg, ctx.progress
    ambiguous = code is None or code in evidence.AMBIGUOUS_CODES
    detail = f"schedule call failed ({code or type(exc).__name__}): {exc}"
    if ambiguous:
        ours_sent = p.sent_at
        assert ours_sent is not None
        ours, reason = yield from watch.watch(ctx, lease)
        p.sent_at = None
        if ours is not None:
            _log.info("schedule of %r failed ambiguously (%s) but the instance was created", ctx.iid, code)
            p.started = context.Hold(lease, p.previous, ours_sent, ctx.token, grant.fencing_token)
            if call.signal is not None:
                # under the lease, so the request record can note the event
                yield from finish.released_after(ctx, events.signal(ctx, started=True))
            else:
                yield from finish.let_go(ctx)
            return ctx.done(StartOutcome.STARTED, None, grant.fencing_token, replaced=replaced)
        yield from request_records.note_event(ctx, "not-raised")  # start_or_signal: its event was never raised
        yield from keeping.release(ctx)
        why = reason or f"the instance did not show up within ambiguity_timeout={cfg.ambiguity_timeout:g}s"
        detail = f"{detail}; {why}; the backend may still create it"
    else:
        p.sent_at = None
        yield from request_records.restore_request(ctx)
        yield from keeping.release(ctx)
    if ambiguous and call.request_id is not None:
        detail += f"; retry with request_id={call.request_id!r} to find out (a retry never starts it twice)"
    raise ScheduleError(
        detail, instance_id=call.instance_id, backend=ctx.backend, maybe_scheduled=ambiguous, grpc_code=code
    ) from exc


def _started(
    ctx: context.Ctx,
    lease: context.LeaseClock,
    grant: Grant,
    state: OrchestrationState | None,
    replaced: OrchestrationState | None,
) -> context.Flow:
    """Our schedule created the instance: STARTED, holding the lease for the finish (step 7);
    ``start_or_signal`` raises its event to the new instance first."""
    call, cfg, p = ctx.call, ctx.cfg, ctx.progress
    assert p.sent_at is not None
    hold = context.Hold(
        lease=lease, previous=state, sent_at=p.sent_at, token=ctx.token, fencing_token=grant.fencing_token
    )
    p.started, p.sent_at = hold, None
    if call.signal is not None:
        # The start's record first, keeping the lease (one round trip): whatever the event's
        # RPC does (slow past the lease, cancelled, failed), a later caller inside the status
        # lag waits for this start instead of starting again.
        if cfg.confirm_visible and cfg.start_records:
            yield from start_records.record_start(ctx, lease, cfg.visibility_timeout)
        try:
            yield from events.signal(ctx, started=True)
        except SignalError as exc:
            # The instance is ours: the driver still finishes (releases with its record), then raises this.
            p.started = None
            started = ctx.done(StartOutcome.STARTED, None, grant.fencing_token, hold, replaced=replaced)
            started.error = exc
            return started
    p.started = None
    return ctx.done(StartOutcome.STARTED, None, grant.fencing_token, hold, replaced=replaced)
