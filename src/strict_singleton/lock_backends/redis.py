"""Redis lease: ``SET NX PX`` with a token, token-checked release and extend, fencing by ``INCR``.

Guarantee: while the key lives, only the caller whose random token is stored in it
holds the lease; release and extend change nothing unless the caller's token is
still there. Assumptions: one Redis master (or a Cluster slot's master) that does
not lose writes while a lease is held; replicas and failover can lose a lease (use
:mod:`strict_singleton.lock_backends.redlock`-style quorum for that, or rely on the
Durable backend's reuse policy as the second line of defence).

Waiters are woken through pub/sub: the release script publishes on a per-ID channel
and one listener per backend object (a thread, or an asyncio task) receives all of
them with a single pattern subscription. Expiry does not publish, so every wait is
bounded by the key's remaining PTTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from strict_singleton.lock_backends._redis_common import (
    ACQUIRE_SCRIPT,
    DEFAULT_PREFIX,
    EXTEND_SCRIPT,
    RELEASE_SCRIPT,
    RedisKeys,
    WaiterRegistry,
    describe_client,
    quiet_wait,
    ttl_ms,
    unavailable,
    validate_redis_ttl,
)
from strict_singleton.lock_backends.base import Grant

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async

try:
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RedisLease needs the 'redis' extra: pip install 'strict-singleton[redis]'") from exc

_log = logging.getLogger("strict_singleton.redis")
_POLL_WHEN_DEAF = 0.05  # without a live subscription, wake this often to re-check


class _RedisLeaseBase:
    """Construction and naming shared by the sync and async Redis leases."""

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX, name: str | None = None) -> None:
        self._redis = client
        self._name = name or describe_client(client)
        self._keys = RedisKeys(prefix, self._name)
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._extend = client.register_script(EXTEND_SCRIPT)
        self._live = False  # the release listener is subscribed

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, prefix={self._keys.prefix!r})"

    def validate_ttl(self, ttl: float) -> None:
        validate_redis_ttl(ttl, self._name)


class RedisLease(_RedisLeaseBase):
    """A lease per instance ID in one Redis server (or Cluster), for the sync starter.

    Args:
        client: a ``redis.Redis`` (or ``redis.RedisCluster``); its connection settings,
            timeouts and retries are the caller's choice and are not changed.
        prefix: key prefix (no braces); keys are ``{prefix}{<instance_id>}:lock`` etc.
        name: display name for logs and errors; defaults to ``redis(host:port/db)``.
    """

    def __init__(self, client: redis_sync.Redis, *, prefix: str = DEFAULT_PREFIX, name: str | None = None) -> None:
        super().__init__(client, prefix=prefix, name=name)
        self._registry: WaiterRegistry[threading.Event] = WaiterRegistry(threading.Event)
        self._listener_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._settled = threading.Event()  # set once the listener is subscribed or has failed
        self._stopping = threading.Event()

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        keys = [self._keys.lock(instance_id), self._keys.fence(instance_id)]
        try:
            fence = int(self._acquire(keys=keys, args=[token, ttl_ms(ttl)]))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
        return Grant(fencing_token=fence, valid_for=ttl) if fence > 0 else None

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        try:
            return bool(self._extend(keys=[self._keys.lock(instance_id)], args=[token, ttl_ms(ttl)]))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def release(self, instance_id: str, token: str) -> bool:
        args = [token, self._keys.channel(instance_id)]
        try:
            return bool(self._release(keys=[self._keys.lock(instance_id)], args=args))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        event = self._registry.register(instance_id)
        try:
            subscribed = self._ensure_listener()
            try:
                pttl = int(self._redis.pttl(self._keys.lock(instance_id)))
            except RedisError as exc:
                raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
            if pttl == -2:  # already free
                return
            limit = quiet_wait(timeout, pttl)
            event.wait(limit if subscribed else min(limit, _POLL_WHEN_DEAF))
        finally:
            self._registry.unregister(instance_id, event)

    def close(self) -> None:
        self._stopping.set()
        thread = self._listener
        if thread is not None:
            thread.join(timeout=2.0)

    # -- the release listener -------------------------------------------------

    def _ensure_listener(self) -> bool:
        with self._listener_lock:
            if self._stopping.is_set():
                return False
            if self._listener is None or not self._listener.is_alive():
                self._settled.clear()
                self._listener = threading.Thread(
                    target=self._listen, name=f"strict-singleton-listener-{self._name}", daemon=True
                )
                self._listener.start()
        self._settled.wait(timeout=1.0)
        return self._live

    def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            pubsub.psubscribe(self._keys.channel_pattern())
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._live = True
                    self._settled.set()
                elif message["type"] == "pmessage":
                    instance_id = self._keys.instance_of_channel(message["channel"])
                    if instance_id is not None:
                        self._registry.wake(instance_id)
        except Exception as exc:  # the listener only speeds waiters up; they poll without it
            _log.debug("release listener for %s stopped: %r", self._name, exc)
        finally:
            self._live = False
            self._settled.set()
            self._registry.wake_all()
            with contextlib.suppress(Exception):
                pubsub.close()


class AsyncRedisLease(_RedisLeaseBase):
    """The asyncio twin of :class:`RedisLease`, over a ``redis.asyncio.Redis``.

    Use one object per event loop: its release listener is a task on the loop that
    first waited.
    """

    def __init__(self, client: redis_async.Redis, *, prefix: str = DEFAULT_PREFIX, name: str | None = None) -> None:
        super().__init__(client, prefix=prefix, name=name)
        self._registry: WaiterRegistry[asyncio.Event] = WaiterRegistry(asyncio.Event)
        self._listener: asyncio.Task[None] | None = None
        self._settled: asyncio.Event | None = None
        self._stopping = False

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        keys = [self._keys.lock(instance_id), self._keys.fence(instance_id)]
        try:
            fence = int(await self._acquire(keys=keys, args=[token, ttl_ms(ttl)]))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
        return Grant(fencing_token=fence, valid_for=ttl) if fence > 0 else None

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        try:
            return bool(await self._extend(keys=[self._keys.lock(instance_id)], args=[token, ttl_ms(ttl)]))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def release(self, instance_id: str, token: str) -> bool:
        args = [token, self._keys.channel(instance_id)]
        try:
            return bool(await self._release(keys=[self._keys.lock(instance_id)], args=args))
        except RedisError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        event = self._registry.register(instance_id)
        try:
            subscribed = await self._ensure_listener()
            try:
                pttl = int(await self._redis.pttl(self._keys.lock(instance_id)))
            except RedisError as exc:
                raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
            if pttl == -2:
                return
            limit = quiet_wait(timeout, pttl)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), limit if subscribed else min(limit, _POLL_WHEN_DEAF))
        finally:
            self._registry.unregister(instance_id, event)

    async def close(self) -> None:
        self._stopping = True
        task = self._listener
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _ensure_listener(self) -> bool:
        if self._stopping:
            return False
        if self._listener is None or self._listener.done():
            self._settled = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen(self._settled))
        assert self._settled is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), 1.0)
        return self._live

    async def _listen(self, settled: asyncio.Event) -> None:
        pubsub: Any = self._redis.pubsub()
        try:
            await pubsub.psubscribe(self._keys.channel_pattern())
            while not self._stopping:
                message = await pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._live = True
                    settled.set()
                elif message["type"] == "pmessage":
                    instance_id = self._keys.instance_of_channel(message["channel"])
                    if instance_id is not None:
                        self._registry.wake(instance_id)
        except Exception as exc:
            _log.debug("release listener for %s stopped: %r", self._name, exc)
        finally:
            self._live = False
            settled.set()
            self._registry.wake_all()
            with contextlib.suppress(Exception):
                await pubsub.aclose()


__all__ = ["AsyncRedisLease", "RedisLease"]
