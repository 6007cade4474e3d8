"""After an ambiguous schedule failure: keep the lease and look for the instance the request
may still create."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, keeping, ops, start_records

_log = logging.getLogger("strict_singleton")


def watch(
    ctx: context.Ctx, lease: context.LeaseClock
) -> Generator[ops.Op, Any, tuple[OrchestrationState | None, str | None]]:
    """After an ambiguous schedule failure: keep the lease and look for our instance.

    Returns (our instance's state, None) when it shows up, (None, None) when the
    window closed without it, (None, reason) when the lease could not be kept.
    """
    ctx.notes.watch = "watching"
    state, reason = yield from _watch(ctx, lease)
    ctx.notes.watch = "appeared" if state is not None else "lease_lost" if reason is not None else "gave_up"
    return state, reason


def _watch(
    ctx: context.Ctx, lease: context.LeaseClock
) -> Generator[ops.Op, Any, tuple[OrchestrationState | None, str | None]]:
    p = ctx.progress
    assert p.sent_at is not None
    if p.watch_until is None:
        # A request that executes late in the window may then take up to visibility_timeout
        # to show in reads (a lagging host): watch that long too, or a later caller could
        # read a stale "no instance" after we let go.
        lag = ctx.cfg.visibility_timeout if ctx.cfg.confirm_visible else 0.0
        p.watch_until = ctx.clock() + ctx.cfg.ambiguity_timeout + lag
        if ctx.cfg.confirm_visible and ctx.cfg.start_records:
            # Leave a record of the maybe-start while the lease is surely ours: if the lease
            # is lost during the watch (a read slower than the lease), the next holder still
            # waits for this start to show instead of acting on a stale read.
            yield from start_records.record_start(ctx, lease, ctx.cfg.ambiguity_timeout + lag)
    delay = 0.002
    while True:
        reason = yield from keeping.keep(ctx, lease, confirm=False)
        if reason is not None:
            return None, reason
        try:
            state = yield ctx.read(payloads=False)
        except Exception as exc:
            _log.debug("status read while watching %r failed: %r", ctx.iid, exc)
            state = None
        if evidence.created_by_our_send(state, p.previous, p.sent_at, ctx.cfg.clock_skew):
            # Only proof if the lease was ours all along: a read that outlived the lease
            # may show an instance someone else created after taking the lease over.
            reason = yield from keeping.confirm_while_watching(ctx, lease)
            return (None, reason) if reason is not None else (state, None)
        left = p.watch_until - ctx.clock()
        if left <= 0:
            return None, None
        yield ops.Sleep(keeping.pause(ctx, delay, left))
        delay = min(delay * 2, context.MAX_POLL)
