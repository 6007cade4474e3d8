"""The start strategies the race harness compares, each as "start this ID, say what happened".

* ``naive``: the documented singleton pattern, verbatim: read the status by the fixed
  ID; if there is none, or it is Completed/Failed/Terminated, schedule. It races.
* ``redis-lock``: the obvious do-it-yourself fix: ``with redis_client.lock(...)``
  around the naive code (redis-py's lock: polling waiters, no visibility check).
* ``strict``: :class:`~strict_singleton.SingletonStarter` with the configured lease.
* ``unlocked``: ``SingletonStarter`` with :class:`UnsafeNoLease`, a lease that never
  refuses anyone. Deliberately broken: it shows what the harness catches when a lock
  does nothing (the reuse policy still protects on ``atomic``, nothing does on
  ``overwrite``).

Every strategy's result, named by :func:`strict_singleton.testing.swarm.describe`, is one
of ``started``, ``already_running``, ``busy``, ``rejected`` (the backend refused a
duplicate with ALREADY_EXISTS and the caller saw the raw error) or ``error:<Type>``.

A strategy can carry an :class:`Instrument` (the benchmarks' counters): it wraps the
lease backend of ``strict`` / ``unlocked`` and is entered around every start call.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from durabletask.client import OrchestrationStatus

from strict_singleton.lock_backends.base import Grant
from strict_singleton.options import StarterOptions

STRATEGIES: tuple[str, ...] = ("naive", "redis-lock", "strict", "unlocked")
ORCHESTRATOR = "race_orchestrator"
_RESTARTABLE = (OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED)


def naive_start(client: Any, orchestrator: Any, *, instance_id: str, input: Any = None) -> bool:
    """The docs' check-then-schedule. Returns True when it scheduled (it *believes* it started)."""
    state = client.get_orchestration_state(instance_id)
    if state is None or state.runtime_status in _RESTARTABLE:
        client.schedule_new_orchestration(orchestrator, instance_id=instance_id, input=input)
        return True
    return False


async def naive_start_async(client: Any, orchestrator: Any, *, instance_id: str, input: Any = None) -> bool:
    state = await client.get_orchestration_state(instance_id)
    if state is None or state.runtime_status in _RESTARTABLE:
        await client.schedule_new_orchestration(orchestrator, instance_id=instance_id, input=input)
        return True
    return False


class Instrument(Protocol):
    """Measurement hooks for one strategy in one starter process (see ``RaceConfig.instrument``).

    ``wrap_lock`` gets the lease backend a ``strict`` / ``unlocked`` starter is built with
    and returns the one it uses instead (a proxy implementing the same protocol);
    ``calling()`` is entered around each start call, in the caller's thread or task;
    ``report()`` is read once the strategy is closed (every background finish done).
    """

    def wrap_lock(self, lock: Any) -> Any: ...

    def calling(self) -> AbstractContextManager[Any]: ...

    def report(self) -> dict[str, Any]: ...


class UnsafeNoLease:
    """A lease backend that grants every request: a broken lock, for proving the harness can fail."""

    name = "unsafe-no-lease"

    def __init__(self) -> None:
        self._fence = itertools.count(1)

    def validate_ttl(self, ttl: float) -> None:
        pass

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        return Grant(fencing_token=next(self._fence), valid_for=ttl)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        return True

    def release(self, instance_id: str, token: str) -> bool:
        return True

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


class AsyncUnsafeNoLease:
    """The asyncio twin of :class:`UnsafeNoLease`."""

    name = "unsafe-no-lease"

    def __init__(self) -> None:
        self._sync = UnsafeNoLease()

    def validate_ttl(self, ttl: float) -> None:
        pass

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        return self._sync.acquire(instance_id, token, ttl)

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        return True

    async def release(self, instance_id: str, token: str) -> bool:
        return True

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        return None

    async def close(self) -> None:
        return None


WORKER_LOGGER = "strict_singleton.race.worker"


def quiet_logger() -> logging.Logger:
    """A logger for harness clients: the SDK logs every start at INFO, which floods the swarm."""
    log = logging.getLogger("strict_singleton.race.durabletask")
    log.setLevel(logging.WARNING)
    return log


def worker_logger() -> logging.Logger:
    """The logger of the race's own Durable worker and control client: silent unless a
    handler is attached to it (``strict-singleton race --verbose`` does).

    Its warnings are expected noise here: on the ``overwrite`` profile the worker warns
    about every instance that was replaced under it, and again when it is stopped.
    """
    log = logging.getLogger(WORKER_LOGGER)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


