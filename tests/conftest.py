"""Shared fixtures. Real components: the in-memory Durable backend over gRPC on a free port
(from the strict_singleton pytest plugin), real redis-server processes, real file locks.

Servers are started once per session and emptied before each test (see the plugin's
docstring); tests that stop, restart or freeze a server use private ones."""

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
def client(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcClient]:
    c = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
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
        emulator: Azurite = request.getfixturevalue("strict_singleton_azurite")
        return f"{emulator.url}/locks"
    if kind == "redlock":
        nodes: list[RedisServer] = request.getfixturevalue("redlock_nodes")
        return "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/0"
    server: RedisServer = request.getfixturevalue("strict_singleton_redis")
    return server.url


@pytest.fixture
def make_sync_lock(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """kind -> a fresh sync lease backend (file in tmp_path, or Redis on a fixture server)."""
    made: list[Any] = []

    def make(kind: str) -> Any:
        if kind == "file":
            lock: Any = FileLease(tmp_path / "locks")
        else:
            server: RedisServer = request.getfixturevalue("strict_singleton_redis")
            lock = RedisLease(redis.Redis(port=server.port))
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.close()


@pytest.fixture(scope="session")
def redlock_masters() -> Iterator[list[RedisServer]]:
    """Three independent redis-server masters for the session (request ``redlock_nodes``)."""
    nodes = [RedisServer().start() for _ in range(3)]
    for node in nodes:
        node.pin("shared by every test of the session")
    try:
        yield nodes
    finally:
        for node in nodes:
            node.unpin()
            node.stop()


@pytest.fixture
def redlock_nodes(redlock_masters: list[RedisServer]) -> list[RedisServer]:
    """Three Redlock masters, emptied for this test (they may not be stopped: tests that
    stop nodes start their own)."""
    for node in redlock_masters:
        node.ensure_running()
        node.flush_all()
    return redlock_masters


def pytest_report_header(config: pytest.Config) -> list[str]:
    from strict_singleton.testing.azurite import azurite_binary
    from strict_singleton.testing.redis_server import describe_redis_server

    try:
        azurite = azurite_binary()
    except RuntimeError as exc:
        azurite = str(exc)
    return [f"redis-server: {describe_redis_server()}", f"azurite: {azurite}"]


@pytest.fixture
def make_host(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[Callable[..., Any]]:
    """profile, **kwargs -> a started Functions host stand-in over this test's backend (stopped after)."""
    from strict_singleton.testing import functions_host as fh  # only the Functions tests need it

    hosts: list[fh.FunctionsHost] = []

    def make(profile: fh.Profile = "reject", **kwargs: Any) -> fh.FunctionsHost:
        host = fh.FunctionsHost(strict_singleton_durable_backend, profile=profile, **kwargs)
        hosts.append(host)
        return host.start()

    yield make
    for host in hosts:
        host.stop()


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    """Private redis-servers a test starts and appends here: each is stopped after the test."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()
