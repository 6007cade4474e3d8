"""The small protocol every lease backend implements.

A backend does single atomic attempts against its store; all policy (waiting,
deadlines, renewal, when to schedule) lives in the starter. Each method maps store
failures to :class:`~strict_singleton.errors.LockUnavailableError` so the starter
can fail closed.

Contract, per instance ID:

* ``acquire(instance_id, token, ttl)``: one non-blocking attempt. Returns a
  :class:`Grant` when the caller now holds the lease under ``token``; ``None`` when
  someone else holds it. At most one token holds a lease at a time.
* ``extend(instance_id, token, ttl)``: resets the lease's time to live, only if
  ``token`` still holds it. Returns ``False`` when it does not.
* ``release(instance_id, token)``: frees the lease only if ``token`` holds it
  (never someone else's). Returns ``False`` when it did not hold it.
* ``wait_for_release(instance_id, timeout)``: blocks up to ``timeout`` seconds or
  until the lease is probably free (released or expired); spurious wake-ups are
  allowed, missed ones only cost the timeout.
* ``validate_ttl(ttl)``: raises ``InvalidArgumentError`` for a TTL the store
  cannot honour (checked when the starter is built, before any lease).
* ``close()``: frees the backend's own resources (not the caller's clients).

Optional, for stores that can keep a *start record* (every backend shipped here):

* ``release_with_record(instance_id, token, record, ttl)``: like ``release``, and in
  the same atomic step (or, on Blob, under the still-held lease just before it) leaves
  ``record`` next to the lease for ``ttl`` seconds, replacing an older one. Returns
  ``False`` (and stores nothing) when ``token`` did not hold the lease.
* ``record_start(instance_id, token, record, ttl)``: leaves ``record`` as above but
  keeps the lease (after an ambiguous schedule failure, before watching for the
  instance). Returns ``False`` (and stores nothing) when ``token`` does not hold it.
* ``acquire`` then returns the newest record in ``Grant.last_start`` and, where the
  store expires records itself, its remaining time in ``Grant.last_start_left``.

Optional, for stores that can keep a *request record* (every backend shipped here;
needed for ``request_id``, idempotent retries):

* ``record_request(instance_id, token, record, ttl)``: leaves ``record`` (a
  :class:`RequestRecord`) in its own slot next to the lease for ``ttl`` seconds
  (long: ``request_ttl``, a day by default), replacing an older one, only if ``token``
  holds the lease; the lease is kept. Returns ``False`` (and stores nothing) when
  ``token`` does not hold it; store failures raise ``LockUnavailableError``.
* ``acquire`` then also returns the newest request record in ``Grant.last_request``
  in the same round trip (Redlock: the one with the highest fencing token among the
  nodes granted). Stores without key expiry may return an expired one: readers check
  ``expires_at_us``. ``release``/``release_with_record`` leave it untouched.

The record tells the next holder "a start was sent at this time; if your status read
does not show it yet, your read is stale": the starter waits for the instance to show
instead of holding every lease until it does (``docs/guarantees.md``). A backend
without ``release_with_record`` still works: the starter then holds the lease after a
start until the instance is visible, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote, unquote

from strict_singleton.errors import InvalidArgumentError

_RECORD_VERSION = "ssr1"


@dataclass(frozen=True, slots=True)
class StartRecord:
    """What a holder leaves behind when it lets go after a successful schedule call.

    Times are integer microseconds since the Unix epoch (exact in every store).

    Attributes:
        fencing_token: the fencing token of the start.
        sent_at_us: the starter's wall clock just before it sent the schedule request.
        previous_created_us: creation time of the instance the starter read under the
            lease before scheduling (the one a terminal-only reuse policy may replace),
            ``None`` if there was none.
        expires_at_us: the starter's wall clock plus the record's TTL; stores with key
            expiry (Redis) also drop it themselves; others (file, Blob) keep it and
            readers ignore it once expired (allowing for clock skew).
    """

    fencing_token: int
    sent_at_us: int
    previous_created_us: int | None
    expires_at_us: int

    def encode(self) -> str:
        previous = "" if self.previous_created_us is None else str(self.previous_created_us)
        return f"{_RECORD_VERSION}:{self.fencing_token}:{self.sent_at_us}:{previous}:{self.expires_at_us}"

    @classmethod
    def decode(cls, text: str | bytes | None) -> StartRecord | None:
        """The record in ``text``, or ``None`` for nothing, an older format or garbage."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if not text:
            return None
        parts = text.strip().split(":")
        if len(parts) != 5 or parts[0] != _RECORD_VERSION:
            return None
        try:
            return cls(
                fencing_token=int(parts[1]),
                sent_at_us=int(parts[2]),
                previous_created_us=int(parts[3]) if parts[3] else None,
                expires_at_us=int(parts[4]),
            )
        except ValueError:
            return None


