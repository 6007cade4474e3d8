"""Redis lease: ``SET NX PX`` with a token, token-checked release and extend, fencing by ``INCR``.

Guarantee: while the key lives, only the caller whose random token is stored in it
holds the lease; release and extend change nothing unless the caller's token is
still there.

Requirements on the Redis deployment (a lease is only as safe as its key's life):

* One master (or a Cluster slot's master) that does not lose writes while a lease is
  held; replicas and failover can lose a lease (use Redlock's quorum for that, or rely
  on the Durable backend's reuse policy as the second line of defence).
* ``maxmemory-policy noeviction``. Under a ``volatile-*`` or ``allkeys-*`` policy Redis
  evicts keys with a TTL under memory pressure, and a held lease vanishes (managed
  Redis often defaults to ``volatile-lru``). Each lease object reads the policy with
  ``CONFIG GET`` at its first acquire and logs a WARNING once if it evicts; a server
  that refuses ``CONFIG`` is not checked.
* A server clock that is slewed, not stepped (NTP in slew mode, e.g. ``chronyd``
  without ``makestep`` after boot): Redis expires keys by its wall clock, so a forward
  step expires every held lease at once.

Records: ``release_with_record`` and ``record_start`` leave a start record in the ID's
``:start`` key; ``record_request`` leaves a request record in its own ``:request`` key
(token-checked, in the same script as the check, with the caller's long TTL). Both keys
expire on their own and no other call writes or deletes them: ``acquire`` only reads
them (in its one script round trip) and returns them in its :class:`Grant`.

Redis Cluster works: all keys of one instance ID share a hash tag, whatever the ID
contains (see :class:`~strict_singleton.lock_backends._redis_common.RedisKeys`).

Waiters are woken through pub/sub: the release script publishes on a per-ID channel,
and one listener per backend object (a thread, or an asyncio task) holds one pub/sub
connection subscribed to the channels of exactly the IDs this process is waiting for
(:mod:`~strict_singleton.lock_backends._subscriptions`): a host receives only the
releases it waits for. A waiter checks the lease only after the server confirmed its
subscription, so a release published after that check always reaches it. Expiry does
not publish, so every wait is bounded by the key's remaining PTTL; without a live
subscription, waiters poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from strict_singleton.lock_backends._redis_common import (
    ACQUIRE_SCRIPT,
    DEFAULT_PREFIX,
    EXTEND_SCRIPT,
    RECORD_SCRIPT,
    REDIS_ERRORS,
    RELEASE_RECORDING_SCRIPT,
    RELEASE_SCRIPT,
    EvictionCheck,
    RedisKeys,
    describe_client,
    parse_acquire,
    quiet_wait,
    ttl_ms,
    unavailable,
    validate_redis_ttl,
)
from strict_singleton.lock_backends._subscriptions import ChannelInterest
from strict_singleton.lock_backends._wakeups import ReleaseBoard, wait_event
from strict_singleton.lock_backends.base import Grant, RequestRecord, StartRecord

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async

_log = logging.getLogger("strict_singleton.redis")
_POLL_WHEN_DEAF = 0.05  # without a live subscription, wake this often to re-check
_CONFIRM_WAIT = 1.0  # longest a waiter waits for its SUBSCRIBE's confirmation before polling instead


def _text(channel: str | bytes) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


class _Dead(Exception):
    """The listener's connection broke: the listener stops rather than reconnect."""


def _one_connection(pubsub: Any, dead: threading.Event) -> Any:
    """``pubsub`` made to never reconnect: a lost connection ends it (``dead`` set).

    redis-py would reconnect a pub/sub connection on its own, from whichever thread sends
    or reads next, and re-subscribe every channel it remembers, including ones being left:
    two threads reconnecting one connection stall each other for seconds, and the
    re-subscriptions are not the bookkeeping's. Instead the listener stops, which forgets
    the bookkeeping, wakes every waiter to re-check, and closes the connection (the
    server drops its subscriptions); the next waiter starts a fresh one.
    """

    def no_reconnect(*_args: Any, **_kwargs: Any) -> Any:
        dead.set()
        raise _Dead("the release listener's connection was lost")

    pubsub._reconnect = no_reconnect  # consulted on every failed or stale command of this pub/sub
    return pubsub


