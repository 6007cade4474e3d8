"""Probe a lock store once, with a short timeout, before a race starts.

Without it an unreachable store shows up only as every strict start failing closed,
after each start has waited out the client's own retries (about 19 s per start against
a stopped Azurite). The probe uses its own client with ``timeout`` for connecting and
reading and no retries, and sends one harmless request: ``PING`` to every Redis node,
a container-properties read to Blob storage (a missing container is fine: the lease
creates it). File leases are only built, which checks the directory.
"""

from __future__ import annotations

from typing import Any

from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends._url import blob_target, redact_url, redlock_node_urls, scrub

PREFLIGHT_TIMEOUT = 3.0


def probe_lock_store(url: str, *, timeout: float = PREFLIGHT_TIMEOUT) -> list[str]:
    """Raise LockUnavailableError (message redacted) if the store cannot serve leases.

    Returns warnings that do not stop a race (Redlock nodes down while a majority answers).
    """
    shown = redact_url(url)
    try:
        if url == "file" or url.startswith("file:"):
            _probe_file(url)
            return []
        scheme = url.partition("://")[0]
        if scheme in ("redis", "rediss"):
            failure = _ping_redis(url, timeout)
            if failure:
                raise LockUnavailableError(failure, backend=shown)
            return []
        if scheme == "redlock":
            nodes = redlock_node_urls(url)
            pings = ((n, _ping_redis(n, timeout)) for n in nodes)
            failures = [f"{redact_url(n)}: {f}" for n, f in pings if f]
            majority = len(nodes) // 2 + 1
            if len(nodes) - len(failures) < majority:
                raise LockUnavailableError(
                    f"{len(failures)} of {len(nodes)} Redlock nodes unreachable (a lease needs {majority}): "
                    + "; ".join(failures),
                    backend=shown,
                )
            return [f"Redlock node down (a majority still answers): {f}" for f in failures]
        if scheme in ("azblob", "azurite"):
            failure = _probe_blob(url, timeout)
            if failure:
                raise LockUnavailableError(failure, backend=shown)
            return []
    except LockUnavailableError as exc:
        raise LockUnavailableError(scrub(exc.message, url), backend=shown) from None
    return []


def _probe_file(url: str) -> None:
    from strict_singleton.lock_backends import from_url

    try:
        lease = from_url(url)
    except Exception as exc:
        raise LockUnavailableError(f"cannot use the lock directory: {type(exc).__name__}: {exc}") from None
    lease.close()


def _ping_redis(url: str, timeout: float) -> str | None:
    """None if the node answered PING, else the driver's error."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: Any = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _probe_blob(url: str, timeout: float) -> str | None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    from strict_singleton.lock_backends._blob_common import redact

    conn, container = blob_target(url)
    client = ContainerClient.from_connection_string(
        conn, container_name=container, retry_total=0, connection_timeout=timeout, read_timeout=timeout
    )
    try:
        client.get_container_properties()
    except ResourceNotFoundError:
        return None  # reachable; the lease creates the container on first use
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        first_line = (str(exc).splitlines() or [""])[0]
        return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + f": {redact(first_line)[:300]}"
    finally:
        client.close()
    return None
