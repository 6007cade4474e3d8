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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from strict_singleton.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class Grant:
    """A held lease.

    Attributes:
        fencing_token: strictly greater than every token granted before for the
            same instance ID by the same store.
        valid_for: seconds the lease is valid for, counted from just before the
            acquire request was sent; ``None`` when the lease never expires while
            the holder lives (the file lease: the OS frees it when the holder dies).
    """

    fencing_token: int
    valid_for: float | None


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


__all__ = ["AsyncLeaseBackend", "Grant", "LeaseBackend", "require_positive_ttl", "validate_prefix"]