REQUEST_RECORD_MAX = 2048  # bytes of ASCII a store must be able to keep for one request record
# A request ID is stored percent-encoded (UTF-8 bytes outside [A-Za-z0-9_.~-] take 3 each), so
# its bound is in those bytes: with at most this many, the header, the start entry's request
# ID and the newest signal entry always fit in REQUEST_RECORD_MAX, so the entry a call has
# just written is never the one left out.
MAX_REQUEST_ID_BYTES = 256


def stored_request_id(request_id: str) -> str:
    """``request_id`` as request records store it (percent-encoded UTF-8, ASCII)."""
    return quote(request_id, safe="")


_REQUEST_VERSION = "ssq1"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What a holder leaves *before* it sends a start (or an event) for a ``request_id``.

    Kept per instance ID for ``request_ttl``; a later start without a request ID
    replaces it with a *tombstone* (``request_id=None``) before it sends, so a record
    that names a request ID always describes the latest request sent under the lease.
    A retry with the same request ID uses it to recognise the instance that request
    created (``result.deduplicated``). Times are integer microseconds since the epoch.

    Attributes:
        request_id: the caller's request ID; ``None`` for a tombstone.
        fencing_token: the fencing token of the lease it was written under.
        sent_at_us: the writer's wall clock just before it wrote the record (so before
            it sent anything).
        previous_created_us: creation time of the instance read under the lease
            (replaced by a start, or signalled), ``None`` if there was none.
        action: ``"start"`` (a schedule request follows) or ``"signal"`` (an event to
            the existing instance follows).
        event: ``""`` (no event), ``"pending"`` (an event was about to be raised),
            ``"raised"`` (it was raised), ``"not-raised"`` (raising it surely failed).
        expires_at_us: the writer's wall clock plus the record's TTL.
        signals: the events ``start_or_signal`` raised (or was raising) to an *existing*
            instance, newest first, as ``(request ID, event, creation time of the instance
            signalled)``. Starts and tombstones carry them forward; the oldest are dropped
            when the record would exceed :data:`REQUEST_RECORD_MAX` (the newest is always
            kept: a request ID takes at most :data:`MAX_REQUEST_ID_BYTES` stored).
    """

    request_id: str | None
    fencing_token: int
    sent_at_us: int
    previous_created_us: int | None
    action: str
    event: str
    expires_at_us: int
    signals: tuple[tuple[str, str, int | None], ...] = ()

    ACTIONS: ClassVar[tuple[str, ...]] = ("start", "signal")
    EVENTS: ClassVar[tuple[str, ...]] = ("", "pending", "raised", "not-raised")

    def signal(self, request_id: str) -> tuple[str, str, int | None] | None:
        """The signal entry of ``request_id``, if kept."""
        return next((entry for entry in self.signals if entry[0] == request_id), None)

    def with_signal(
        self, request_id: str, event: str, target_us: int | None
    ) -> tuple[tuple[str, str, int | None], ...]:
        """The signal entries with ``request_id``'s set to (event, target), moved to the front."""
        return ((request_id, event, target_us), *(e for e in self.signals if e[0] != request_id))

    def encode(self) -> str:
        """ASCII, at most :data:`REQUEST_RECORD_MAX` bytes (request IDs are percent-encoded);
        the oldest signal entries are left out when it would be longer."""
        previous = "" if self.previous_created_us is None else str(self.previous_created_us)
        rid = "" if self.request_id is None else stored_request_id(self.request_id)
        text = (
            f"{_REQUEST_VERSION}:{self.fencing_token}:{self.sent_at_us}:{previous}:{self.expires_at_us}:"
            f"{self.action}:{self.event}:{rid}"
        )
        entries = [
            f"{stored_request_id(srid)}|{event}|{'' if target is None else target}"
            for srid, event, target in self.signals
        ]
        while entries and len(text) + 1 + len(";".join(entries)) > REQUEST_RECORD_MAX:
            entries.pop()
        if entries:
            text += ":" + ";".join(entries)
        if len(text) > REQUEST_RECORD_MAX:
            raise ValueError(f"request record too long ({len(text)} bytes)")
        return text

    @classmethod
    def decode(cls, text: str | bytes | None) -> RequestRecord | None:
        """The record in ``text``, or ``None`` for nothing, another format or garbage."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if not text:
            return None
        parts = text.strip().split(":")
        if len(parts) not in (8, 9) or parts[0] != _REQUEST_VERSION:
            return None
        action, event = parts[5], parts[6]
        if action not in cls.ACTIONS or event not in cls.EVENTS:
            return None
        try:
            signals: list[tuple[str, str, int | None]] = []
            for entry in parts[8].split(";") if len(parts) == 9 and parts[8] else []:
                srid, sevent, target = entry.split("|")
                if not srid or sevent not in cls.EVENTS:
                    return None
                signals.append((unquote(srid, errors="strict"), sevent, int(target) if target else None))
            return cls(
                request_id=unquote(parts[7], errors="strict") if parts[7] else None,
                fencing_token=int(parts[1]),
                sent_at_us=int(parts[2]),
                previous_created_us=int(parts[3]) if parts[3] else None,
                action=action,
                event=event,
                expires_at_us=int(parts[4]),
                signals=tuple(signals),
            )
        except (ValueError, UnicodeDecodeError):
            return None


_R = TypeVar("_R", StartRecord, RequestRecord)


def newest(records: Sequence[_R | None]) -> _R | None:
    """The record with the highest fencing token (several stores answered: Redlock)."""
    present = [r for r in records if r is not None]
    return max(present, key=lambda r: r.fencing_token) if present else None


@dataclass(frozen=True, slots=True)
class Grant:
    """A held lease.

    Attributes:
        fencing_token: strictly greater than every token granted before for the
            same instance ID by the same store.
        valid_for: seconds the lease is valid for, counted from just before the
            acquire request was sent; ``None`` when the lease never expires while
            the holder lives (the file lease: the OS frees it when the holder dies).
        last_start: the start record the previous holder left (see
            ``release_with_record``), ``None`` if none is stored. Stores without key
            expiry (file, Blob) may return an expired one: readers check
            ``expires_at_us``.
        last_start_left: seconds the store will keep ``last_start``, by the store's
            own clock (Redis ``PTTL``); ``None`` where the store does not expire
            records (then ``expires_at_us``, a wall-clock time, is all there is).
        last_request: the newest request record (see ``record_request``), ``None``
            if none is stored or the store keeps none.
    """

    fencing_token: int
    valid_for: float | None
    last_start: StartRecord | None = None
    last_start_left: float | None = None
    last_request: RequestRecord | None = None


@runtime_checkable
class LeaseBackend(Protocol):
    """A synchronous lease store. See the module docstring for the contract."""

    @property
    def name(self) -> str:
        """A display name for logs and errors; never contains a secret."""
        ...

    def validate_ttl(self, ttl: float) -> None: ...

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None: ...

    def extend(self, instance_id: str, token: str, ttl: float) -> bool: ...

    def release(self, instance_id: str, token: str) -> bool: ...

    def wait_for_release(self, instance_id: str, timeout: float) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncLeaseBackend(Protocol):
    """The asyncio twin of :class:`LeaseBackend`: same names, same contract."""

    @property
    def name(self) -> str: ...

    def validate_ttl(self, ttl: float) -> None: ...

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None: ...

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool: ...

    async def release(self, instance_id: str, token: str) -> bool: ...

    async def wait_for_release(self, instance_id: str, timeout: float) -> None: ...

    async def close(self) -> None: ...


def require_positive_ttl(ttl: float, *, backend: str) -> None:
    """The TTL check every backend shares: a finite number of seconds above zero."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgumentError(f"lease_ttl must be a finite number of seconds > 0, got {ttl!r}", backend=backend)


def validate_prefix(prefix: str, *, backend: str) -> str:
    """Key prefixes are plain text without braces (braces would break Redis Cluster hash tags)."""
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}") or not prefix.isprintable():
        raise InvalidArgumentError(
            f"prefix must be a non-empty printable string without braces, got {prefix!r}", backend=backend
        )
    return prefix


RECORD_METHODS = ("release_with_record", "record_start")


def supports_records(lock: object) -> bool:
    """Whether ``lock`` can keep start records (has ``release_with_record`` and ``record_start``)."""
    return all(callable(getattr(lock, name, None)) for name in RECORD_METHODS)


def supports_requests(lock: object) -> bool:
    """Whether ``lock`` can keep request records (has ``record_request``), needed for ``request_id``."""
    return callable(getattr(lock, "record_request", None))


__all__ = [
    "AsyncLeaseBackend",
    "Grant",
    "LeaseBackend",
    "REQUEST_RECORD_MAX",
    "RequestRecord",
    "StartRecord",
]
