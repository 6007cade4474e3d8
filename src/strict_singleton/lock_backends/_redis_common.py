"""The parts of the Redis lease that do no I/O, shared by the sync and async classes."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends.base import require_positive_ttl, validate_prefix

DEFAULT_PREFIX = "strict-singleton:"

# KEYS[1] = lock key, KEYS[2] = fencing counter key; ARGV[1] = owner token, ARGV[2] = TTL in ms.
# Returns the new fencing token (>= 1) when the lease was taken, 0 when someone else holds it.
# SET NX and INCR run in one script so a token is only ever issued to the holder.
ACQUIRE_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

# KEYS[1] = lock key; ARGV[1] = owner token, ARGV[2] = release channel.
# Deletes the key only if the token still owns it, then wakes waiters. Returns 1 or 0.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0
"""

# KEYS[1] = lock key; ARGV[1] = owner token, ARGV[2] = new TTL in ms.
# Resets the TTL only if the token still owns the key. Returns 1 or 0.
EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASED_SUFFIX = "}:released"
# Longest a waiter sleeps without news: bounds the cost of a lost pub/sub message.
MAX_QUIET_WAIT = 0.5


class RedisKeys:
    """Key naming. All keys of one instance ID share a hash tag (one Cluster slot).

    ``{prefix}{<instance_id>}:lock`` holds the owner token, ``...:fence`` the fencing
    counter (kept forever: it must only grow), ``...:released`` is the pub/sub channel.
    """

    def __init__(self, prefix: str, backend: str) -> None:
        self.prefix = validate_prefix(prefix, backend=backend)

    def lock(self, instance_id: str) -> str:
        return f"{self.prefix}{{{instance_id}}}:lock"

    def fence(self, instance_id: str) -> str:
        return f"{self.prefix}{{{instance_id}}}:fence"

    def channel(self, instance_id: str) -> str:
        return f"{self.prefix}{{{instance_id}{_RELEASED_SUFFIX}"

    def channel_pattern(self) -> str:
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}{{*{_RELEASED_SUFFIX}"

    def instance_of_channel(self, channel: str | bytes) -> str | None:
        text = channel.decode() if isinstance(channel, bytes) else channel
        head = self.prefix + "{"
        if text.startswith(head) and text.endswith(_RELEASED_SUFFIX):
            return text[len(head) : -len(_RELEASED_SUFFIX)]
        return None


def ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def validate_redis_ttl(ttl: float, backend: str) -> None:
    require_positive_ttl(ttl, backend=backend)
    if ttl < 0.001:
        raise InvalidArgumentError(f"lease_ttl must be at least 1 ms on Redis, got {ttl!r}", backend=backend)


def describe_client(client: Any) -> str:
    """``redis(host:port/db)`` from a client's pool, without credentials."""
    try:
        kw = client.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return f"redis({where}/{kw.get('db', 0)})"
    except AttributeError:
        return "redis"


def unavailable(exc: BaseException, *, instance_id: str | None, backend: str) -> LockUnavailableError:
    # redis-py messages name host and port but never the password.
    return LockUnavailableError(
        f"lock store unavailable: {type(exc).__name__}: {exc}", instance_id=instance_id, backend=backend
    )


class _Settable(Protocol):
    def set(self) -> None: ...


E = TypeVar("E", bound=_Settable)


class WaiterRegistry(Generic[E]):
    """Events of callers waiting for a lease release, per instance ID.

    Shared by the thread (``threading.Event``) and asyncio (``asyncio.Event``)
    listeners. A waiter registers *before* it checks whether the lease is still held,
    so a release published after that check always finds it.
    """

    def __init__(self, new_event: Callable[[], E]) -> None:
        self._new_event = new_event
        self._waiters: dict[str, set[E]] = {}
        self._lock = threading.Lock()

    def register(self, instance_id: str) -> E:
        event = self._new_event()
        with self._lock:
            self._waiters.setdefault(instance_id, set()).add(event)
        return event

    def unregister(self, instance_id: str, event: E) -> None:
        with self._lock:
            events = self._waiters.get(instance_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[instance_id]

    def wake(self, instance_id: str) -> None:
        with self._lock:
            events = list(self._waiters.get(instance_id, ()))
        for event in events:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            events = [e for es in self._waiters.values() for e in es]
        for event in events:
            event.set()


def quiet_wait(timeout: float, pttl_ms: int) -> float:
    """How long to wait for a release message given the lease's remaining PTTL."""
    limit = min(timeout, MAX_QUIET_WAIT)
    if pttl_ms > 0:
        limit = min(limit, pttl_ms / 1000.0 + 0.001)
    return max(0.0, limit)
