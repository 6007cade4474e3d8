"""Keeping a held lease: renew when due, confirm with the store before acting on it, read
under its deadline, re-read until a condition holds, release (token-checked)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, ops
from strict_singleton.errors import (
    LockUnavailableError,
    StatusReadError,
)

_log = logging.getLogger("strict_singleton")


def release(ctx: context.Ctx) -> Generator[ops.Op, Any, None]:
    """Token-checked release whose failure only costs waiting for expiry."""
    try:
        yield ops.Release(ctx.iid, ctx.token)
    except LockUnavailableError as exc:
        _log.warning("release failed for %r; the lease will expire on its own: %s", ctx.iid, exc)
    ctx.progress.may_hold = False


def read(ctx: context.Ctx) -> Generator[ops.Op, Any, OrchestrationState | None]:
    op = ctx.read()
    try:
        state: OrchestrationState | None = yield op
    except Exception as exc:
        if op.send_by is not None and (isinstance(exc, ops.NotSent) or evidence.rpc_code(exc) == "DEADLINE_EXCEEDED"):
            # Cut at the lease's own deadline: the lease ran out while the backend was answering.
            raise ctx.lost("the lease's deadline passed during the status read; nothing was scheduled") from exc
        raise StatusReadError(
            f"status read failed; nothing was scheduled: {type(exc).__name__}: {exc}",
            instance_id=ctx.iid,
            backend=ctx.backend,
        ) from exc
    return state


def keep(ctx: context.Ctx, lease: context.LeaseClock, *, confirm: bool) -> Generator[ops.Op, Any, str | None]:
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


def confirm_before_sending(ctx: context.Ctx, lease: context.LeaseClock, *, before: str) -> Generator[ops.Op, Any, None]:
    """Before an RPC that acts on what was read under the lease (a schedule, a terminate, a
    retry's answer): :func:`keep` with ``confirm``, so the store confirms the lease when it has
    not for ``confirm_after``. Raises ``LeaseLostError`` ending in ``before`` when it may no
    longer be ours, and the store's own error when it cannot be reached (fail closed)."""
    reason = yield from keep(ctx, lease, confirm=True)
    if reason is not None:
        raise ctx.lost(f"{reason} before {before}")


def confirm_while_watching(ctx: context.Ctx, lease: context.LeaseClock) -> Generator[ops.Op, Any, str | None]:
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


def pause(ctx: context.Ctx, delay: float, left: float) -> float:
    """A poll interval short enough that the lease is renewed in time."""
    return max(0.0, min(delay, left, ctx.cfg.renew_after / 2))


def reread_until(
    ctx: context.Ctx,
    lease: context.LeaseClock,
    until: float,
    done: Callable[[OrchestrationState | None], bool],
    *,
    waiting_for: str,
    tolerant: bool = False,
) -> Generator[ops.Op, Any, tuple[OrchestrationState | None, bool]]:
    """Keep the lease and read again, pausing from 2 ms up, until ``done(read)`` or ``until``.

    Returns (the last read, whether it was done). Raises ``LeaseLostError`` if the lease
    cannot be kept (``waiting_for`` ends its message) and ``StatusReadError`` if a read fails,
    unless ``tolerant``: then a failed read is one more read that did not show it done (a
    watch that must not let go early, as for a terminate that may still land).
    """
    delay = 0.002
    while True:
        yield ops.Sleep(pause(ctx, delay, until - ctx.clock()))
        delay = min(delay * 2, context.MAX_POLL)
        reason = yield from keep(ctx, lease, confirm=False)
        if reason is not None:
            raise ctx.lost(f"{reason} while waiting for {waiting_for}")
        try:
            state = yield from read(ctx)
            answered = True
        except StatusReadError as exc:
            if not tolerant:
                raise
            _log.debug("status read while waiting for %s failed: %r", waiting_for, exc)
            state, answered = None, False
        if answered and done(state):
            return state, True
        if ctx.clock() >= until:
            return state, False
