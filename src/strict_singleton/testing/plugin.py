"""pytest plugin (entry point ``pytest11``): fixtures for testing code that starts singletons.

* ``durable_backend``: a :class:`DurableTestBackend` on a free port, stopped after the
  test. Profile ``atomic`` by default; pick another indirectly:
  ``@pytest.mark.parametrize("durable_backend", ["overwrite"], indirect=True)``.
* ``redis_server``: a real redis-server process on a free port, killed after the test.
* ``azurite``: the Azurite Blob emulator on a free port, in memory, stopped after the test.
* ``starter_swarm``: fire N concurrent calls of any callable (sync: threads behind a
  barrier; ``async def``: asyncio tasks) at one instance ID and get back what they
  returned and what the ``durable_backend`` actually did.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from strict_singleton.testing.azurite import Azurite
from strict_singleton.testing.backend import DurableTestBackend
from strict_singleton.testing.redis_server import RedisServer
from strict_singleton.testing.strategies import describe
from strict_singleton.testing.swarm import CallRecord, fire_tasks, fire_threads


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
    def __init__(self, backend: DurableTestBackend) -> None:
        self.backend = backend

    def __call__(self, fn: Callable[[str], Any], *, instance_id: str, n: int = 16) -> SwarmResult:
        """Call ``fn(instance_id)`` n times concurrently; count outcomes and backend effects."""
        if inspect.iscoroutinefunction(fn):
            return asyncio.run(self.fire_async(fn, instance_id=instance_id, n=n))
        before = self.backend.ledger.snapshot()
        records = fire_threads(n, lambda _i: fn(instance_id))
        return self._result(instance_id, records, before)

    async def fire_async(self, fn: Callable[[str], Any], *, instance_id: str, n: int = 16) -> SwarmResult:
        """The same from inside your own event loop (async clients are bound to their loop)."""
        before = self.backend.ledger.snapshot()
        records = await fire_tasks(n, lambda _i: fn(instance_id))
        return self._result(instance_id, records, before)

    def _result(self, instance_id: str, records: list[CallRecord], before: Any) -> SwarmResult:
        after = self.backend.ledger.snapshot()
        return SwarmResult(
            instance_id=instance_id,
            records=records,
            outcomes=Counter(describe(r.value) for r in records),
            created=after.created[instance_id] - before.created[instance_id],
            overwritten_active=after.overwritten_active[instance_id] - before.overwritten_active[instance_id],
        )


@pytest.fixture
def durable_backend(request: pytest.FixtureRequest) -> Iterator[DurableTestBackend]:
    profile: Any = getattr(request, "param", "atomic")
    backend = DurableTestBackend(profile=profile)
    backend.start()
    try:
        yield backend
    finally:
        backend.stop(grace=0)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azurite() -> Iterator[Azurite]:
    emulator = Azurite().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def starter_swarm(durable_backend: DurableTestBackend) -> StarterSwarm:
    return StarterSwarm(durable_backend)
