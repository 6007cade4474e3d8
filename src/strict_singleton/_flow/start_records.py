"""Start records: what a holder that scheduled leaves in the lock store, and how the next
holder waits until its status read shows that start (a lagging status index)."""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import datetime
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, keeping, ops
from strict_singleton.errors import (
    LockUnavailableError,
)
from strict_singleton.lock_backends.base import Grant, StartRecord

_log = logging.getLogger("strict_singleton")


def release_recording(ctx: context.Ctx, hold: context.Hold) -> Generator[ops.Op, Any, bool]:
    """Release leaving a start record: True when done (released, or the lease was no longer ours)."""
    record = _new_record(hold.fencing_token, hold.sent_at, hold.previous, ctx.wall_clock(), ctx.cfg.visibility_timeout)
    op = ops.ReleaseRecording(ctx.iid, ctx.token, record, ctx.cfg.visibility_timeout)
    for _attempt in range(2):  # an abandoned release is tried once more (token-checked)
        try:
            released = yield op
        except ops.Abandoned:
            continue
        except LockUnavailableError as exc:
            _log.warning("could not leave a start record for %r (%s); holding the lease until visible", ctx.iid, exc)
            return False
        if not released:
            _log.warning("lost the lease for %r before releasing it with its start record", ctx.iid)
        ctx.progress.may_hold = False
        return True
    return False


def record_start(ctx: context.Ctx, lease: context.LeaseClock, ttl: float) -> Generator[ops.Op, Any, None]:
    """Leave a record of the start in flight (or just made), keeping the lease; failures only cost the record."""
    p = ctx.progress
    sent_at = p.sent_at if p.started is None else p.started.sent_at
    assert sent_at is not None and p.fencing_token is not None
    record = _new_record(p.fencing_token, sent_at, p.previous, ctx.wall_clock(), ttl)
    try:
        stored = yield ops.RecordStart(ctx.iid, ctx.token, record, ttl)
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
        sent_at_us=evidence.epoch_us(sent_at),
        previous_created_us=evidence.created_us(previous),
        expires_at_us=evidence.epoch_us(now) + round(ttl * 1_000_000),
    )


def _record_left(ctx: context.Ctx, grant: Grant) -> float:
    """Seconds the previous holder's start record still counts, for this holder.

    The store's own remaining TTL where it expires records (Redis, Redlock: its clock,
    not the writer's, so two starters' wall clocks are never compared here);
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
    left_us = record.expires_at_us + skew_us - evidence.epoch_us(ctx.wall_clock())
    window_us = record.expires_at_us - record.sent_at_us + 2 * skew_us
    return min(left_us, window_us) / 1_000_000


def await_record(
    ctx: context.Ctx, lease: context.LeaseClock, grant: Grant, state: OrchestrationState | None
) -> Generator[ops.Op, Any, OrchestrationState | None]:
    """The previous holder left a start record: act only on a read that shows that start.

    A read that does not show it is stale (a lagging status index): keep the lease and
    read again until it does, at most until the record expires (:func:`_record_left`).
    Raises ``LeaseLostError`` if the lease cannot be kept.
    """
    cfg = ctx.cfg
    record = grant.last_start
    assert record is not None
    left = _record_left(ctx, grant)
    if evidence.shows_start_record(state, record, cfg.clock_skew) or left <= 0:
        return state
    notes = ctx.notes
    notes.record_wait_began = ctx.clock()
    state, shown = yield from keeping.reread_until(
        ctx,
        lease,
        ctx.clock() + left,
        lambda s: evidence.shows_start_record(s, record, cfg.clock_skew),
        waiting_for="an earlier start to show; nothing was scheduled",
    )
    notes.record_wait_ended, notes.record_shown = ctx.clock(), shown
    if not shown:
        _log.warning(
            "the start of %r recorded by the previous holder (fencing token %d) is still not visible; "
            "going on with the latest read (visibility_timeout)",
            ctx.iid,
            record.fencing_token,
        )
    return state
