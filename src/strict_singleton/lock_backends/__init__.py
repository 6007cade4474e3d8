"""Lease backends: one small module per lock store.

``FileLease`` / ``AsyncFileLease`` need nothing beyond the core install. The Redis
backends need the ``redis`` extra; importing them without it raises ``ImportError``
with the install hint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strict_singleton.lock_backends.base import AsyncLeaseBackend, Grant, LeaseBackend
from strict_singleton.lock_backends.file import AsyncFileLease, FileLease

if TYPE_CHECKING:
    from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease
    from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
    from strict_singleton.lock_backends.redlock import AsyncRedlockLease, RedlockLease

_LAZY = {
    "RedisLease": "redis",
    "AsyncRedisLease": "redis",
    "RedlockLease": "redlock",
    "AsyncRedlockLease": "redlock",
    "BlobLease": "blob",
    "AsyncBlobLease": "blob",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "AsyncBlobLease",
    "AsyncFileLease",
    "AsyncLeaseBackend",
    "AsyncRedisLease",
    "AsyncRedlockLease",
    "BlobLease",
    "FileLease",
    "Grant",
    "LeaseBackend",
    "RedisLease",
    "RedlockLease",
]
