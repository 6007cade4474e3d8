"""A retry with a request ID the store remembers: the earlier call's answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, events, evidence, finish, keeping, ops, request_records
from strict_singleton.errors import (
    ScheduleError,
    SignalError,
)
from strict_singleton.lock_backends.base import Grant
from strict_singleton.result import StartOutcome


def _confirm_retry(ctx: context.Ctx, lease: context.LeaseClock) -> Generator[ops.Op, Any, None]:
    """The record is the latest request only if nobody else held the lease since we took
    it: confirm it (as before a schedule) before a retry claims anything: a retry whose lease
    expired before its read could otherwise claim an instance another caller created."""
    yield from keeping.confirm_before_sending(ctx, lease, before="answering a retry; nothing was sent")


def retried(
    ctx: context.Ctx, lease: context.LeaseClock, grant: Grant, state: OrchestrationState | None
) -> Generator[ops.Op, Any, context.FlowResult | None]:
    """A retry of a request the store remembers: the earlier call's answer, or ``None`` to go on.

    The record's start entry names the latest request whose start was sent under the lease
    (later starts leave tombstones first), so an instance that shows that start (created
    after it was sent, and newer than the instance it replaced) is the one it created. That
    wins over every policy: a retry never fails on, terminates or replaces its own instance.
    Signal entries say what became of a ``start_or_signal``'s event to an existing instance.
    Holding the lease; raises only after releasing it.
    """
    record = request_records.remembered(ctx, grant)
    rid = ctx.call.request_id
    if record is None or rid is None:
        return None
    signal = ctx.call.signal is not None
    started = record.request_id == rid and evidence.created_by_request(state, record, ctx.cfg.clock_skew)
    if record.request_id == rid and not started and evidence.same_second_as_replaced(state, record):
        yield from keeping.release(ctx)
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

        def owed_event() -> Generator[ops.Op, Any, None]:
            base = request_records._base_record(ctx)
            yield from request_records.put_request(ctx, dataclasses.replace(base, event="pending"), must=True)
            ctx.progress.noting = "start"
            yield from events.signal(ctx, started=False)

        yield from finish.released_after(ctx, owed_event())
        return ctx.done(outcome, state, record.fencing_token, deduplicated=True)
    yield from keeping.release(ctx)
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
