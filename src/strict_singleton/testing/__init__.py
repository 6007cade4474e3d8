"""Test support: Durable backend profiles with a ledger, real redis-server processes, pytest fixtures.

Names are imported on first use (the pytest plugin imports this package in every
session, and the Durable backend pulls in gRPC).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strict_singleton.testing._process import free_port
    from strict_singleton.testing.backend import PROFILES, BackendLedger, DurableTestBackend, LedgerSnapshot
    from strict_singleton.testing.redis_server import RedisServer, redis_server_binary

_HOME = {
    "PROFILES": "backend",
    "BackendLedger": "backend",
    "DurableTestBackend": "backend",
    "LedgerSnapshot": "backend",
    "free_port": "_process",
    "RedisServer": "redis_server",
    "redis_server_binary": "redis_server",
}

__all__ = [
    "PROFILES",
    "BackendLedger",
    "DurableTestBackend",
    "LedgerSnapshot",
    "RedisServer",
    "free_port",
    "redis_server_binary",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"strict_singleton.testing.{home}"), name)
    globals()[name] = value
    return value
