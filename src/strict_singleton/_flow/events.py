"""``start_or_signal``'s event: raised once, never retried, under the lease when one is held."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, finish, keeping, ops, request_records
from strict_singleton.errors import (
    SignalError,
)
from strict_singleton.result import StartOutcome


def signal(ctx: context.Ctx, *, started: bool) -> Generator[ops.Op, Any, None]:
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
            reason = yield from keeping.keep(ctx, p.lease, confirm=False)
            if reason is not None:
                raise ops.NotSent(reason)
            send_by = context.send_by(ctx)
        yield ops.RaiseEvent(ctx.iid, name, data, send_by)
    except Exception as exc:
        code = evidence.rpc_code(exc)
        maybe = not isinstance(exc, ops.NotSent) and (code is None or code in evidence.AMBIGUOUS_CODES)
        if not maybe:
            yield from request_records.note_event(ctx, "not-raised")
        where = "this call started the instance, then " if started else ""
        raise SignalError(
            f"{where}raising event {name!r} failed ({code or type(exc).__name__}): {exc}; "
            + ("it may have been delivered" if maybe else "it was not delivered"),
            instance_id=ctx.iid,
            backend=ctx.backend,
            maybe_delivered=maybe,
            started=started,
        ) from exc
    yield from request_records.note_event(ctx, "raised")


def answered(
    ctx: context.Ctx, answer: StartOutcome, state: OrchestrationState | None, fencing_token: int | None = None
) -> Generator[ops.Op, Any, context.FlowResult]:
    """The answer for an existing instance; with ``start_or_signal`` an active one gets the event."""
    if answer is StartOutcome.ALREADY_RUNNING and ctx.call.signal is not None:
        yield from signal(ctx, started=False)
        return ctx.done(StartOutcome.SIGNALED, state, fencing_token)
    return ctx.done(answer, state, fencing_token)


def signal_remembered(
    ctx: context.Ctx, state: OrchestrationState | None, fencing_token: int
) -> Generator[ops.Op, Any, context.FlowResult]:
    """``start_or_signal`` with a request ID on an active instance: record, raise, note, release.

    The request record is left before the event is raised (a store that cannot take it
    means nothing is raised), so a retry with the same request ID never raises it twice.
    """

    def signalled() -> Generator[ops.Op, Any, None]:
        yield from request_records.write_signal(ctx, state)
        yield from signal(ctx, started=False)

    yield from finish.released_after(ctx, signalled())
    return ctx.done(StartOutcome.SIGNALED, state, fencing_token)
