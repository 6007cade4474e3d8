"""Redis deployment hazards: an evicting ``maxmemory-policy`` lets a held
lease vanish, so each lease object warns once when its server runs one.

Real redis-server processes started with the policy under test; a server with ``CONFIG``
disabled stands in for managed Redis that refuses it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
import redis.asyncio as aioredis

from strict_singleton.lock_backends._redis_common import evicting_policy
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.lock_backends.redlock import RedlockLease
from strict_singleton.testing import RedisServer
from suite_helpers import ConfiguredRedis, token

pytestmark = pytest.mark.redis


def start(servers: list[RedisServer], *settings: str) -> RedisServer:
    server = ConfiguredRedis(*settings).start()
    servers.append(server)
    return server


def eviction_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "strict_singleton.redis" and r.levelno == logging.WARNING and "maxmemory-policy" in r.getMessage()
    ]


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lfu"])
def test_evicting_policy_warns_once_per_lease_sync(
    servers: list[RedisServer], caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    server = start(servers, "--maxmemory-policy", policy)
    client = redis.Redis(port=server.port)
    lease = RedisLease(client)
    with caplog.at_level(logging.WARNING, logger="strict_singleton.redis"):
        assert lease.acquire("a", token("a"), 15.0) is not None
        assert lease.acquire("b", token("b"), 15.0) is not None
        assert lease.acquire("a", token("c"), 15.0) is None
    warnings = eviction_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert policy in warnings[0] and lease.name in warnings[0] and "noeviction" in warnings[0]
    lease.close()
    client.close()


def test_evicting_policy_warns_once_per_lease_async(
    servers: list[RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start(servers, "--maxmemory-policy", "volatile-lru")

    async def main() -> None:
        client = aioredis.Redis(port=server.port)
        lease = AsyncRedisLease(client)
        try:
            assert await lease.acquire("a", token("a"), 15.0) is not None
            assert await lease.acquire("b", token("b"), 15.0) is not None
        finally:
            await lease.close()
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="strict_singleton.redis"):
        asyncio.run(main())
    warnings = eviction_warnings(caplog)
    assert len(warnings) == 1 and "volatile-lru" in warnings[0], warnings


def test_noeviction_does_not_warn(servers: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    server = start(servers, "--maxmemory-policy", "noeviction")
    client = redis.Redis(port=server.port)
    lease = RedisLease(client)
    with caplog.at_level(logging.DEBUG, logger="strict_singleton.redis"):
        assert lease.acquire("a", token("a"), 15.0) is not None
    assert eviction_warnings(caplog) == []
    assert lease._eviction.take() is False  # the check ran and is settled
    lease.close()
    client.close()


def test_server_refusing_config_is_not_an_error(servers: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    # Managed Redis often disables CONFIG; an evicting policy then goes unseen, quietly.
    server = start(servers, "--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", "")
    client = redis.Redis(port=server.port)
    with pytest.raises(redis.ResponseError):
        client.config_get("maxmemory-policy")
    lease = RedisLease(client)
    with caplog.at_level(logging.WARNING, logger="strict_singleton.redis"):
        assert lease.acquire("a", token("a"), 15.0) is not None
    assert eviction_warnings(caplog) == []
    assert lease._eviction.take() is False  # settled: not asked again
    lease.close()
    client.close()


def test_redlock_warns_for_the_evicting_node(servers: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    nodes = [
        start(servers, "--maxmemory-policy", "noeviction"),
        start(servers, "--maxmemory-policy", "allkeys-lru"),
        start(servers, "--maxmemory-policy", "noeviction"),
    ]
    clients = [redis.Redis(port=n.port) for n in nodes]
    lease = RedlockLease(clients)
    with caplog.at_level(logging.WARNING, logger="strict_singleton.redis"):
        assert lease.acquire("a", token("a"), 15.0) is not None
        assert lease.acquire("b", token("b"), 15.0) is not None
    warnings = eviction_warnings(caplog)
    assert len(warnings) == 1 and "allkeys-lru" in warnings[0] and f"{lease.name}#1" in warnings[0], warnings
    lease.close()
    for c in clients:
        c.close()


def test_policy_reply_shapes() -> None:
    assert evicting_policy({"maxmemory-policy": "volatile-ttl"}) == "volatile-ttl"
    assert evicting_policy({b"maxmemory-policy": b"allkeys-random"}) == "allkeys-random"
    assert evicting_policy({"maxmemory-policy": "noeviction"}) is None
    assert evicting_policy({}) is None
    assert evicting_policy(None) is None
