"""Request records (``request_id``): what a start or a signal leaves in the lock store before
it sends, so that a retry with the same request ID can find what the earlier call did."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator
from typing import Any

from durabletask.client import OrchestrationState

from strict_singleton._flow import context, evidence, ops
from strict_singleton.errors import (
    LockUnavailableError,
)
from strict_singleton.lock_backends.base import Grant, RequestRecord

_log = logging.getLogger("strict_singleton")


def _expiry_us(ctx: context.Ctx) -> int:
    return evidence.epoch_us(ctx.wall_clock()) + round(ctx.cfg.request_ttl * 1_000_000)


def put_request(ctx: context.Ctx, record: RequestRecord, *, must: bool) -> Generator[ops.Op, Any, bool]:
    """Write ``record`` (token-checked, lease kept). ``must``: a store error or a refusal
    raises (``LockUnavailableError`` / ``LeaseLostError``: nothing may be sent); else it is
    logged and ``False`` returned (the store keeps what it had)."""
    p = ctx.progress
    try:
        stored = yield ops.RecordRequest(ctx.iid, ctx.token, record, ctx.cfg.request_ttl)
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


def write_start(
    ctx: context.Ctx, request_id: str | None, *, event: str, previous_us: int | None
) -> Generator[ops.Op, Any, None]:
    """Before a schedule is sent: this start's request ID (``None``: a tombstone, so no
    earlier request can claim the instance this start creates), keeping the signal entries."""
    p = ctx.progress
    assert p.fencing_token is not None
    record = RequestRecord(
        request_id=request_id,
        fencing_token=p.fencing_token,
        sent_at_us=evidence.epoch_us(ctx.wall_clock()),
        previous_created_us=previous_us,
        action="start",
        event=event,
        expires_at_us=_expiry_us(ctx),
        signals=p.stored.signals if p.stored is not None else (),
    )
    yield from put_request(ctx, record, must=True)
    p.noting = "start" if request_id is not None else None


def _base_record(ctx: context.Ctx) -> RequestRecord:
    """What the store holds, re-signed with this lease's fencing token (the newest for Redlock)
    and a fresh expiry; a bare tombstone if it holds nothing."""
    p = ctx.progress
    assert p.fencing_token is not None
    if p.stored is None:
        now_us = evidence.epoch_us(ctx.wall_clock())
        return RequestRecord(None, p.fencing_token, now_us, None, "start", "", _expiry_us(ctx))
    return dataclasses.replace(p.stored, fencing_token=p.fencing_token, expires_at_us=_expiry_us(ctx))


def write_signal(ctx: context.Ctx, target: OrchestrationState | None) -> Generator[ops.Op, Any, None]:
    """Before raising the event to an existing instance: this request's signal entry,
    "pending". The start entry is left as it is (a signal creates nothing)."""
    rid = ctx.call.request_id
    assert rid is not None
    base = _base_record(ctx)
    yield from put_request(
        ctx, dataclasses.replace(base, signals=base.with_signal(rid, "pending", evidence.created_us(target))), must=True
    )
    ctx.progress.noting = "signal"


def note_event(ctx: context.Ctx, event: str) -> Generator[ops.Op, Any, None]:
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
    yield from put_request(ctx, record, must=False)


def restore_request(ctx: context.Ctx) -> Generator[ops.Op, Any, None]:
    """Nothing was created after all (a refused or unsent schedule): put back the record the
    store held before this call's (under this lease's token), so an earlier request still
    knows its instance. Best effort."""
    p = ctx.progress
    if p.noting != "start":
        return
    assert p.fencing_token is not None
    if p.earlier is None:
        now_us = evidence.epoch_us(ctx.wall_clock())
        signals = p.stored.signals if p.stored is not None else ()
        record = RequestRecord(None, p.fencing_token, now_us, None, "start", "", _expiry_us(ctx), signals)
    else:
        record = dataclasses.replace(p.earlier, fencing_token=p.fencing_token, expires_at_us=_expiry_us(ctx))
        if p.stored is not None:  # keep signal entries written since (none in practice)
            record = dataclasses.replace(record, signals=p.stored.signals)
    p.noting = None
    yield from put_request(ctx, record, must=False)


def remembered(ctx: context.Ctx, grant: Grant) -> RequestRecord | None:
    """The store's request record, unless expired (``None`` without a request ID)."""
    record = grant.last_request
    if ctx.call.request_id is None or record is None:
        return None
    if record.expires_at_us + round(ctx.cfg.clock_skew * 1_000_000) < evidence.epoch_us(ctx.wall_clock()):
        return None
    return record
