"""Lease lost before scheduling: LeaseLostError, and nothing is scheduled.

A real stall (the status read takes longer than the TTL on a real redis-server, so the
key really expires) and injected-clock variants (no waiting) for renewal decisions.
"""

from __future__ import annotations

import threading

import pytest
import redis
from durabletask.client import TaskHubGrpcClient

from strict_singleton import LeaseLostError, SingletonStarter, StartOutcome
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from suite_helpers import FakeClock, poll_until


def lock_key(iid: str) -> str:
    return f"strict-singleton:{{{iid}}}:lock"


def test_status_read_slower_than_ttl(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_redis: RedisServer
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    stalled = threading.Event()

    def slow_first_read(_iid: str) -> None:
        if not stalled.is_set():
            stalled.set()
            # An injected stall: the read lasts until the store has let the 0.3 s lease go.
            poll_until(lambda: r.exists(lock_key("slow")) == 0, 10, "the lease to expire in Redis")

    strict_singleton_durable_backend.read_hook = slow_first_read
    starter = SingletonStarter(client, lock=RedisLease(r), lease_ttl=0.3, options=StarterOptions(schedule_margin=0.05))
    with pytest.raises(LeaseLostError) as info:
        starter.start("orch", instance_id="slow")
    assert info.value.instance_id == "slow"
    assert strict_singleton_durable_backend.instance_count() == 0
    assert strict_singleton_durable_backend.ledger.snapshot().total_created == 0
    strict_singleton_durable_backend.read_hook = None
    assert starter.start("orch", instance_id="slow").outcome is StartOutcome.STARTED
    starter.close()


def test_clock_past_deadline_never_renews(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_redis: RedisServer
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    clock = FakeClock()
    # the read "took" 31 s of a 30 s lease
    strict_singleton_durable_backend.read_hook = lambda _iid: clock.advance(31.0)
    starter = SingletonStarter(client, lock=RedisLease(r), lease_ttl=30, _clock=clock)
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="late")
    assert strict_singleton_durable_backend.instance_count() == 0
    # The key (still really ours in Redis) was released with a token check, not left behind.
    assert r.exists(lock_key("late")) == 0


def test_key_deleted_behind_our_back_renewal_notices(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_redis: RedisServer
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    clock = FakeClock()

    def steal(_iid: str) -> None:
        clock.advance(12.0)  # past a third of the TTL: the starter must renew before scheduling
        r.set(lock_key("stolen"), "someone-else", px=30_000)

    strict_singleton_durable_backend.read_hook = steal
    starter = SingletonStarter(client, lock=RedisLease(r), lease_ttl=30, _clock=clock)
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="stolen")
    assert strict_singleton_durable_backend.instance_count() == 0
    assert r.get(lock_key("stolen")) == b"someone-else"  # the other holder's lease is untouched


def test_renewal_under_margin_succeeds_and_starts(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_redis: RedisServer
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    clock = FakeClock()
    pttl_after: list[int] = []

    def slow(_iid: str) -> None:
        if not pttl_after:
            clock.advance(25.0)  # 25 s of a 30 s lease: below the 10 s margin, but not expired
            pttl_after.append(-1)
            r.pexpire(lock_key("renewed"), 5_000)  # the store agrees: 5 s left

    strict_singleton_durable_backend.read_hook = slow
    starter = SingletonStarter(
        client, lock=RedisLease(r), lease_ttl=30, _clock=clock, options=StarterOptions(background_finish=False)
    )
    result = starter.start("orch", instance_id="renewed")
    assert result.outcome is StartOutcome.STARTED
    assert strict_singleton_durable_backend.ledger.snapshot().created["renewed"] == 1
