"""The Durable backend's own dedupe as the second line of defence, and backend failures.

``UnsafeNoLease`` is a broken lock that admits every caller (the failure we defend
against). On the ``atomic`` profile the terminal-only reuse policy still lets exactly
one schedule through, and the losers learn ALREADY_RUNNING instead of a raw gRPC error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis
from durabletask.client import TaskHubGrpcClient

from strict_singleton import BackendError, SingletonStarter, StartOutcome
from strict_singleton._harness.strategies import UnsafeNoLease
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from strict_singleton.testing.swarm import fire_threads


def test_reuse_policy_catches_what_a_broken_lock_lets_through(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient
) -> None:
    strict_singleton_durable_backend.latency = 0.002
    starter = SingletonStarter(client, lock=UnsafeNoLease(), options=StarterOptions(background_finish=False))
    for r in range(20):
        iid = f"broken-lock-{r}"
        recs = fire_threads(16, lambda _i, iid=iid: starter.start("orch", instance_id=iid))
        assert not [rec.value for rec in recs if rec.raised]
        counts = Counter(rec.value.outcome for rec in recs)
        assert counts[StartOutcome.STARTED] == 1, counts
        assert strict_singleton_durable_backend.ledger.snapshot().created[iid] == 1
    assert strict_singleton_durable_backend.ledger.snapshot().total_created == 20


def test_fencing_token_tagged_on_the_instance(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_redis: RedisServer
) -> None:
    starter = SingletonStarter(
        client,
        lock=RedisLease(redis.Redis(port=strict_singleton_redis.port)),
        options=StarterOptions(background_finish=False),
    )
    result = starter.start("orch", instance_id="fenced", tags={"team": "ops"})
    assert result.fencing_token == 1
    assert strict_singleton_durable_backend.ledger.snapshot().tags["fenced"] == [
        {"team": "ops", "strict_singleton.fencing_token": "1"}
    ]


def test_backend_down_raises_backend_error_and_frees_the_lease(
    strict_singleton_durable_backend: DurableTestBackend, strict_singleton_redis: RedisServer, tmp_path: Path
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    strict_singleton_durable_backend.stop(grace=0)
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=RedisLease(r), lease_ttl=30)
    with pytest.raises(BackendError, match="nothing was scheduled"):
        starter.start("orch", instance_id="no-backend")
    assert r.exists("strict-singleton:{no-backend}:lock") == 0  # released, not left for 30 s
    client.close()
