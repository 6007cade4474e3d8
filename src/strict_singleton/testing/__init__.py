"""Test support: Durable backend profiles with a ledger, real redis-server processes, pytest fixtures."""

from strict_singleton.testing.backend import PROFILES, BackendLedger, DurableTestBackend, LedgerSnapshot, free_port
from strict_singleton.testing.redis_server import RedisServer, redis_server_binary

__all__ = [
    "PROFILES",
    "BackendLedger",
    "DurableTestBackend",
    "LedgerSnapshot",
    "RedisServer",
    "free_port",
    "redis_server_binary",
]
