"""Bad input gets a clear error before any lease is taken, and nothing is scheduled.

Checked against real stores: no Redis key and no lock file exists afterwards, and the
Durable backend holds zero instances.
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import (
    AsyncSingletonStarter,
    InvalidArgumentError,
    InvalidInstanceIdError,
    SingletonStarter,
    StrictSingletonError,
)
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from suite_helpers import starter_kwargs

START_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("empty id", {"instance_id": ""}, InvalidInstanceIdError, "must not be empty"),
    ("leading space", {"instance_id": " job"}, InvalidInstanceIdError, "whitespace"),
    ("trailing tab", {"instance_id": "job\t"}, InvalidInstanceIdError, "whitespace"),
    ("newline inside", {"instance_id": "a\nb"}, InvalidInstanceIdError, "control character"),
    ("NUL inside", {"instance_id": "a\x00b"}, InvalidInstanceIdError, "U+0000"),
    ("escape char", {"instance_id": "a\x1bb"}, InvalidInstanceIdError, "control character"),
    ("line separator", {"instance_id": "a\u2028b"}, InvalidInstanceIdError, "U+2028"),
    ("over-long id", {"instance_id": "x" * 257}, InvalidInstanceIdError, "257 characters"),
    ("id not a str", {"instance_id": 42}, InvalidInstanceIdError, "must be a str"),
    ("id None", {"instance_id": None}, InvalidInstanceIdError, "must be a str"),
    ("unserializable input", {"input": object()}, InvalidArgumentError, "cannot be serialized"),
    ("set input", {"input": {1, 2}}, InvalidArgumentError, "cannot be serialized"),
    ("empty orchestrator", {"orchestrator": ""}, InvalidArgumentError, "orchestrator name"),
    ("orchestrator not callable", {"orchestrator": 42}, InvalidArgumentError, "function or a name"),
    ("reserved tag", {"tags": {"strict_singleton.fencing_token": "9"}}, InvalidArgumentError, "reserved"),
    ("non-str tag", {"tags": {"team": 1}}, InvalidArgumentError, "mapping of str"),
    ("empty version", {"version": ""}, InvalidArgumentError, "version"),
    ("bad start_at", {"start_at": "tomorrow"}, InvalidArgumentError, "start_at"),
]

CONFIG_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("ttl zero", {"lease_ttl": 0}, "lease_ttl"),
    ("ttl negative", {"lease_ttl": -1}, "lease_ttl"),
    ("ttl nan", {"lease_ttl": math.nan}, "lease_ttl"),
    ("ttl inf", {"lease_ttl": math.inf}, "lease_ttl"),
    ("ttl str", {"lease_ttl": "30"}, "lease_ttl"),
    ("ttl bool", {"lease_ttl": True}, "lease_ttl"),
    ("wait negative", {"wait": -1}, "wait"),
    ("wait nan", {"wait": math.nan}, "wait"),
    ("margin >= ttl", {"lease_ttl": 10, "schedule_margin": 10}, "schedule_margin"),
    ("margin negative", {"schedule_margin": -0.1}, "schedule_margin"),
    ("visibility zero", {"visibility_timeout": 0}, "visibility_timeout"),
    ("max id length zero", {"max_instance_id_length": 0}, "max_instance_id_length"),
]


def start_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"orchestrator": "orch", "instance_id": "job"}
    kwargs.update(overrides)
    return kwargs


def assert_untouched(backend: DurableTestBackend, r: redis.Redis, lock_dir: Path) -> None:
    assert backend.instance_count() == 0
    assert r.keys("*") == []
    assert not lock_dir.exists() or list(lock_dir.iterdir()) == []


@pytest.mark.parametrize(("case", "overrides", "error", "text"), START_CASES, ids=[c[0] for c in START_CASES])
def test_bad_start_input_sync(
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    strict_singleton_redis: RedisServer,
    tmp_path: Path,
    case: str,
    overrides: dict[str, Any],
    error: type[Exception],
    text: str,
) -> None:
    r = redis.Redis(port=strict_singleton_redis.port)
    for lock in (RedisLease(r), FileLease(tmp_path / "locks")):
        starter = SingletonStarter(client, lock=lock)
        kwargs = start_kwargs(overrides)
        orchestrator = kwargs.pop("orchestrator")
        with pytest.raises(error, match=re.escape(text)) as info:
            starter.start(orchestrator, **kwargs)
        assert isinstance(info.value, (StrictSingletonError, ValueError))
    assert_untouched(strict_singleton_durable_backend, r, tmp_path / "locks")


@pytest.mark.parametrize(("case", "overrides", "error", "text"), START_CASES, ids=[c[0] for c in START_CASES])
def test_bad_start_input_async(
    strict_singleton_durable_backend: DurableTestBackend,
    strict_singleton_redis: RedisServer,
    tmp_path: Path,
    case: str,
    overrides: dict[str, Any],
    error: type[Exception],
    text: str,
) -> None:
    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        for lock in (
            AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port)),
            AsyncFileLease(tmp_path / "locks"),
        ):
            starter = AsyncSingletonStarter(client, lock=lock)
            kwargs = start_kwargs(overrides)
            orchestrator = kwargs.pop("orchestrator")
            with pytest.raises(error, match=re.escape(text)):
                await starter.start(orchestrator, **kwargs)
        await client.close()

    asyncio.run(main())
    assert_untouched(
        strict_singleton_durable_backend, redis.Redis(port=strict_singleton_redis.port), tmp_path / "locks"
    )


@pytest.mark.parametrize(("case", "overrides", "text"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    tmp_path: Path,
    case: str,
    overrides: dict[str, Any],
    text: str,
) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(text)):
        SingletonStarter(client, **starter_kwargs(lock=FileLease(tmp_path / "locks"), **overrides))
    async_client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    with pytest.raises(InvalidArgumentError, match=re.escape(text)):
        AsyncSingletonStarter(async_client, **starter_kwargs(lock=AsyncFileLease(tmp_path / "locks"), **overrides))
    assert not (tmp_path / "locks").exists()
    assert strict_singleton_durable_backend.instance_count() == 0


def test_mismatched_sync_async_pieces(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, tmp_path: Path
) -> None:
    async_client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    with pytest.raises(InvalidArgumentError, match="sync lease backend"):
        SingletonStarter(client, lock=AsyncFileLease(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="async lease backend"):
        AsyncSingletonStarter(async_client, lock=FileLease(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sync Durable Task client"):
        SingletonStarter(async_client, lock=FileLease(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not a lease backend"):
        SingletonStarter(client, lock=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not a Durable Task client"):
        SingletonStarter(object(), lock=FileLease(tmp_path))  # type: ignore[arg-type]


def test_redis_prefix_with_braces_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="braces"):
        RedisLease(redis.Redis(), prefix="bad{prefix}")


def test_accepted_ids_are_not_mangled(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, tmp_path: Path
) -> None:
    ids = ["a/b?c#d%e", "with inner space", "ünïcödé-日本", "x" * 256, "{braces}", "a}b{c"]
    with SingletonStarter(
        client, lock=FileLease(tmp_path / "locks"), options=StarterOptions(background_finish=False)
    ) as starter:
        for iid in ids:
            assert starter.start("orch", instance_id=iid).started
    assert set(strict_singleton_durable_backend.ledger.snapshot().created) == set(ids)
