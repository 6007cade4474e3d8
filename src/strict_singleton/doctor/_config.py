"""Configuration the doctor refuses before contacting any store: what no lease could use.

Bad input gets a clear error before any lease is taken, as in the starters: a lock URL
that does not parse, a Redlock of fewer than three nodes, a Redis option redis-py
refuses, a prefix the lease refuses. These are usage errors (``InvalidArgumentError``,
exit 2), not checks: no store was asked anything. Messages show URLs redacted.
"""

from __future__ import annotations

from collections.abc import Callable

from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends import _blob_common, base
from strict_singleton.lock_backends._redlock_common import quorum
from strict_singleton.lock_backends._url import (
    SCHEMES,
    blob_target,
    host_port,
    redact_url,
    redlock_node_urls,
    scrub,
    split_url,
)

_MIN_REDLOCK_NODES = 3  # RedlockLease's own minimum (validate_nodes)


def validate_configuration(url: str, prefix: str | None) -> None:
    """Raise :class:`InvalidArgumentError` unless ``url`` and ``prefix`` could serve a lease."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError("lock URL must be a non-empty string")
    if url == "file" or url.startswith("file:"):
        return  # the file lease has no key names: prefix does not apply
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        host_port(split_url(url), url)
        _redis_options(url, url)
        _redis_prefix(prefix)
    elif scheme == "redlock":
        nodes = redlock_node_urls(url)
        if len(nodes) < _MIN_REDLOCK_NODES:
            raise InvalidArgumentError(
                f"Redlock needs at least {_MIN_REDLOCK_NODES} independent Redis masters (quorum "
                f"{quorum(_MIN_REDLOCK_NODES)} of them), got {len(nodes)}: {redact_url(url)}"
            )
        for node in nodes:
            _redis_options(node, url)
        _redis_prefix(prefix)
    elif scheme in ("azblob", "azurite"):
        if scheme == "azurite":
            blob_target(url)
        if prefix is not None:
            _prefix(_blob_common.validate_prefix, prefix)
    else:
        raise InvalidArgumentError(f"unsupported lock URL {redact_url(url)}; use {SCHEMES}")


def _redis_prefix(prefix: str | None) -> None:
    if prefix is not None:
        _prefix(base.validate_prefix, prefix)


def _prefix(validate: Callable[..., str], prefix: str) -> None:
    """The lease's own prefix rule (an empty prefix is refused there too, not defaulted)."""
    try:
        validate(prefix, backend="doctor")
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"--prefix: {exc.message}") from None


def _redis_options(node_url: str, url: str) -> None:
    """The options redis-py would refuse when the lease's client is built from ``node_url``
    (e.g. ``?socket_timeout=abc``). Without the ``redis`` extra this is left to the
    "client library" check."""
    try:
        from redis.connection import parse_url
    except ImportError:
        return
    try:
        parse_url(node_url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"bad lock URL {redact_url(url)}: {scrub(scrub(str(exc), node_url), url)}") from None
