"""Lease backends: one small module per lock store.

``FileLease`` / ``AsyncFileLease`` need nothing beyond the core install. The Redis
backends need the ``redis`` extra, the Blob backends the ``azure`` extra; importing
them without it raises ``ImportError`` with the install line.

:func:`from_url` builds any of them from one string (like ``redis.Redis.from_url``):
``file``, ``file:/dir``, ``redis://``/``rediss://``, ``redlock://``, ``azblob://`` and
``azurite://`` URLs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

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


@overload
def from_url(url: str, *, asynchronous: Literal[False] = False, prefix: str | None = None) -> LeaseBackend: ...
@overload
def from_url(url: str, *, asynchronous: Literal[True], prefix: str | None = None) -> AsyncLeaseBackend: ...
@overload
def from_url(url: str, *, asynchronous: bool, prefix: str | None = None) -> LeaseBackend | AsyncLeaseBackend: ...


def from_url(url: str, *, asynchronous: bool = False, prefix: str | None = None) -> LeaseBackend | AsyncLeaseBackend:
    """A lease backend for a lock URL; you close it (``close()``, awaited for async ones).

    ============================================== ==========================================
    URL                                            backend
    ============================================== ==========================================
    ``file``, ``file:/dir``                        ``FileLease`` (one host)
    ``redis://[:password@]host:port/db``           ``RedisLease`` (``rediss://`` for TLS;
                                                   query options go to redis-py's ``from_url``)
    ``redlock://host:port,host:port,host:port/db`` ``RedlockLease`` over those masters
    ``azblob://container``                         ``BlobLease``; connection string from
                                                   ``$AZURE_STORAGE_CONNECTION_STRING``
    ``azurite://host:port/container``              ``BlobLease`` on the Azurite emulator
    ============================================== ==========================================

    Args:
        url: the lock URL.
        asynchronous: build the asyncio twin (``AsyncFileLease``, ``AsyncRedisLease``, ...).
        prefix: the Redis key or Blob name prefix; None keeps the backend's default. File
            leases have no keys and ignore it.

    Raises:
        InvalidArgumentError: a malformed or unsupported URL; the message shows the URL
            with its passwords redacted.
        ImportError: the URL's extra is not installed; the message ends with the install
            commands: ``pip install 'strict-singleton[...]'`` from an index that has the
            package, the same from this install's checkout, and the extra's own dependencies.

    Builds clients only: nothing connects until the first acquire.
    """
    from strict_singleton.lock_backends._url import from_url as build

    backend: LeaseBackend | AsyncLeaseBackend = build(url, asynchronous=asynchronous, prefix=prefix)
    return backend


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
    "from_url",
]
