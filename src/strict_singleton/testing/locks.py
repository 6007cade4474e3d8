"""Build a lease backend from a URL: ``file`` / ``file:/dir``, ``redis://host:port/db``."""

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
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidArgumentError(f"bad port in lock URL {_redact(url)}: {exc}") from exc
        if not parts.hostname or port is None:
            raise InvalidArgumentError(f"lock URL needs a host and port: {_redact(url)}")
        kwargs = {"prefix": prefix} if prefix else {}
        if asynchronous:
            import redis.asyncio as aioredis

            from strict_singleton.lock_backends.redis import AsyncRedisLease

            return AsyncRedisLease(aioredis.Redis.from_url(url), **kwargs)
        import redis

        from strict_singleton.lock_backends.redis import RedisLease

        return RedisLease(redis.Redis.from_url(url), **kwargs)
    raise InvalidArgumentError(f"unsupported lock URL {_redact(url)}; use file, file:/dir or redis://host:port/db")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
