"""``doctor``: every assumption of docs/guarantees.md, checked against a live deployment.

:func:`check_deployment` (and its asyncio twin :func:`acheck_deployment`) take the lock
URLs a deployment uses (and, optionally, its Durable client) and return a
:class:`DoctorReport`: one :class:`Check` per fact measured, each ``ok``, ``warning``,
``failure`` or ``skipped``, with what was found, what to change and the guarantees row
it protects. ``strict-singleton doctor`` prints the same report.

Per store (see each module for what a check proves and assumes):

* Redis (each ``redis://`` server, each Redlock node, each Cluster primary):
  ``maxmemory-policy``, persistence and its health, replication, clock (``TIME``),
  version, round trip, the commands and ACL permissions the lease uses (``ACL
  DRYRUN``), one lease cycle on a scratch ID and its release wake-up. Redlock also: the
  nodes' independence and the quorum.
* Azure Blob (``azblob://``, ``azurite://``): the container, one lease taken, renewed
  and released on a scratch blob, the service clock (``Date``), round trip.
* File (``file``, ``file:/dir``): an absolute path, the directory's owner and mode and
  its ancestors', a local filesystem, whether this process shares the directory with
  PID 1 (systemd ``PrivateTmp``), one lease cycle.
* Durable client: a status read of a scratch ID that cannot exist, and its round trip.

Nothing it does can disturb a live lease: it reads settings, and its lease cycles run
on a scratch instance ID (``strict-singleton-doctor-<uuid4>``) under the lease's real
names, so every permission real leases have covers them and no real ID can collide;
their traces are deleted in a ``finally`` (Redis keys also expire on their own).
Configuration no lease could use is refused before any store is contacted. Printed text
carries URLs only redacted (:func:`~strict_singleton.lock_backends._redact.redact_url`),
and every secret of every URL given (lock URLs, the client address) is scrubbed from
every field of the report, never a password or a connection string.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from strict_singleton.doctor._model import Check, DoctorReport, Status
from strict_singleton.doctor._render import format_report, report_json
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends._url import extra_for, extra_modules, missing_extra, redact_url, scrub

DEFAULT_TIMEOUT = 3.0
DEFAULT_CLOCK_SKEW = 5.0  # StarterOptions.clock_skew's default

Checker = Callable[..., list[Check]]


def _checker(url: str) -> Checker:
    """The checks for a lock URL's scheme (imported when used: each needs its extra)."""
    scheme = "file" if url == "file" or url.startswith("file:") else url.partition("://")[0]
    if scheme == "file":
        from strict_singleton.doctor._file import check_file

        return check_file
    if scheme in ("redis", "rediss"):
        from strict_singleton.doctor._redis import check_redis

        return check_redis
    if scheme == "redlock":
        from strict_singleton.doctor._redlock import check_redlock

        return check_redlock
    from strict_singleton.doctor._blob import check_blob

    return check_blob


def validate_lock_url(url: str, *, prefix: str | None = None) -> None:
    """Raise :class:`InvalidArgumentError` (URL redacted) unless ``url`` (with ``prefix``)
    is a configuration a starter could use: the doctor contacts no store for a URL that
    could never serve a lease. A missing extra or ``$AZURE_STORAGE_CONNECTION_STRING`` is
    not a usage error: it is reported as a failing check."""
    from strict_singleton.doctor._config import validate_configuration

    validate_configuration(url, prefix)


def _urls(lock_urls: str | Sequence[str], prefix: str | None) -> list[str]:
    urls = [lock_urls] if isinstance(lock_urls, str) else list(lock_urls)
    for url in urls:
        validate_lock_url(url, prefix=prefix)
    return urls