class SyncStrategy:
    """A strategy bound to one process's clients: ``start(instance_id) -> outcome``."""

    def __init__(
        self,
        name: str,
        *,
        address: str,
        lock_url: str,
        lease_ttl: float,
        wait: float,
        confirm_visible: bool = True,
        instrument: Instrument | None = None,
    ) -> None:
        from durabletask.client import TaskHubGrpcClient

        from strict_singleton import SingletonStarter
        from strict_singleton.lock_backends import from_url

        self.name = name
        self._instrument = instrument
        self._client = TaskHubGrpcClient(host_address=address, logger=quiet_logger())
        self._closers: list[Callable[[], Any]] = [self._client.close]
        if name == "naive":
            self._start: Callable[[str], Any] = lambda iid: naive_start(self._client, ORCHESTRATOR, instance_id=iid)
        elif name == "redis-lock":
            import redis

            if not lock_url.startswith(("redis://", "rediss://")):
                raise ValueError("the redis-lock strategy needs --lock redis://...")
            r = redis.Redis.from_url(lock_url)
            self._closers.append(r.close)

            def locked(iid: str) -> Any:
                lock = r.lock(f"redis-lock:{iid}", timeout=lease_ttl, blocking_timeout=wait)
                if not lock.acquire():
                    return "busy"
                try:
                    return naive_start(self._client, ORCHESTRATOR, instance_id=iid)
                finally:
                    lock.release()

            self._start = locked
        elif name in ("strict", "unlocked"):
            lock: Any = from_url(lock_url) if name == "strict" else UnsafeNoLease()
            if instrument is not None:
                lock = instrument.wrap_lock(lock)
            starter = SingletonStarter(
                self._client,
                lock=lock,
                lease_ttl=lease_ttl,
                wait=wait,
                options=StarterOptions(confirm_visible=confirm_visible),
            )
            self._closers[:0] = [starter.close, lock.close]
            self._start = lambda iid: starter.start(ORCHESTRATOR, instance_id=iid)
        else:
            raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")

    def start(self, instance_id: str) -> Any:
        if self._instrument is None:
            return self._start(instance_id)
        with self._instrument.calling():
            return self._start(instance_id)

    def close(self) -> None:
        for close in self._closers:
            close()


class AsyncStrategy:
    """The asyncio twin of :class:`SyncStrategy`; build it inside the running loop."""

    def __init__(
        self,
        name: str,
        *,
        address: str,
        lock_url: str,
        lease_ttl: float,
        wait: float,
        confirm_visible: bool = True,
        instrument: Instrument | None = None,
    ) -> None:
        from durabletask.client import AsyncTaskHubGrpcClient

        from strict_singleton import AsyncSingletonStarter
        from strict_singleton.lock_backends import from_url

        self.name = name
        self._instrument = instrument
        self._client = AsyncTaskHubGrpcClient(host_address=address, logger=quiet_logger())
        self._closers: list[Callable[[], Awaitable[Any]]] = [self._client.close]
        if name == "naive":

            async def naive(iid: str) -> Any:
                return await naive_start_async(self._client, ORCHESTRATOR, instance_id=iid)

            self._start: Callable[[str], Awaitable[Any]] = naive
        elif name == "redis-lock":
            import redis.asyncio as aioredis

            if not lock_url.startswith(("redis://", "rediss://")):
                raise ValueError("the redis-lock strategy needs --lock redis://...")
            r = aioredis.Redis.from_url(lock_url)
            self._closers.append(r.aclose)

            async def locked(iid: str) -> Any:
                lock = r.lock(f"redis-lock:{iid}", timeout=lease_ttl, blocking_timeout=wait)
                if not await lock.acquire():
                    return "busy"
                try:
                    return await naive_start_async(self._client, ORCHESTRATOR, instance_id=iid)
                finally:
                    await lock.release()

            self._start = locked
        elif name in ("strict", "unlocked"):
            lock: Any = from_url(lock_url, asynchronous=True) if name == "strict" else AsyncUnsafeNoLease()
            if instrument is not None:
                lock = instrument.wrap_lock(lock)
            starter = AsyncSingletonStarter(
                self._client,
                lock=lock,
                lease_ttl=lease_ttl,
                wait=wait,
                options=StarterOptions(confirm_visible=confirm_visible),
            )
            self._closers[:0] = [starter.aclose, lock.close]

            async def strict(iid: str) -> Any:
                return await starter.start(ORCHESTRATOR, instance_id=iid)

            self._start = strict
        else:
            raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")

    async def start(self, instance_id: str) -> Any:
        if self._instrument is None:
            return await self._start(instance_id)
        with self._instrument.calling():
            return await self._start(instance_id)

    async def close(self) -> None:
        for close in self._closers:
            await close()
