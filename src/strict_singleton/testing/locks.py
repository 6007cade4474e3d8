"""Build a lease backend from a URL.

* ``file`` or ``file:/dir``: :class:`FileLease` (one host);
* ``redis://host:port/db`` (``rediss://`` for TLS): :class:`RedisLease`;
* ``redlock://host:port,host:port,host:port/db``: :class:`RedlockLease` over those
  independent masters (at least 3);
* ``azblob://CONTAINER``: :class:`BlobLease` with the connection string from
  ``$AZURE_STORAGE_CONNECTION_STRING`` (never from the URL, so it stays out of logs);
* ``azurite://host:port/CONTAINER``: :class:`BlobLease` on the Azurite emulator's
  development account.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from strict_singleton.errors import InvalidArgumentError


def lock_from_url(url: str, *, asynchronous: bool = False, prefix: str | None = None) -> Any:
    """A lease backend for ``url``; raises InvalidArgumentError for a malformed URL."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"lock URL must be a non-empty string, got {url!r}")
    if url == "file" or url.startswith("file:"):
        from strict_singleton.lock_backends.file import AsyncFileLease, FileLease

        directory = url[5:] or None
        return AsyncFileLease(directory) if asynchronous else FileLease(directory)
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        _host_port(parts, url)
        kwargs = {"prefix": prefix} if prefix else {}
        if asynchronous:
            import redis.asyncio as aioredis

            from strict_singleton.lock_backends.redis import AsyncRedisLease

            return AsyncRedisLease(aioredis.Redis.from_url(url), **kwargs)
        import redis

        from strict_singleton.lock_backends.redis import RedisLease

        return RedisLease(redis.Redis.from_url(url), **kwargs)
    if parts.scheme == "redlock":
        return _redlock(url, asynchronous=asynchronous, prefix=prefix)
    if parts.scheme in ("azblob", "azurite"):
        return _blob_lock(url, parts, asynchronous=asynchronous, prefix=prefix)
    raise InvalidArgumentError(
        f"unsupported lock URL {_redact(url)}; use file, file:/dir, redis://host:port/db, "
        "redlock://host:port,host:port,host:port/db, azblob://container or azurite://host:port/container"
    )


def _blob_lock(url: str, parts: Any, *, asynchronous: bool, prefix: str | None) -> Any:
    import os

    from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease

    kwargs: dict[str, Any] = {"prefix": prefix} if prefix else {}
    if parts.scheme == "azblob":
        container = (parts.netloc + parts.path).strip("/")
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if not conn:
            raise InvalidArgumentError("azblob:// needs $AZURE_STORAGE_CONNECTION_STRING to be set")
    else:
        from strict_singleton.testing.azurite import dev_connection_string

        host, port = _host_port(parts, url)
        container = parts.path.strip("/")
        conn = dev_connection_string(host, port)
    if not container or "/" in container:
        raise InvalidArgumentError(f"lock URL needs exactly one container name: {_redact(url)}")
    cls = AsyncBlobLease if asynchronous else BlobLease
    return cls.from_connection_string(conn, container=container, retry_total=1, **kwargs)


def _redlock(url: str, *, asynchronous: bool, prefix: str | None) -> Any:
    rest = url[len("redlock://") :]
    hosts, _, db = rest.partition("/")
    nodes = [h for h in hosts.split(",") if h]
    urls = []
    for node in nodes:
        parts = urlsplit(f"redis://{node}/{db or 0}")
        _host_port(parts, url)
        urls.append(parts.geturl())
    kwargs: dict[str, Any] = {"prefix": prefix} if prefix else {}
    if asynchronous:
        import redis.asyncio as aioredis

        from strict_singleton.lock_backends.redlock import AsyncRedlockLease

        return AsyncRedlockLease([aioredis.Redis.from_url(u, socket_timeout=2) for u in urls], **kwargs)
    import redis

    from strict_singleton.lock_backends.redlock import RedlockLease

    return RedlockLease([redis.Redis.from_url(u, socket_timeout=2) for u in urls], **kwargs)


def _host_port(parts: Any, url: str) -> tuple[str, int]:
    """The host and port of a parsed lock URL, or a clear error (password redacted)."""
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(f"bad port in lock URL {_redact(url)}: {exc}") from None
    if not parts.hostname or port is None:
        raise InvalidArgumentError(f"lock URL needs a host and port for every server: {_redact(url)}")
    return str(parts.hostname), int(port)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