def _validate_numbers(timeout: float, clock_skew: float) -> None:
    for name, value in (("timeout", timeout), ("clock_skew", clock_skew)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
            raise InvalidArgumentError(f"{name} must be a number of seconds above 0 and at most a day, got {value!r}")


def _scrubbed(checks: list[Check], sources: Sequence[str]) -> list[Check]:
    """``checks`` with every secret of every URL in ``sources`` masked in every field: a
    driver may echo any URL it was given (a gRPC target, a Redis node) in any message."""

    def clean(text: str) -> str:
        for source in sources:
            text = scrub(text, source)
        return text

    return [
        Check(
            target=clean(c.target),
            name=c.name,
            status=c.status,
            detail=clean(c.detail),
            fix=clean(c.fix),
            guarantee=c.guarantee,
            measured=clean(c.measured),
        )
        for c in checks
    ]


def check_lock_url(url: str, *, timeout: float, clock_skew: float, prefix: str | None) -> list[Check]:
    """Every check of one lock URL; never raises for what the store does or lacks."""
    target = redact_url(url)
    extra = extra_for(url)
    problem = missing_extra(extra, extra_modules(url, asynchronous=False)) if extra else None
    if problem:
        return [
            Check(
                target,
                "client library",
                Status.FAILURE,
                problem,
                fix=problem.rpartition(": ")[2],
                guarantee="row 10: every start fails closed without it",
            )
        ]
    # The checker appends each check as it is done, so a surprise keeps those before it.
    checks: list[Check] = []
    try:
        _checker(url)(url, target, timeout=timeout, clock_skew=clock_skew, prefix=prefix, checks=checks)
    except InvalidArgumentError as exc:  # e.g. azblob:// without its connection string
        checks.append(Check(target, "configuration", Status.FAILURE, exc.message, fix=exc.message, guarantee="row 10"))
    except Exception as exc:  # a store answering what no check foresaw: report it, never crash a health check
        checks.append(
            Check(
                target,
                "doctor",
                Status.FAILURE,
                f"the checks stopped: {type(exc).__name__}: {exc}",
                fix="report this answer of the store; the checks before it are above",
                guarantee="informational",
            )
        )
    return checks


def check_deployment(
    lock_urls: str | Sequence[str],
    *,
    client: str | Any | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    prefix: str | None = None,
) -> DoctorReport:
    """Check every lock URL (and the Durable client, if given) against a live deployment.

    Args:
        lock_urls: one lock URL or several (``file``, ``file:/dir``, ``redis://``,
            ``rediss://``, ``redlock://``, ``azblob://``, ``azurite://``), as the
            starters use them.
        client: the Durable backend's address (``grpc://host:port``, ``grpcs://`` for
            TLS, or ``host:port``; nothing else: no user, password, path or query), or a sync durabletask client (or
            :class:`~strict_singleton.transport.Transport`) to read a status with.
            ``None``: the backend is not checked.
        timeout: seconds each store call may take (connect and answer), and the gRPC
            deadline of each status read. A store that does not answer in time is a
            failure.
        clock_skew: the starters' ``clock_skew``: how far a store's clock may be from ours.
        prefix: the lease's key or blob-name prefix, if not the default (for the ACL
            check and the scratch names).

    Returns:
        A :class:`DoctorReport`; ``report.status`` is the worst check's status.

    Raises:
        InvalidArgumentError: before any store is contacted: a malformed or unsupported
            lock URL (shown redacted), one no lease could use (a Redlock of fewer than 3
            nodes, a Redis option redis-py refuses), a ``prefix`` the lease would refuse
            (empty, braces on Redis), a bad ``timeout``/``clock_skew``, a ``client``
            address that is not ``[grpc://|grpcs://]host:port`` (shown masked), or an async
            ``client`` (use :func:`acheck_deployment`). What the stores say or lack is
            never raised: it is a check in the report.

    Takes a few store round trips per check: fine for a deployment pipeline or a
    periodic health check, too slow for every request.
    """
    from strict_singleton.doctor._durable import check_client, require_client_kind

    _validate_numbers(timeout, clock_skew)
    urls = _urls(lock_urls, prefix)
    require_client_kind(client, asynchronous=False)
    checks = _lock_checks(urls, timeout=timeout, clock_skew=clock_skew, prefix=prefix)
    if client is not None:
        checks += check_client(client, timeout=timeout)
    return DoctorReport.of(_scrubbed(checks, _sources(urls, client)))


async def acheck_deployment(
    lock_urls: str | Sequence[str],
    *,
    client: str | Any | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    prefix: str | None = None,
) -> DoctorReport:
    """:func:`check_deployment` for asyncio code: the same checks, arguments and report.

    The lock-store checks are the sync ones, run in a worker thread
    (``asyncio.to_thread``): they are the same calls, and the event loop stays free
    meanwhile. ``client`` may be an address or an *async* durabletask client (or async
    transport), whose status reads are awaited on this loop; a sync one raises
    :class:`InvalidArgumentError` (use :func:`check_deployment`).
    """
    from strict_singleton.doctor._durable import acheck_client, require_client_kind

    _validate_numbers(timeout, clock_skew)
    urls = _urls(lock_urls, prefix)
    require_client_kind(client, asynchronous=True)

    checks = await asyncio.to_thread(_lock_checks, urls, timeout=timeout, clock_skew=clock_skew, prefix=prefix)
    if client is not None:
        checks += await acheck_client(client, timeout=timeout)
    return DoctorReport.of(_scrubbed(checks, _sources(urls, client)))


def _lock_checks(urls: list[str], *, timeout: float, clock_skew: float, prefix: str | None) -> list[Check]:
    """Every lock URL's checks, in order (the sync checks; the async API runs this in a thread)."""
    checks: list[Check] = []
    for url in urls:
        checks += check_lock_url(url, timeout=timeout, clock_skew=clock_skew, prefix=prefix)
    return checks


def _sources(urls: list[str], client: str | Any | None) -> list[str]:
    return [*urls, client] if isinstance(client, str) else urls


__all__ = [
    "Check",
    "DoctorReport",
    "Status",
    "acheck_deployment",
    "check_deployment",
    "format_report",
    "report_json",
]
