"""``ConflictPolicy.TERMINATE_EXISTING``: which instance a call replaces, and terminating it
under the lease."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, keeping, ops
from strict_singleton.errors import (
    TerminateError,
)

_log = logging.getLogger("strict_singleton")


def _began_with(ctx: context.Ctx, state: OrchestrationState) -> bool:
    """``TERMINATE_EXISTING``: whether the active ``state`` is the instance that was active when
    this call began (its first read, before any lease), so this call is to replace it.

    Decided by identity, not by comparing clocks: the same creation time as the instance
    read at the beginning (a replacement is always created later). Where creation times
    have one-second resolution (Durable Functions) a replacement made within the same
    second looks the same, so a start record showing that an instance with that creation
    time was replaced since counts too: it is then this wave's replacement, not replaced again.
    """
    began = ctx.at_begin
    if not evidence.is_active(began) or evidence.created_us(began) != evidence.created_us(state):
        return False
    record = ctx.last_start
    return record is None or record.previous_created_us != evidence.created_us(began)


def terminate(
    ctx: context.Ctx, lease: context.LeaseClock, state: OrchestrationState
) -> Generator[ops.Op, Any, OrchestrationState | None]:
    """Terminate the active instance and wait, keeping the lease, until a read shows it finished.

    The lease is confirmed first, as before a schedule: a terminate sent on a read that outlived
    the lease could end an instance another holder has started since. A terminate whose answer
    is ambiguous (cut at its deadline, connection lost) may still be executed: the lease is kept
    while watching for the instance to end for ``ambiguity_timeout`` at least, so that a late
    terminate never lands on a replacement someone else started after we let go.
    """
    yield from keeping.confirm_before_sending(ctx, lease, before="terminating; nothing was terminated or started")
    window = ctx.call.terminate_timeout
    ambiguous = False
    p = ctx.progress
    # From here a terminate may be in flight: a call abandoned before it has seen the instance
    # end keeps watching (see _abandon), or the terminate could land on a later replacement.
    p.terminating = ctx.clock() + max(window, ctx.cfg.ambiguity_timeout)
    try:
        why = f"replaced by a strict-singleton start (fencing token {ctx.progress.fencing_token})"
        yield ops.Terminate(ctx.iid, why, context.send_by(ctx))
    except Exception as exc:
        code = evidence.rpc_code(exc)
        if isinstance(exc, ops.NotSent) or not (code is None or code in evidence.AMBIGUOUS_CODES):
            p.terminating = None  # surely not executed
            raise TerminateError(
                f"terminating the active instance failed; nothing was started: {type(exc).__name__}: {exc}",
                instance_id=ctx.iid,
                backend=ctx.backend,
            ) from exc
        ambiguous = True
        window = max(window, ctx.cfg.ambiguity_timeout)
        _log.warning("terminate of %r failed ambiguously (%s); watching for it to end", ctx.iid, code)
    current, ended = yield from keeping.reread_until(
        ctx,
        lease,
        ctx.clock() + window,
        lambda s: not evidence.is_active(s),
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
