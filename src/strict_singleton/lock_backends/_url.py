"""Lock URLs: build a lease backend from one string, and print that string safely.

* ``file`` or ``file:/dir``: :class:`FileLease` (one host);
* ``redis://[[user]:password@]host:port/db`` (``rediss://`` for TLS): :class:`RedisLease`;
* ``redlock://host:port,host:port,host:port/db``: :class:`RedlockLease` over those
  independent masters (at least 3; each node may carry its own ``:password@``);
* ``azblob://CONTAINER``: :class:`BlobLease` with the connection string from
  ``$AZURE_STORAGE_CONNECTION_STRING`` (never from the URL, so it stays out of logs);
* ``azurite://host:port/CONTAINER``: :class:`BlobLease` on the Azurite emulator's
  development account.

Redis query options (``?socket_timeout=2``, ``?password=...``) go to redis-py's
``from_url`` unchanged. :func:`redact_url` (from ``_redact``) is the only form of a lock
URL that may be printed: it shows only what is provably public.
"""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import SplitResult, urlsplit

from strict_singleton._extras import install_hint
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends._azurite_dev import dev_connection_string
from strict_singleton.lock_backends._redact import redact_url, scrub

SCHEMES = (
    "file, file:/dir, redis://host:port/db, redlock://host:port,host:port,host:port/db, "
    "azblob://container or azurite://host:port/container"
)


# The modules each optional extra brings, as imported by the backends it enables.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "azure": ("azure.storage.blob", "aiohttp"),  # aiohttp: the async Blob client's transport
}


def extra_for(url: str) -> str | None:
    """The optional extra a lock URL needs (``redis`` or ``azure``), or None for the file lease."""
    scheme = url.partition("://")[0] if isinstance(url, str) and "://" in url else ""
    if scheme in ("redis", "rediss", "redlock"):
        return "redis"
    if scheme in ("azblob", "azurite"):
        return "azure"
    return None


def missing_extra(extra: str, modules: tuple[str, ...] | None = None) -> str | None:
    """None if ``extra``'s modules import, else a message ending in the install commands."""
    for module in modules if modules is not None else EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"needs the '{extra}' extra ({exc}); {install_hint(extra)}"
    return None


def extra_modules(url: str, *, asynchronous: bool) -> tuple[str, ...]:
    """The modules a lease backend for ``url`` imports (the async Blob client also needs aiohttp)."""
    extra = extra_for(url)
    if extra is None:
        return ()
    modules = EXTRA_MODULES[extra]
    return modules if asynchronous or extra != "azure" else modules[:1]


def _require_extra(url: str, *, asynchronous: bool) -> None:
    extra = extra_for(url)
    problem = missing_extra(extra, extra_modules(url, asynchronous=asynchronous)) if extra else None
    if problem:
        raise ImportError(f"the {url.partition('://')[0]}:// lock {problem}")


def from_url(url: str, *, asynchronous: bool = False, prefix: str | None = None) -> Any:
    """A lease backend for ``url`` (see the module docstring); the caller closes it.

    Raises InvalidArgumentError for a malformed or unsupported URL (the message shows the
    URL redacted), ImportError with the install line when the URL's extra is missing.
    Builds the client only; nothing connects until the first acquire.
    """
    if not isinstance(url, str) or not url:
        got = "''" if isinstance(url, str) else type(url).__name__  # never echo a value: it may hold a secret
        raise InvalidArgumentError(f"lock URL must be a non-empty string, got {got}")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise InvalidArgumentError(f"prefix must be a non-empty string or None, got {prefix!r}")
    kwargs: dict[str, Any] = {"prefix": prefix} if prefix else {}
    _require_extra(url, asynchronous=asynchronous)
    if url == "file" or url.startswith("file:"):
        from strict_singleton.lock_backends.file import AsyncFileLease, FileLease

        directory = url[5:] or None
        return AsyncFileLease(directory) if asynchronous else FileLease(directory)
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        host_port(split_url(url), url)
        if asynchronous:
            import redis.asyncio as aioredis

            from strict_singleton.lock_backends.redis import AsyncRedisLease

            return AsyncRedisLease(aioredis.Redis.from_url(url), **kwargs)
        import redis

        from strict_singleton.lock_backends.redis import RedisLease

        return RedisLease(redis.Redis.from_url(url), **kwargs)
    if scheme == "redlock":
        urls = redlock_node_urls(url)
        if asynchronous:
            import redis.asyncio as aioredis

            from strict_singleton.lock_backends.redlock import AsyncRedlockLease

            return AsyncRedlockLease([aioredis.Redis.from_url(u, socket_timeout=2) for u in urls], **kwargs)
        import redis

        from strict_singleton.lock_backends.redlock import RedlockLease

        return RedlockLease([redis.Redis.from_url(u, socket_timeout=2) for u in urls], **kwargs)
    if scheme in ("azblob", "azurite"):
        from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease

        conn, container = blob_target(url)
        cls = AsyncBlobLease if asynchronous else BlobLease
        return cls.from_connection_string(conn, container=container, retry_total=1, **kwargs)
    raise InvalidArgumentError(f"unsupported lock URL {redact_url(url)}; use {SCHEMES}")


def redlock_node_urls(url: str) -> list[str]:
    """One ``redis://`` URL per node of a ``redlock://`` URL (each checked for host and port)."""
    rest = url[len("redlock://") :]
    hosts, _, db = rest.partition("/")
    urls = []
    for node in (h for h in hosts.split(",") if h):
        parts = split_url(f"redis://{node}/{db or 0}", shown=url)
        host_port(parts, url)
        urls.append(parts.geturl())
    if not urls:
        raise InvalidArgumentError(f"lock URL needs a host and port for every server: {redact_url(url)}")
    return urls


def blob_target(url: str) -> tuple[str, str]:
    """(connection string, container) of an ``azblob://`` or ``azurite://`` URL."""
    parts = split_url(url)
    if parts.scheme == "azblob":
        container = (parts.netloc + parts.path).strip("/")
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if not conn:
            raise InvalidArgumentError("azblob:// needs $AZURE_STORAGE_CONNECTION_STRING to be set")
    else:
        host, port = host_port(parts, url)
        container = parts.path.strip("/")
        conn = dev_connection_string(host, port)
    if not container or "/" in container:
        raise InvalidArgumentError(f"lock URL needs exactly one container name: {redact_url(url)}")
    return conn, container


def host_port(parts: Any, url: str) -> tuple[str, int]:
    """The host and port of a parsed lock URL, or a clear error (URL redacted)."""
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(f"bad port in lock URL {redact_url(url)}: {scrub(str(exc), url)}") from None
    if not parts.hostname or port is None:
        raise InvalidArgumentError(f"lock URL needs a host and port for every server: {redact_url(url)}")
    return str(parts.hostname), int(port)


def split_url(url: str, *, shown: str | None = None) -> SplitResult:
    """``urlsplit(url)``, or :class:`InvalidArgumentError` naming ``shown`` (default ``url``)
    redacted: ``urlsplit`` refuses e.g. an unclosed IPv6 bracket with a ``ValueError``
    that callers must never let reach a message quoting the raw URL."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        why = scrub(scrub(str(exc), url), shown or url)
        raise InvalidArgumentError(f"malformed lock URL {redact_url(shown or url)}: {why}") from None


__all__ = [
    "SCHEMES",
    "blob_target",
    "extra_for",
    "extra_modules",
    "from_url",
    "host_port",
    "missing_extra",
    "redact_url",
    "redlock_node_urls",
    "scrub",
    "split_url",
]
