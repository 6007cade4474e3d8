"""pytest plugin (entry point ``pytest11``): fixtures for testing code that starts singletons.

* ``durable_backend``: a :class:`DurableTestBackend` on a free port, stopped after the
  test. Profile ``atomic`` by default; parametrize indirectly to pick another:
  ``@pytest.mark.parametrize("durable_backend", ["overwrite"], indirect=True)``.
* ``redis_server``: a real redis-server process on a free port, killed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from strict_singleton.testing.backend import DurableTestBackend
from strict_singleton.testing.redis_server import RedisServer


@pytest.fixture
def durable_backend(request: pytest.FixtureRequest) -> Iterator[DurableTestBackend]:
    profile: Any = getattr(request, "param", "atomic")
    backend = DurableTestBackend(profile=profile)
    backend.start()
    try:
        yield backend
    finally:
        backend.stop(grace=0)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