class _RedisLeaseBase:
    """Construction and naming shared by the sync and async Redis leases."""

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX, name: str | None = None) -> None:
        self._redis = client
        self._name = name or describe_client(client)
        self._keys = RedisKeys(prefix, self._name)
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._release_recording = client.register_script(RELEASE_RECORDING_SCRIPT)
        self._record = client.register_script(RECORD_SCRIPT)
        self._extend = client.register_script(EXTEND_SCRIPT)
        self._live = False  # the release listener is running on a connected pub/sub
        self._waiters = ReleaseBoard()  # keyed by instance ID; the listener notifies
        self._eviction = EvictionCheck()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, prefix={self._keys.prefix!r})"

    def validate_ttl(self, ttl: float) -> None:
        validate_redis_ttl(ttl, self._name)

    def _resubscribed(self, channel: str | bytes) -> None:
        """redis-py re-subscribed after a reconnect: a release published while the connection
        was down was never delivered, so the channel's waiters re-check the lease now."""
        instance_id = self._keys.instance_of_channel(channel)
        if instance_id is not None:
            self._waiters.notify(instance_id)


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
        # Guards the listener, its pub/sub and the channel bookkeeping, and orders the
        # SUBSCRIBE/UNSUBSCRIBE commands as the bookkeeping decided them.
        self._listener_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._pubsub: Any = None
        self._interest: ChannelInterest[threading.Event] = ChannelInterest()
        self._dead = threading.Event()  # the current listener's connection was lost
        self._stopping = threading.Event()

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        if self._eviction.take():
            self._check_policy()
        try:
            reply = self._acquire(keys=self._keys.acquire_keys(instance_id), args=[token, ttl_ms(ttl)])
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
        fence, record, left, request = parse_acquire(reply)
        if fence <= 0:
            return None
        return Grant(fencing_token=fence, valid_for=ttl, last_start=record, last_start_left=left, last_request=request)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        try:
            return bool(self._extend(keys=[self._keys.lock(instance_id)], args=[token, ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def release(self, instance_id: str, token: str) -> bool:
        args = [token, self._keys.channel(instance_id)]
        try:
            return bool(self._release(keys=[self._keys.lock(instance_id)], args=args))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        try:
            return bool(self._record(keys=keys, args=[token, record.encode(), ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        """Store ``record`` in the ``:request`` key for ``ttl`` seconds, only while ``token``
        holds the lease (kept); returns ``False`` and stores nothing otherwise."""
        keys = [self._keys.lock(instance_id), self._keys.request(instance_id)]
        try:
            return bool(self._record(keys=keys, args=[token, record.encode(), ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        args = [token, self._keys.channel(instance_id), record.encode(), ttl_ms(ttl)]
        try:
            return bool(self._release_recording(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        event = threading.Event()
        with self._waiters.waiting(instance_id, event.set), self._subscribed(instance_id, timeout) as subscribed:
            try:
                pttl = int(self._redis.pttl(self._keys.lock(instance_id)))
            except REDIS_ERRORS as exc:
                raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
            if pttl == -2:  # already free
                return
            limit = quiet_wait(timeout, pttl)
            event.wait(limit if subscribed else min(limit, _POLL_WHEN_DEAF))

    def _check_policy(self) -> None:
        try:
            reply = self._redis.config_get("maxmemory-policy")
        except Exception as exc:  # advisory only: never let it fail an acquire
            self._eviction.answer(error=exc, backend=self._name)
        else:
            self._eviction.answer(reply, backend=self._name)

    def close(self) -> None:
        self._stopping.set()
        thread = self._listener
        if thread is not None:
            thread.join(timeout=2.0)

    # -- the release listener -------------------------------------------------

    @contextlib.contextmanager
    def _subscribed(self, instance_id: str, timeout: float) -> Iterator[bool]:
        """Inside: subscribed to ``instance_id``'s release channel (``True``, confirmed by the
        server within ``timeout``), or not (``False``: the caller polls)."""
        channel = self._keys.channel(instance_id)
        generation = self._interest.generation
        joined = False
        try:
            live, joined = self._join(channel, generation)
            confirmed = live is not None and live.wait(min(timeout, _CONFIRM_WAIT))
            yield confirmed and self._live and self._interest.generation == generation
        finally:
            if joined:
                self._leave(channel, generation)

    def _join(self, channel: str, generation: int) -> tuple[threading.Event | None, bool]:
        """(the event the SUBSCRIBE's confirmation sets, or None: poll; whether counted in)."""
        with self._listener_lock:
            pubsub = self._ensure_listener()
            if pubsub is None or self._interest.generation != generation:
                return None, False
            live, send = self._interest.join(channel, threading.Event())
            if send:
                try:
                    self._send(pubsub, "subscribe", channel)
                except Exception as exc:  # the listener stops too; the bookkeeping is reset
                    _log.debug("could not subscribe to %s on %s: %r", channel, self._name, exc)
                    return None, True
        return live, True

    def _leave(self, channel: str, generation: int) -> None:
        with self._listener_lock:
            if self._interest.leave(channel, generation) and self._pubsub is not None:
                try:
                    self._send(self._pubsub, "unsubscribe", channel)
                except Exception as exc:  # as above
                    _log.debug("could not unsubscribe from %s on %s: %r", channel, self._name, exc)

    def _send(self, pubsub: Any, command: str, channel: str) -> None:
        """One command on the listener's connection, never on a lost one (no reconnect)."""
        if self._dead.is_set():
            raise _Dead("the release listener's connection was lost")
        getattr(pubsub, command)(channel)

    def _ensure_listener(self) -> Any:
        """The running listener's pub/sub (started if need be), or ``None`` once closed.
        Called with ``_listener_lock`` held."""
        if self._stopping.is_set():
            return None
        if self._listener is None or not self._listener.is_alive() or self._pubsub is None:
            self._dead = threading.Event()
            self._pubsub = _one_connection(self._redis.pubsub(), self._dead)
            self._live = True
            self._listener = threading.Thread(
                target=self._listen,
                args=(self._pubsub, self._dead),
                name=f"strict-singleton-listener-{self._name}",
                daemon=True,
            )
            self._listener.start()
        return self._pubsub

    def _listen(self, pubsub: Any, dead: threading.Event) -> None:
        try:
            while not self._stopping.is_set() and not dead.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    with self._listener_lock:
                        confirmed = self._interest.confirmed(_text(message["channel"]))
                    if confirmed is not None:
                        confirmed.set()
                    else:
                        self._resubscribed(message["channel"])
                elif message["type"] == "message":
                    instance_id = self._keys.instance_of_channel(message["channel"])
                    if instance_id is not None:
                        self._waiters.notify(instance_id)
        except Exception as exc:  # the listener only speeds waiters up; they poll without it
            _log.debug("release listener for %s stopped: %r", self._name, exc)
        finally:
            with self._listener_lock:  # no waiter sends on it from here on
                dead.set()
                self._live = False
                if self._pubsub is pubsub:
                    self._pubsub = None
                owed = self._interest.reset()
                with contextlib.suppress(Exception):
                    pubsub.close()  # the server drops every subscription of the connection
            for event in owed:
                event.set()
            self._waiters.notify_all()


class AsyncRedisLease(_RedisLeaseBase):
    """The asyncio twin of :class:`RedisLease`, over a ``redis.asyncio.Redis``.

    Use one object per event loop: its release listener is a task on the loop that
    first waited.
    """

    def __init__(self, client: redis_async.Redis, *, prefix: str = DEFAULT_PREFIX, name: str | None = None) -> None:
        super().__init__(client, prefix=prefix, name=name)
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._interest: ChannelInterest[asyncio.Event] = ChannelInterest()
        self._commands: asyncio.Lock | None = None  # orders SUBSCRIBE/UNSUBSCRIBE as the bookkeeping decided
        self._connected = asyncio.Event()  # the listener's pub/sub has sent its first command
        self._dead = threading.Event()  # the current listener's connection was lost
        self._stopping = False

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        if self._eviction.take():
            await self._check_policy()
        try:
            reply = await self._acquire(keys=self._keys.acquire_keys(instance_id), args=[token, ttl_ms(ttl)])
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
        fence, record, left, request = parse_acquire(reply)
        if fence <= 0:
            return None
        return Grant(fencing_token=fence, valid_for=ttl, last_start=record, last_start_left=left, last_request=request)

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        try:
            return bool(await self._extend(keys=[self._keys.lock(instance_id)], args=[token, ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def release(self, instance_id: str, token: str) -> bool:
        args = [token, self._keys.channel(instance_id)]
        try:
            return bool(await self._release(keys=[self._keys.lock(instance_id)], args=args))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        try:
            return bool(await self._record(keys=keys, args=[token, record.encode(), ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.request(instance_id)]
        try:
            return bool(await self._record(keys=keys, args=[token, record.encode(), ttl_ms(ttl)]))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        args = [token, self._keys.channel(instance_id), record.encode(), ttl_ms(ttl)]
        try:
            return bool(await self._release_recording(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        event = asyncio.Event()  # set by the listener task, on this loop
        with self._waiters.waiting(instance_id, event.set):
            async with self._subscribed(instance_id, timeout) as subscribed:
                try:
                    pttl = int(await self._redis.pttl(self._keys.lock(instance_id)))
                except REDIS_ERRORS as exc:
                    raise unavailable(exc, instance_id=instance_id, backend=self._name) from exc
                # redis.asyncio (8.2) can answer a command whose task was cancelled meanwhile, and
                # the cancellation is lost: honour it here rather than wait out the release.
                _raise_if_cancelling()
                if pttl == -2:
                    return
                limit = quiet_wait(timeout, pttl)
                await wait_event(event, limit if subscribed else min(limit, _POLL_WHEN_DEAF))

    async def _check_policy(self) -> None:
        try:
            reply = await self._redis.config_get("maxmemory-policy")
        except Exception as exc:  # advisory only: never let it fail an acquire
            self._eviction.answer(error=exc, backend=self._name)
        else:
            self._eviction.answer(reply, backend=self._name)

    async def close(self) -> None:
        self._stopping = True
        task = self._listener
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @contextlib.asynccontextmanager
    async def _subscribed(self, instance_id: str, timeout: float) -> AsyncIterator[bool]:
        """As :meth:`RedisLease._subscribed`."""
        channel = self._keys.channel(instance_id)
        generation = self._interest.generation
        joined = False
        try:
            live, joined = await self._join(channel, generation)
            confirmed = live is not None and await wait_event(live, min(timeout, _CONFIRM_WAIT))
            yield confirmed and self._live and self._interest.generation == generation
        finally:
            if joined:  # shielded: a second cancellation must not leave the channel counted
                await asyncio.shield(self._leave(channel, generation))

    def _lock(self) -> asyncio.Lock:
        if self._commands is None:
            self._commands = asyncio.Lock()
        return self._commands

    async def _join(self, channel: str, generation: int) -> tuple[asyncio.Event | None, bool]:
        async with self._lock():
            pubsub = self._ensure_listener()
            if pubsub is None or self._interest.generation != generation:
                return None, False
            live, send = self._interest.join(channel, asyncio.Event())
            if send:
                try:
                    await self._send(pubsub, "subscribe", channel)
                except Exception as exc:  # the listener stops too; the bookkeeping is reset
                    _log.debug("could not subscribe to %s on %s: %r", channel, self._name, exc)
                    return None, True
                finally:
                    self._connected.set()  # the listener reads from here on (and sees a failure)
        return live, True

    async def _leave(self, channel: str, generation: int) -> None:
        async with self._lock():
            if self._interest.leave(channel, generation) and self._pubsub is not None:
                try:
                    await self._send(self._pubsub, "unsubscribe", channel)
                except Exception as exc:
                    _log.debug("could not unsubscribe from %s on %s: %r", channel, self._name, exc)

    async def _send(self, pubsub: Any, command: str, channel: str) -> None:
        if self._dead.is_set():
            raise _Dead("the release listener's connection was lost")
        await getattr(pubsub, command)(channel)

    def _ensure_listener(self) -> Any:
        """The running listener's pub/sub (started if need be), or ``None`` once closed.
        Called with the command lock held."""
        if self._stopping:
            return None
        if self._listener is None or self._listener.done() or self._pubsub is None:
            self._dead = threading.Event()
            pubsub: Any = _one_connection(self._redis.pubsub(), self._dead)
            self._pubsub, self._live, self._connected = pubsub, True, asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub, self._connected, self._dead))
        return self._pubsub

    async def _listen(self, pubsub: Any, connected: asyncio.Event, dead: threading.Event) -> None:
        try:
            # The first SUBSCRIBE opens the connection (on a Cluster it also picks the node):
            # reading before it would open a second one.
            await connected.wait()
            while not self._stopping and not dead.is_set():
                message = await pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    confirmed = self._interest.confirmed(_text(message["channel"]))
                    if confirmed is not None:
                        confirmed.set()
                    else:
                        self._resubscribed(message["channel"])
                elif message["type"] == "message":
                    instance_id = self._keys.instance_of_channel(message["channel"])
                    if instance_id is not None:
                        self._waiters.notify(instance_id)
        except Exception as exc:
            _log.debug("release listener for %s stopped: %r", self._name, exc)
        finally:
            dead.set()  # no waiter sends on it from here on
            self._live = False
            if self._pubsub is pubsub:
                self._pubsub = None
            for event in self._interest.reset():
                event.set()
            self._waiters.notify_all()
            with contextlib.suppress(BaseException):
                async with self._lock():  # a send in progress ends first
                    await pubsub.aclose()  # the server drops every subscription of the connection


__all__ = ["AsyncRedisLease", "RedisLease"]
