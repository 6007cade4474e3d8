"""Fail closed: when the lock store cannot be reached, every start raises
LockUnavailableError and the Durable backend has zero instances."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from strict_singleton import AsyncSingletonStarter, LockUnavailableError, SingletonStarter, StartOutcome
from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer, free_port
from strict_singleton.testing.swarm import fire_tasks, fire_threads


def quick_redis(port: int) -> redis.Redis:
    # redis-py's default retry backs off for seconds on a refused connection; how fast a
    # start fails closed is the client's setting, so the tests choose a short one.
    return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 1))


def quick_async_redis(port: int) -> aioredis.Redis:
    return aioredis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=AsyncRetry(NoBackoff(), 1))


def test_redis_stopped_mid_suite_fails_closed_then_recovers(
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    strict_singleton_private_redis: RedisServer,
) -> None:
    lock = RedisLease(quick_redis(strict_singleton_private_redis.port))
    with SingletonStarter(client, lock=lock, lease_ttl=5, options=StarterOptions(background_finish=False)) as starter:
        assert starter.start("orch", instance_id="before").outcome is StartOutcome.STARTED
        strict_singleton_private_redis.stop()
        recs = fire_threads(16, lambda i: starter.start("orch", instance_id=f"down-{i % 4}"))
        assert all(isinstance(r.value, LockUnavailableError) for r in recs), [r.value for r in recs]
        assert strict_singleton_durable_backend.instance_count() == 1  # only the one from before the outage
        err = recs[0].value
        assert err.instance_id is not None and err.instance_id.startswith("down-")
        assert "redis" in (err.backend or "")
        strict_singleton_private_redis.start()  # same port
        assert starter.start("orch", instance_id="after").outcome is StartOutcome.STARTED
    assert strict_singleton_durable_backend.ledger.snapshot().total_created == 2


def test_closed_port_sync(strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient) -> None:
    lock = RedisLease(quick_redis(free_port()))
    starter = SingletonStarter(client, lock=lock, lease_ttl=5)
    for i in range(5):
        with pytest.raises(LockUnavailableError) as info:
            starter.start("orch", instance_id=f"closed-{i}")
        assert info.value.instance_id == f"closed-{i}"
    assert strict_singleton_durable_backend.instance_count() == 0


def test_closed_port_async(strict_singleton_durable_backend: DurableTestBackend) -> None:
    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        lock = AsyncRedisLease(quick_async_redis(free_port()))
        starter = AsyncSingletonStarter(client, lock=lock, lease_ttl=5)
        recs = await fire_tasks(16, lambda i: starter.start("orch", instance_id=f"closed-{i}"))
        assert all(isinstance(r.value, LockUnavailableError) for r in recs)
        await client.close()

    asyncio.run(main())
    assert strict_singleton_durable_backend.instance_count() == 0


def test_redis_stopped_async(
    strict_singleton_durable_backend: DurableTestBackend, strict_singleton_private_redis: RedisServer
) -> None:
    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        lock = AsyncRedisLease(quick_async_redis(strict_singleton_private_redis.port))
        async with AsyncSingletonStarter(client, lock=lock, lease_ttl=5) as starter:
            strict_singleton_private_redis.stop()
            recs = await fire_tasks(16, lambda i: starter.start("orch", instance_id=f"down-{i}"))
            assert all(isinstance(r.value, LockUnavailableError) for r in recs)
        await lock.close()
        await client.close()

    asyncio.run(main())
    assert strict_singleton_durable_backend.instance_count() == 0


def test_file_lock_directory_unusable(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the lock directory should be")
    starter = SingletonStarter(client, lock=FileLease(blocker / "locks"), lease_ttl=5)
    with pytest.raises(LockUnavailableError):
        starter.start("orch", instance_id="x")
    assert strict_singleton_durable_backend.instance_count() == 0
