"""Shared fixtures. Real components: the in-memory Durable backend over gRPC on a free port
(from the strict_singleton pytest plugin), real redis-server processes, real file locks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask.client import TaskHubGrpcClient

from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.testing import DurableTestBackend, RedisServer
from strict_singleton.testing.azurite import Azurite


@pytest.fixture
def client(durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcClient]:
    c = TaskHubGrpcClient(host_address=durable_backend.address)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def lock_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A lock URL for the parametrized kind; starts a real redis-server for 'redis'."""
    kind = request.param
    if kind == "file":
        return f"file:{tmp_path / 'locks'}"
    if kind == "blob":
        emulator: Azurite = request.getfixturevalue("azurite")
        return f"{emulator.url}/locks"
    if kind == "redlock":
        nodes: list[RedisServer] = request.getfixturevalue("redlock_nodes")
        return "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/0"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def make_sync_lock(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """kind -> a fresh sync lease backend (file in tmp_path, or Redis on a fixture server)."""
    made: list[Any] = []

    def make(kind: str) -> Any:
        if kind == "file":
            lock: Any = FileLease(tmp_path / "locks")
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            lock = RedisLease(redis.Redis(port=server.port))
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.close()


@pytest.fixture
def redlock_nodes() -> Iterator[list[RedisServer]]:
    """Three independent redis-server masters for Redlock."""
    nodes = [RedisServer().start() for _ in range(3)]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()
