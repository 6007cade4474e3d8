"""The lease a Functions app gets without configuring one: a Blob lease on its own storage account."""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from strict_singleton.errors import InvalidArgumentError

if TYPE_CHECKING:
    from strict_singleton.lock_backends.base import AsyncLeaseBackend


LOCK_CONTAINER = "strict-singleton-locks"


STORAGE_SETTING = "AzureWebJobsStorage"


def default_lock(*, environ: Any = None) -> AsyncLeaseBackend:
    """An :class:`~strict_singleton.lock_backends.AsyncBlobLease` on the app's own storage account
    (the ``AzureWebJobsStorage`` connection string), container ``strict-singleton-locks``, or a
    clear :class:`InvalidArgumentError` saying what to pass instead."""
    env = os.environ if environ is None else environ
    setting = env.get(STORAGE_SETTING)
    identity = sorted(k for k in env if k.startswith(f"{STORAGE_SETTING}__"))
    if not setting:
        if identity:
            raise InvalidArgumentError(
                f"no lock given and {STORAGE_SETTING} is an identity-based connection ({', '.join(identity)}); pass "
                "lock=AsyncBlobLease(ContainerClient(account_url, 'strict-singleton-locks', credential=...)) "
                "(azure.storage.blob.aio, e.g. with azure.identity.aio.DefaultAzureCredential())"
            )
        raise InvalidArgumentError(
            f"no lock given and the {STORAGE_SETTING} setting is missing; pass lock= (for example "
            "AsyncBlobLease(ContainerClient.from_connection_string(..., 'strict-singleton-locks')) or AsyncRedisLease)"
        )
    from azure.storage.blob.aio import ContainerClient

    from strict_singleton.lock_backends.blob import AsyncBlobLease

    try:
        container = ContainerClient.from_connection_string(setting, LOCK_CONTAINER)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"no lock given and {STORAGE_SETTING} is not a storage connection string ({exc}); pass lock="
        ) from None
    if "usedevelopmentstorage=true" in setting.replace(" ", "").lower():
        where = urlsplit(container.url)
        host, port = where.hostname or "127.0.0.1", where.port or 10000
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            raise InvalidArgumentError(
                f"no lock given and {STORAGE_SETTING} is UseDevelopmentStorage=true, but no storage emulator "
                f"answers on {host}:{port}; start Azurite, or pass lock= (AsyncRedisLease, "
                "AsyncFileLease for one host, or an AsyncBlobLease on a real account)"
            ) from None
    return AsyncBlobLease(container)


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, Any]] = weakref.WeakKeyDictionary()


def shared_lock(url: str | None = None) -> AsyncLeaseBackend:
    """One lease backend per event loop and lock URL, for a starter built per invocation.

    ``url`` as :func:`strict_singleton.lock_backends.from_url` takes it (``redis://...``,
    ``file:/dir``, ...); ``None``: :func:`default_lock` (a Blob lease on ``AzureWebJobsStorage``).
    The Functions Python worker runs async functions on one event loop, so an app gets one
    lock client (one connection pool) instead of one per invocation. Call it inside the
    event loop (in the function).
    """
    loop = asyncio.get_running_loop()
    per_loop = _SHARED.setdefault(loop, {})
    lock = per_loop.get(url)
    if lock is None:
        if url is None:
            lock = default_lock()
        else:
            from strict_singleton.lock_backends import from_url

            lock = from_url(url, asynchronous=True)
        per_loop[url] = lock
    result: AsyncLeaseBackend = lock
    return result
