"""Azure Blob checks (``azblob://``, ``azurite://``): the container, a real lease on a
scratch blob, the service's clock and the round trip.

The container is created if missing, as the lease itself would on first use (it is
never deleted: Azure keeps a deleted container's name blocked for a while). The scratch
lease is on a scratch instance ID (``strict-singleton-doctor-<uuid4>``) under the
lease's real blob names and prefix, so any SAS or role that lets real leases work lets
the cycle work, and no real ID can be a fresh UUID's. Its blob is deleted in a
``finally`` on every way out; a blob has no TTL, so a doctor killed mid-cycle leaves
that one blob (a lease on it expires within 15 s). Errors are printed without keys,
SAS signatures or query strings.
"""

from __future__ import annotations

import email.utils
from typing import Any

from strict_singleton.doctor._clock import clock_verdict
from strict_singleton.doctor._cycle import lease_cycle
from strict_singleton.doctor._measure import format_ms, median_rtt, skew_of, wall
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis import ROW_ROUND_TRIP
from strict_singleton.doctor._redis_cycle import INFORMATIONAL, scratch_id
from strict_singleton.lock_backends._blob_common import DEFAULT_PREFIX, MIN_LEASE_SECONDS, redact
from strict_singleton.lock_backends._url import blob_target

_ROW_CLOCK = "row 22; starters within clock_skew"


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + f": {redact(first)[:300]}"


class _DateHook:
    """Keeps the ``Date`` header of the last response (the service's clock, 1 s resolution)."""

    def __init__(self) -> None:
        self.date: str | None = None

    def __call__(self, response: Any) -> None:
        self.date = response.http_response.headers.get("Date")


def container_check(client: Any, target: str) -> tuple[Check, bool]:
    """Whether the container exists (or could be created), and whether to go on."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    try:
        client.get_container_properties()
        return Check(target, "container", Status.OK, "exists", guarantee="row 9", measured="exists"), True
    except ResourceNotFoundError:
        pass
    except Exception as exc:
        return _unreachable(target, exc), False
    try:
        client.create_container()
    except ResourceExistsError:
        pass  # created meanwhile by a starter: what the lease tolerates too
    except Exception as exc:
        return (
            Check(
                target,
                "container",
                Status.FAILURE,
                f"missing, and creating it failed: {_describe(exc)}; every start fails closed",
                fix="create the container, or grant the credentials the right to create it",
                guarantee="row 9",
                measured="missing",
            ),
            False,
        )
    return (
        Check(
            target,
            "container",
            Status.OK,
            "was missing: created, as the lease does on first use",
            guarantee="row 9",
            measured="created",
        ),
        True,
    )


def _unreachable(target: str, exc: BaseException) -> Check:
    return Check(
        target,
        "reachable",
        Status.FAILURE,
        f"the container could not be read: {_describe(exc)}; every start fails closed meanwhile",
        fix="check the endpoint, the account key or SAS (read, write, create, delete on blobs) and firewalls",
        guarantee="row 10",
        measured="unreachable",
    )


def clock_check(client: Any, target: str, *, clock_skew: float) -> Check:
    """The service's ``Date`` header against our wall clock. Blob start records expire by
    the starters' wall clocks, which must be within ``clock_skew`` of *each other*; Azure's
    clock (synchronised) is the reference they share, so each host is held to
    ``clock_skew / 2`` of it at worst, counting the header's one-second resolution and
    the round trip (see ``_clock``): a warning beyond it, a failure beyond ``clock_skew``
    for certain."""
    hook = _DateHook()
    sent = wall()
    try:
        client.get_container_properties(raw_response_hook=hook)
    except Exception as exc:
        return Check(
            target,
            "clock",
            Status.WARNING,
            f"could not read the Date header: {_describe(exc)}",
            guarantee=_ROW_CLOCK,
            measured="unknown",
        )
    answered = wall()
    try:
        parsed = email.utils.parsedate_to_datetime(hook.date) if hook.date else None
    except (TypeError, ValueError):  # a header that is not a date tells no more than none
        parsed = None
    if parsed is None:
        return Check(
            target,
            "clock",
            Status.WARNING,
            "the answer carried no Date header" if not hook.date else "the answer's Date header is not a date",
            guarantee=_ROW_CLOCK,
            measured="unknown",
        )
    server = parsed.timestamp()
    skew = skew_of(server, server + 1.0, sent, answered)  # Date has one-second resolution
    status, detail = clock_verdict(skew, clock_skew, fail_beyond=True)
    return Check(
        target,
        "clock",
        status,
        f"the service's clock (Date header, 1 s resolution) is {detail}",
        fix=""
        if status is Status.OK
        else "synchronise every starter's clock with NTP (slewed), or raise clock_skew above twice this host's "
        "distance from Azure's clock",
        guarantee=_ROW_CLOCK,
        measured=skew.describe(),
    )


def _delete_scratch(client: Any, name: str, target: str) -> list[Check]:
    """Delete the scratch blob; report it only if it exists and could not be deleted."""
    try:
        client.delete_blob(name)
    except Exception as exc:
        if getattr(exc, "status_code", None) != 404:  # a cycle that failed early made no blob
            return [
                Check(
                    target,
                    "scratch blob",
                    Status.WARNING,
                    f"could not delete the scratch blob {name}: {_describe(exc)}",
                    fix="delete it by hand (it belongs to no lease), or grant delete on blobs",
                    guarantee=INFORMATIONAL,
                    measured="left behind",
                )
            ]
    return []


def check_blob(
    url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None, checks: list[Check]
) -> list[Check]:
    """Every check of one ``azblob://`` or ``azurite://`` lock URL, each appended to
    ``checks`` as it is done (``checks`` is returned)."""
    from azure.storage.blob import ContainerClient

    from strict_singleton.lock_backends.blob import BlobLease

    connection, container = blob_target(url)
    client = ContainerClient.from_connection_string(
        connection, container_name=container, retry_total=0, connection_timeout=timeout, read_timeout=timeout
    )
    try:
        check, go_on = container_check(client, target)
        checks.append(check)
        if not go_on:
            return checks
        rtt = median_rtt(client.get_container_properties)
        checks.append(
            Check(
                target,
                "round trip",
                Status.OK,
                "median of 5 container-properties reads",
                guarantee=ROW_ROUND_TRIP,
                measured=format_ms(rtt),
            )
        )
        checks.append(clock_check(client, target, clock_skew=clock_skew))
        lease = BlobLease(client, prefix=prefix or DEFAULT_PREFIX, create_container=False, name=target)
        instance_id = scratch_id()
        try:
            checks.append(lease_cycle(lease, target=target, instance_id=instance_id, ttl=float(MIN_LEASE_SECONDS)))
        finally:
            checks += _delete_scratch(client, lease.blob_name(instance_id), target)
        return checks
    finally:
        client.close()


__all__ = ["check_blob"]
