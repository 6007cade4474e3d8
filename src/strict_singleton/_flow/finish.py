"""Giving the lease up after a start of our own: released with a start record, or held until
the new instance is visible; every other way out is a plain token-checked release."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any

from strict_singleton._flow import context, evidence, keeping, ops, start_records
from strict_singleton._validation import StartCall, StarterConfig

_log = logging.getLogger("strict_singleton")


def finish_flow(
    call: StartCall,
    cfg: StarterConfig,
    hold: context.Hold,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], datetime] | None = None,
    backend: str = "",
) -> context.FinishFlow:
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
    ctx = context.Ctx(call=call, cfg=cfg, token=hold.token, backend=backend, clock=clock, wall_clock=wall)
    ctx.progress.may_hold = True
    yield from finish(ctx, hold)


def finish(ctx: context.Ctx, hold: context.Hold) -> context.FinishFlow:
    """:func:`finish_flow`'s steps, for any flow holding the lease after a start of its own."""
    cfg, call, clock = ctx.cfg, ctx.call, ctx.clock
    if cfg.confirm_visible and cfg.start_records and (yield from start_records.release_recording(ctx, hold)):
        return
    if cfg.confirm_visible:
        until = clock() + cfg.visibility_timeout
        delay = 0.002
        while True:
            try:
                reason = yield from keeping.keep(ctx, hold.lease, confirm=False)
            except ops.Abandoned:
                continue
            if reason is not None:
                _log.warning("lost the lease for %r while waiting for visibility: %s", call.instance_id, reason)
                break
            try:
                state = yield ctx.read(payloads=False, lease=hold.lease)  # only created_at matters here
            except (Exception, ops.Abandoned) as exc:
                state = None
                _log.debug("visibility read for %r failed: %r", call.instance_id, exc)
            if evidence.created_by_our_send(state, hold.previous, hold.sent_at, cfg.clock_skew):
                break
            left = until - clock()
            if left <= 0:
                _log.warning(
                    "instance %r not visible after %.1fs; releasing the lease (visibility_timeout)",
                    call.instance_id,
                    cfg.visibility_timeout,
                )
                break
            with contextlib.suppress(ops.Abandoned):
                yield ops.Sleep(keeping.pause(ctx, delay, left))
            delay = min(delay * 2, context.MAX_POLL)
    for _attempt in range(2):  # an abandoned release is tried once more (token-checked)
        try:
            yield from keeping.release(ctx)
            break
        except ops.Abandoned:
            continue


def let_go(ctx: context.Ctx) -> Generator[ops.Op, Any, None]:
    """Give the lease up: after a start of ours, as :func:`finish_flow` does (released with
    the start's record, or held until the instance is visible), so that no way out of a
    call that created an instance, cancellation included, lets a later caller act on a
    stale "no instance" read; else a plain token-checked release."""
    hold = ctx.progress.started
    if hold is not None:
        ctx.progress.started = None
        yield from finish(ctx, hold)
    elif ctx.progress.may_hold:
        yield from keeping.release(ctx)


def released_after(ctx: context.Ctx, body: Generator[ops.Op, Any, None]) -> Generator[ops.Op, Any, None]:
    """Run ``body`` holding the lease, then let go of it (:func:`let_go`), also when ``body``
    raises (not on ``GeneratorExit``: a flow being discarded may yield nothing more)."""
    try:
        yield from body
    except GeneratorExit:
        raise
    except BaseException:
        yield from let_go(ctx)
        raise
    yield from let_go(ctx)
