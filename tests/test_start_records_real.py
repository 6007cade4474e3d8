"""Start records on real components: the record wait does not depend on the two starters'
wall clocks (Redis), a record that reaches only a minority of Redlock nodes still keeps the
lease held, a record on a bare majority is read back by any other, and a one-shot async start
still leaves its record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from durabletask.client import TaskHubGrpcClient

from strict_singleton import SingletonStarter, StartOutcome
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.lock_backends.redlock import RedlockLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from suite_helpers import poll_until


def _clock(offset: float) -> Any:
    return lambda: datetime.now(timezone.utc) + timedelta(seconds=offset)


@pytest.mark.parametrize("offsets", [(0.0, 0.0), (-0.45, 0.45), (0.45, -0.45)], ids=["same", "reader-ahead", "behind"])
def test_the_record_wait_does_not_depend_on_the_starters_wall_clocks(
    strict_singleton_redis: RedisServer, offsets: tuple[float, float]
) -> None:
    """Each starter within clock_skew of the backend, 0.9 s apart from each other; reads lag 1.8 s."""
    with DurableTestBackend(profile="overwrite", visibility_delay=1.8) as backend:
        client = TaskHubGrpcClient(host_address=backend.address)
        opts: dict[str, Any] = {
            "lease_ttl": 1,
            "options": StarterOptions(visibility_timeout=2, clock_skew=0.5, background_finish=False),
        }
        starters = [
            SingletonStarter(
                client, lock=RedisLease(redis.Redis(port=strict_singleton_redis.port)), _wall_clock=_clock(o), **opts
            )
            for o in offsets
        ]
        outcomes = [s.start("orch", instance_id="skewed").outcome for s in starters]
        snap = backend.ledger.snapshot()
        for s in starters:
            s.close()
        client.close()
    assert outcomes == [StartOutcome.STARTED, StartOutcome.ALREADY_RUNNING]
    assert snap.created["skewed"] == 1 and snap.overwritten_active["skewed"] == 0


class _Node:
    """A redis.Redis whose scripts fail as if the node were unreachable while ``down``."""

    def __init__(self, port: int) -> None:
        self._r = redis.Redis(port=port, socket_timeout=1)
        self.down = False

    def register_script(self, text: str) -> Any:
        script = self._r.register_script(text)

        def call(*a: Any, **k: Any) -> Any:
            if self.down:
                raise redis.exceptions.ConnectionError("simulated: node unreachable")
            return script(*a, **k)

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)


@pytest.fixture
def five_nodes() -> Iterator[list[RedisServer]]:
    servers = [RedisServer().start() for _ in range(5)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_redlock_record_on_a_minority_keeps_the_lease_and_the_hold_works(
    five_nodes: list[RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never more than 2 of 5 nodes unreachable. A holds {0,1,2}; node 2 fails the record;
    later B's majority is {2,3,4}. The record step failing leaves A's lease held, so the
    visibility hold really holds, and B answers ALREADY_RUNNING."""
    nodes = [_Node(s.port) for s in five_nodes]
    with DurableTestBackend(profile="overwrite", visibility_delay=2.0) as backend:
        client = TaskHubGrpcClient(host_address=backend.address)
        opts: dict[str, Any] = {
            "lease_ttl": 1,
            "options": StarterOptions(visibility_timeout=6, background_finish=False),
        }
        a = SingletonStarter(client, lock=RedlockLease(nodes, node_timeout=0.5), **opts)
        b = SingletonStarter(client, lock=RedlockLease(nodes, node_timeout=0.5), **opts)
        nodes[3].down = nodes[4].down = True  # A's majority: {0, 1, 2}
        original = RedlockLease.record_start

        def record_start(self: RedlockLease, *args: Any) -> bool:
            nodes[3].down = nodes[4].down = False
            nodes[2].down = True  # unreachable for the record
            try:
                return original(self, *args)
            finally:
                nodes[2].down = False  # back for the hold's renewals

        monkeypatch.setattr(RedlockLease, "record_start", record_start)
        assert a.start("orch", instance_id="rl").outcome is StartOutcome.STARTED
        monkeypatch.setattr(RedlockLease, "record_start", original)
        nodes[0].down = nodes[1].down = True  # B's majority can only be {2, 3, 4}
        poll_until(lambda: nodes[2]._r.exists("strict-singleton:{rl}:lock") == 0, 30, "A's key to leave node 2")
        outcome = b.start("orch", instance_id="rl").outcome
        snap = backend.ledger.snapshot()
        client.close()
    assert outcome is StartOutcome.ALREADY_RUNNING
    assert snap.created["rl"] == 1 and snap.overwritten_active["rl"] == 0


def test_redlock_returns_the_newest_record_of_any_majority(five_nodes: list[RedisServer]) -> None:
    """A record stored on a bare majority is seen by every other majority, the newest one returned."""
    from strict_singleton.lock_backends.base import StartRecord

    nodes = [_Node(s.port) for s in five_nodes]
    lease = RedlockLease(nodes, node_timeout=0.5)
    records = []
    for round_no, down in enumerate([(3, 4), (0, 1), (1, 3)]):
        for i, node in enumerate(nodes):
            node.down = i in down
        grant = lease.acquire("nm", f"t{round_no}", 15.0)
        assert grant is not None
        if records:
            assert grant.last_start == records[-1]  # whichever majority this is
        record = StartRecord(grant.fencing_token, 10 + round_no, None, 10**18)
        records.append(record)
        assert lease.release_with_record("nm", f"t{round_no}", record, 60.0) is True
    lease.close()


def test_a_one_shot_async_start_still_leaves_its_record(strict_singleton_redis: RedisServer) -> None:
    """``asyncio.run(starter.start(...))`` without ``aclose()``: the ending loop cancels the
    background finish; it absorbs the cancellation and still releases with its record, so a
    second one-shot run inside the 3 s lag answers ALREADY_RUNNING."""
    import asyncio

    import redis.asyncio as aioredis
    from durabletask.client import AsyncTaskHubGrpcClient

    from strict_singleton import AsyncSingletonStarter
    from strict_singleton.lock_backends.redis import AsyncRedisLease

    def one_shot(address: str) -> StartOutcome:
        async def main() -> StartOutcome:
            client = AsyncTaskHubGrpcClient(host_address=address)
            lock = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port))
            starter = AsyncSingletonStarter(client, lock=lock, lease_ttl=1)
            return (await starter.start("orch", instance_id="cron")).outcome  # no aclose(): a one-shot job

        return asyncio.run(main())

    with DurableTestBackend(profile="overwrite", visibility_delay=3.0) as backend:
        outcomes = [one_shot(backend.address), one_shot(backend.address)]
        snap = backend.ledger.snapshot()
    assert outcomes == [StartOutcome.STARTED, StartOutcome.ALREADY_RUNNING]
    assert snap.created["cron"] == 1 and snap.overwritten_active["cron"] == 0
