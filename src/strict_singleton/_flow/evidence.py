"""What a status read or an RPC error proves: which instance a start created, whether a read
already shows a recorded start, whether a failed request may still have run."""

from __future__ import annotations

from datetime import datetime, timezone

from durabletask.client import OrchestrationState, OrchestrationStatus

from strict_singleton.lock_backends.base import RequestRecord, StartRecord

_TERMINAL = frozenset({OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED})


def is_active(state: OrchestrationState | None) -> bool:
    """An instance that exists and is not in a replaceable (terminal) status."""
    return state is not None and state.runtime_status not in _TERMINAL


def _utc(moment: datetime) -> datetime:
    # durabletask returns naive UTC datetimes (protobuf Timestamp.ToDatetime()).
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(moment: datetime) -> int:
    """Integer microseconds since the Unix epoch (exact; naive datetimes are UTC)."""
    delta = _utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def created_us(state: OrchestrationState | None) -> int | None:
    return None if state is None or state.created_at is None else epoch_us(state.created_at)


def created_by_send(state: OrchestrationState | None, previous_us: int | None, sent_us: int, skew: float) -> bool:
    """Whether a status read shows the instance a start sent at ``sent_us`` created.

    It must be newer than the instance read under the lease before that start
    (``previous_us``: its creation time, ``None`` if there was none; a replacement is
    always created later) and created no earlier than ``skew`` seconds before the
    request was sent (the starter's wall clock).
    """
    if state is None or state.created_at is None:
        return False
    created = epoch_us(state.created_at)
    if previous_us is not None and created <= previous_us:
        return False
    return created >= sent_us - round(skew * 1_000_000)


def created_by_our_send(
    state: OrchestrationState | None, previous: OrchestrationState | None, sent_at: datetime, skew: float
) -> bool:
    """Whether a status read shows an instance our schedule request created (see :func:`created_by_send`)."""
    return created_by_send(state, created_us(previous), epoch_us(sent_at), skew)


def shows_start_record(state: OrchestrationState | None, record: StartRecord, skew: float) -> bool:
    """Whether a status read already shows the start ``record`` describes.

    As :func:`created_by_send`, and also an *active* instance with the replaced one's
    creation time: a start only replaces a terminal instance, so an active one with
    that time is the new one on a host whose creation times have one-second resolution
    (Durable Functions), or the replaced one seen from before it ended; either way an
    active instance is there, which is all a caller deciding whether to start needs.
    """
    previous_us = record.previous_created_us
    if created_by_send(state, previous_us, record.sent_at_us, skew):
        return True
    return previous_us is not None and is_active(state) and created_us(state) == previous_us


def created_by_request(state: OrchestrationState | None, record: RequestRecord, skew: float) -> bool:
    """Whether ``state`` is the instance the record's start created: an instance strictly newer
    than the one that start replaced (an active instance with the replaced one's creation time
    is not proof here: it may be that one, resumed or read stale, which the request did not
    create). The record names the latest start sent under the lease (later starts leave a
    tombstone first), so a newer instance is that start's own; its creation time is not also
    compared with the send time, which a backend clock off by more than ``clock_skew`` would
    fail, and the retry would then run the request a second time."""
    created = created_us(state)
    previous = record.previous_created_us
    return created is not None and (previous is None or created > previous)


def same_second_as_replaced(state: OrchestrationState | None, record: RequestRecord) -> bool:
    """Whether ``state`` may be the instance the record's start created although it has the
    creation time of the instance that start replaced: both fall on the same whole second,
    as every time does on a client with one-second resolution (Durable Functions), where a
    replacement made within the second looks unchanged. With finer times (durabletask's gRPC
    clients: microseconds) the same time means the same instance; a time that falls exactly
    on a whole second there (one in a million) is taken as ambiguous too, which only costs a
    refusal, never a second start."""
    created = created_us(state)
    return created is not None and created == record.previous_created_us and created % 1_000_000 == 0


# gRPC codes after which the backend may or may not have created the instance.
AMBIGUOUS_CODES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "UNKNOWN", "CANCELLED", "INTERNAL", "ABORTED"})


def rpc_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:
        return None
    return getattr(value, "name", None)
