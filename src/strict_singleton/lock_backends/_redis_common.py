"""The parts of the Redis leases that do no I/O, shared by the sync and async classes
(and by Redlock, whose nodes hold ordinary Redis leases)."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from typing import Any

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends.base import RequestRecord, StartRecord, require_positive_ttl, validate_prefix

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from strict_singleton._extras import missing_extra_message

    raise ImportError(missing_extra_message("RedisLease", "redis", exc)) from exc

# Everything redis-py raises for a failed call. RedisClusterException (e.g. "all keys
# must map to the same key slot", or no reachable node) does not derive from RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
_log = logging.getLogger("strict_singleton.redis")

DEFAULT_PREFIX = "strict-singleton:"

# KEYS[1] = lock key, KEYS[2] = fencing counter key, KEYS[3] = start record key,
# KEYS[4] = request record key; ARGV[1] = owner token, ARGV[2] = TTL in ms.
# Returns {new fencing token (>= 1), start record or nil, the start record's PTTL in ms,
# request record or nil} when the lease was taken, {0} when someone else holds it.
# SET NX and INCR run in one script so a token is only ever issued to the holder; the
# records and the time Redis will keep the start record (by Redis's clock, not ours)
# come back in the same round trip. Nothing here writes either record.
ACQUIRE_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('INCR', KEYS[2]), redis.call('GET', KEYS[3]), redis.call('PTTL', KEYS[3]),
          redis.call('GET', KEYS[4])}
end
return {0}
"""

# KEYS[1] = lock key, KEYS[2] = record key (the start record's, or the request record's);
# ARGV[1] = owner token, ARGV[2] = the record, ARGV[3] = its TTL in ms.
# Only if the token still owns the lock: stores the record, keeping the lock. Returns 1 or 0.
RECORD_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] = lock key, KEYS[2] = start record key; ARGV[1] = owner token,
# ARGV[2] = release channel, ARGV[3] = start record, ARGV[4] = its TTL in ms.
# Only if the token still owns the lock: deletes it, stores the record with its TTL and
# wakes waiters, in one atomic step. Returns 1 or 0.
RELEASE_RECORDING_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0
"""


def parse_acquire(reply: Any) -> tuple[int, StartRecord | None, float | None, RequestRecord | None]:
    """(fencing token or 0, start record, seconds Redis keeps it, request record) from an
    ``ACQUIRE_SCRIPT`` reply."""
    if not isinstance(reply, (list, tuple)) or not reply:
        raise ValueError(f"unexpected acquire reply {reply!r}")
    fence = int(reply[0])
    record = StartRecord.decode(reply[1]) if fence > 0 and len(reply) > 1 else None
    left = None
    if record is not None and len(reply) > 2 and int(reply[2]) >= 0:  # -1: no expiry, -2: gone
        left = int(reply[2]) / 1000.0
    request = RequestRecord.decode(reply[3]) if fence > 0 and len(reply) > 3 else None
    return fence, record, left, request


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

# Longest a waiter sleeps without news: bounds the cost of a lost pub/sub message.
MAX_QUIET_WAIT = 0.5
_PLAIN_CHANNEL_SUFFIX = "}:released"
_DIGEST_MARK = "#"  # after the prefix, where a plain key always has "{"
_DIGEST_LENGTH = 16


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisKeys:
    """Key naming. Every key of one instance ID lies in one Redis Cluster slot.

    Cluster hashes only a key's hash tag: the text between its first ``{`` and the
    first ``}`` after it, when that text is not empty (else the whole key).

    * Plain form, for every ID that does not start with ``}`` (the prefix has no
      braces, so the tag is the ID up to its first ``}``, never empty)::

          {prefix}{<instance_id>}:lock      the owner token
          {prefix}{<instance_id>}:fence     the fencing counter (kept forever: it must only grow)
          {prefix}{<instance_id>}:released  the pub/sub release channel
          {prefix}{<instance_id>}:start     the last start record (expires)
          {prefix}{<instance_id>}:request   the last request record (expires, long-lived)

      These names must stay fixed: processes running different releases must lock
      the same key for the same ID.
    * Digest form, for an ID that starts with ``}`` or is empty (its plain tag would be
      empty: Cluster would hash whole keys and split lock and fence over two slots)::

          {prefix}#{<sha256(instance_id)[:16]>}:lock:<instance_id>
          (and :fence:, :released:, :start:, :request:)

      The ``#`` after the prefix sits where every plain key has ``{``, so no ID's
      plain keys can equal another ID's digest keys; the ID stays readable at the end.
    """

    def __init__(self, prefix: str, backend: str) -> None:
        self.prefix = validate_prefix(prefix, backend=backend)

    def _name(self, instance_id: str, kind: str) -> str:
        if instance_id[:1] not in ("", "}"):
            return f"{self.prefix}{{{instance_id}}}:{kind}"
        return f"{self._digest_head(instance_id)}{kind}:{instance_id}"

    def _digest_head(self, instance_id: str) -> str:
        digest = hashlib.sha256(instance_id.encode("utf-8")).hexdigest()[:_DIGEST_LENGTH]
        return f"{self.prefix}{_DIGEST_MARK}{{{digest}}}:"

    def lock(self, instance_id: str) -> str:
        return self._name(instance_id, "lock")

    def fence(self, instance_id: str) -> str:
        return self._name(instance_id, "fence")

    def channel(self, instance_id: str) -> str:
        return self._name(instance_id, "released")

    def start(self, instance_id: str) -> str:
        """The start record left by the last holder that started an instance (expires)."""
        return self._name(instance_id, "start")

    def request(self, instance_id: str) -> str:
        """The request record left by the last holder that sent a request (expires, long-lived)."""
        return self._name(instance_id, "request")

    def acquire_keys(self, instance_id: str) -> list[str]:
        return [self.lock(instance_id), self.fence(instance_id), self.start(instance_id), self.request(instance_id)]

    def channel_patterns(self) -> list[str]:
        """Glob patterns that match the release channel of every ID (plain and digest form)."""
        escaped = _glob_escape(self.prefix)
        return [f"{escaped}{{*{_PLAIN_CHANNEL_SUFFIX}", f"{escaped}{_DIGEST_MARK}{{*}}:released:*"]

    def instance_of_channel(self, channel: str | bytes) -> str | None:
        """The instance ID whose release channel this is, or ``None`` for a foreign channel."""
        text = channel.decode() if isinstance(channel, bytes) else channel
        plain_head = self.prefix + "{"
        if text.startswith(plain_head) and text.endswith(_PLAIN_CHANNEL_SUFFIX):
            return text[len(plain_head) : -len(_PLAIN_CHANNEL_SUFFIX)]
        instance_id = text[len(self._digest_head("")) + len("released:") :]
        return instance_id if text == self.channel(instance_id) else None


def ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def validate_redis_ttl(ttl: float, backend: str) -> None:
    require_positive_ttl(ttl, backend=backend)
    if ttl < 0.001:
        raise InvalidArgumentError(f"lease_ttl must be at least 1 ms on Redis, got {ttl!r}", backend=backend)


def describe_client(client: Any) -> str:
    """``redis(host:port/db)``, or ``redis-cluster(host:port)``, from a client, without credentials."""
    default_node = getattr(client, "get_default_node", None)
    if callable(default_node):
        node = default_node()
        return f"redis-cluster({getattr(node, 'host', '?')}:{getattr(node, 'port', '?')})"
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


def quiet_wait(timeout: float, pttl_ms: int) -> float:
    """How long to wait for a release message given the lease's remaining PTTL."""
    limit = min(timeout, MAX_QUIET_WAIT)
    if pttl_ms > 0:
        limit = min(limit, pttl_ms / 1000.0 + 0.001)
    return max(0.0, limit)


