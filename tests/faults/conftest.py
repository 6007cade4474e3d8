"""Fixtures for the fault suite: Redis node sets and a backend per profile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strict_singleton.testing import DurableTestBackend, RedisServer


@pytest.fixture
def redis_nodes() -> Iterator[list[RedisServer]]:
    """Five independent redis-server masters on free ports."""
    nodes = [RedisServer().start() for _ in range(5)]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def overwrite_or_atomic(request: pytest.FixtureRequest) -> Iterator[DurableTestBackend]:
    backend = DurableTestBackend(profile=request.param)
    backend.start()
    try:
        yield backend
    finally:
        backend.read_hook = None
        backend.start_hook = None
        backend.stop(grace=0)
