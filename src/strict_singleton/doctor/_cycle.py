"""One real lease cycle on a scratch instance ID: the proof that a store serves leases.

The lease backend itself does the work (the same class, scripts and calls a starter
uses): acquire, renew, leave a request record, release leaving a start record. So a
missing permission, a disabled script engine, a read-only replica or a lease API the
account's credentials may not call shows here exactly as it would in a start.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from strict_singleton.doctor._measure import format_ms, monotonic
from strict_singleton.doctor._model import Check, Status
from strict_singleton.lock_backends.base import RequestRecord, StartRecord

_ROW = "rows 4, 10, 22"


def lease_cycle(
    lease: Any, *, target: str, instance_id: str, ttl: float, uses: Mapping[str, str] | None = None
) -> Check:
    """Acquire, renew, record, release on ``instance_id`` (which nobody else uses).

    A failure names the step and the store's answer; the lease is released on every
    way out. Leaves the store's own traces of the scratch ID (keys, a blob, a lock
    file): the caller deletes them. ``uses`` names what each step sends, for the message.
    """
    uses = uses or {}
    token = str(uuid.uuid4())  # Blob lease IDs must be GUIDs; any random token does elsewhere
    step = "acquire"
    held = False
    started = monotonic()
    try:
        grant = lease.acquire(instance_id, token, ttl)
        if grant is None:
            return _failed(target, step, "refused as held by someone else, for an ID nobody else uses", uses)
        held = True
        step = "renew"
        if not lease.extend(instance_id, token, ttl):
            return _failed(target, step, "refused while the lease was held", uses)
        now = time.time_ns() // 1000
        expires = now + int(ttl * 1e6)
        step = "record"
        request = RequestRecord(
            request_id=None,
            fencing_token=grant.fencing_token,
            sent_at_us=now,
            previous_created_us=None,
            action="start",
            event="",
            expires_at_us=expires,
        )
        if not lease.record_request(instance_id, token, request, ttl):
            return _failed(target, step, "refused while the lease was held", uses)
        step = "release"
        record = StartRecord(
            fencing_token=grant.fencing_token, sent_at_us=now, previous_created_us=None, expires_at_us=expires
        )
        if not lease.release_with_record(instance_id, token, record, ttl):
            return _failed(target, step, "refused while the lease was held", uses)
        held = False
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        return _failed(target, step, f"{type(exc).__name__}: {' '.join(str(message).split())[:300]}", uses)
    finally:
        if held:
            # The store just failed a step; a scratch lease it still holds expires on its own.
            with contextlib.suppress(Exception):
                lease.release(instance_id, token)
    return Check(
        target,
        "lease cycle",
        Status.OK,
        "a real lease on a scratch ID: acquired, renewed, recorded and released",
        guarantee=_ROW,
        measured=format_ms(monotonic() - started),
    )


def _fix_for(why: str) -> str:
    if "OutOfMemoryError" in why or "maxmemory" in why:  # Redis full under noeviction: no grant helps
        return (
            "the store is out of memory (maxmemory reached under noeviction): raise maxmemory or free memory; "
            "keep the noeviction policy, which keeps held leases"
        )
    return "grant the commands or lease operations named, or point the URL at a writable master"


def _failed(target: str, step: str, why: str, uses: Mapping[str, str]) -> Check:
    sends = f" (it sends {uses[step]})" if step in uses else ""
    return Check(
        target,
        "lease cycle",
        Status.FAILURE,
        f"{step}{sends} of a scratch lease failed: {why}; starts would fail closed (LockUnavailableError)",
        fix=_fix_for(why),
        guarantee=_ROW,
        measured=f"failed at {step}",
    )