# Policies under which Redis may evict a key that has a TTL, i.e. a held lease.
_EVICTING = ("volatile-", "allkeys-")


def evicting_policy(reply: Any) -> str | None:
    """The ``maxmemory-policy`` in a ``CONFIG GET`` reply if it may evict a held lease, else ``None``."""
    if not isinstance(reply, dict):
        return None
    for key, value in reply.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        policy = value.decode() if isinstance(value, bytes) else str(value)
        if name == "maxmemory-policy" and policy.startswith(_EVICTING):
            return policy
    return None


def warn_if_evicting(reply: Any, *, backend: str) -> None:
    policy = evicting_policy(reply)
    if policy is not None:
        _log.warning(
            "lock store %s has maxmemory-policy %s: under memory pressure Redis may evict a held lease's key "
            "and let a second caller in; configure noeviction for a lock store",
            backend,
            policy,
        )


class EvictionCheck:
    """Reads a node's ``maxmemory-policy`` once per lease object and warns if it evicts.

    A refused ``CONFIG`` (managed Redis often disables it) settles the check quietly;
    a connection problem leaves it due for the next acquire.
    """

    def __init__(self) -> None:
        self._due = True
        self._lock = threading.Lock()

    def take(self) -> bool:
        """True for the one caller that should read the policy now."""
        with self._lock:
            due, self._due = self._due, False
        return due

    def answer(self, reply: Any = None, *, error: BaseException | None = None, backend: str) -> None:
        if error is None:
            warn_if_evicting(reply, backend=backend)
        elif isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError)):
            self._due = True  # unreachable now: try again at the next acquire
        else:
            _log.debug("maxmemory-policy of %s not checked: %r", backend, error)
