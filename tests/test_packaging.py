"""The package's public surface: ``lock_backends.from_url``, the public/private split of
``testing``, and the metadata a wheel carries (entry points, ``py.typed``).

The wheel itself is built, installed into a fresh venv and exercised by ``scripts/ci-wheel``;
the lowest supported dependency versions by ``scripts/ci-floor``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
import uuid
from pathlib import Path

import pytest
import redis

import strict_singleton
from strict_singleton import testing
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends import (
    AsyncFileLease,
    AsyncLeaseBackend,
    AsyncRedisLease,
    AsyncRedlockLease,
    BlobLease,
    FileLease,
    LeaseBackend,
    RedisLease,
    RedlockLease,
    from_url,
)
from strict_singleton.testing import RedisServer


@pytest.mark.parametrize(
    ("url", "sync_type", "async_type"),
    [
        ("file", FileLease, AsyncFileLease),
        ("redis://127.0.0.1:1/0", RedisLease, AsyncRedisLease),
        ("rediss://:pw@127.0.0.1:1/0", RedisLease, AsyncRedisLease),
        ("redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/0", RedlockLease, AsyncRedlockLease),
    ],
)
def test_from_url_builds_each_backend_sync_and_async(url: str, sync_type: type, async_type: type) -> None:
    lease = from_url(url)
    assert type(lease) is sync_type and isinstance(lease, LeaseBackend)
    lease.close()

    async def build_async() -> None:  # async clients belong to a running loop
        lease = from_url(url, asynchronous=True)
        assert type(lease) is async_type and isinstance(lease, AsyncLeaseBackend)
        await lease.close()

    asyncio.run(build_async())


def test_from_url_azurite_builds_a_blob_lease() -> None:
    lease = from_url("azurite://127.0.0.1:1/locks")
    assert type(lease) is BlobLease and "locks" in lease.name
    lease.close()


def test_from_url_prefix_reaches_the_store(strict_singleton_redis: RedisServer) -> None:
    prefix = f"app-{uuid.uuid4().hex[:8]}:"
    lease = from_url(strict_singleton_redis.url, prefix=prefix)
    try:
        assert lease.acquire("job", "token-1", 30) is not None
        keys = redis.Redis(port=strict_singleton_redis.port).keys("*")
        assert keys and all(k.decode().startswith(prefix) for k in keys), keys
    finally:
        lease.release("job", "token-1")
        lease.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://:hunter22@example/x", "unsupported lock URL"),
        ("redis://:hunter22@localhost:badport/0", "bad port"),
        ("redis://:hunter22@/0", "needs a host and port"),
        ("redlock://:hunter22@h:1,:hunter22@h:x/0", "bad port"),
        ("azurite://127.0.0.1:1/", "exactly one container"),
        ("", "non-empty string"),
    ],
)
def test_from_url_errors_name_the_url_without_its_password(url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        from_url(url)
    assert "hunter22" not in str(info.value)


def test_from_url_without_the_extra_gives_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the 'redis' extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'strict-singleton\[redis\]'"):
        from_url("redis://127.0.0.1:1/0")


def test_testing_exposes_the_public_api_only() -> None:
    public = set(testing.__all__)
    assert {"DurableTestBackend", "RedisServer", "PROFILES"} <= public
    assert not public & {"RaceConfig", "run_race", "SyncStrategy", "WorkerSpec", "run_process_swarm"}
    for name in ("race", "procs", "strategies"):
        with pytest.raises(ModuleNotFoundError):
            __import__(f"strict_singleton.testing.{name}")
    from strict_singleton._harness import procs, race, strategies

    assert race.run_race and strategies.STRATEGIES and procs.run_process_swarm


def test_distribution_metadata_declares_the_plugin_and_the_cli() -> None:
    dist = importlib.metadata.distribution("strict-singleton")
    points = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert points[("pytest11", "strict_singleton")] == "strict_singleton.testing.plugin"
    assert points[("console_scripts", "strict-singleton")] == "strict_singleton.cli:entry_point"
    requires = dist.requires or []
    assert any(r.replace(" ", "").startswith("durabletask>=1.10") for r in requires), requires


def test_the_package_is_marked_typed() -> None:
    assert (Path(strict_singleton.__file__).parent / "py.typed").is_file()
