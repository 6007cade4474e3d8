"""Azure Blob checks (``azblob://``, ``azurite://``): the container, a real lease on a
scratch blob, the service's clock and the round trip.

The container is created if missing, as the lease itself would on first use (it is
never deleted: Azure keeps a deleted container's name blocked for a while). The scratch
blob is ``<prefix>doctor/id/<random ID>``: real lease blobs continue the prefix with
``id/`` or ``sha256/``, so it cannot be one; it is deleted afterwards. Errors are printed
without keys, SAS signatures or query strings.
"""

from __future__ import annotations

import email.utils
from typing import Any

from strict_singleton.doctor._cycle import lease_cycle
from strict_singleton.doctor._measure import format_ms, median_rtt, skew_of, wall
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis import scratch_id
from strict_singleton.lock_backends._blob_common import DEFAULT_PREFIX, MIN_LEASE_SECONDS, redact
from strict_singleton.lock_backends._url import blob_target

_ROW_CLOCK = "row 22; assumption: starters' wall clocks within clock_skew"


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
    the starters' wall clocks, so a starter whose clock is off from Azure's (which is
    synchronised) by more than ``clock_skew`` is off from the other starters too."""
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
    parsed = email.utils.parsedate_to_datetime(hook.date) if hook.date else None
    if parsed is None:
        return Check(
            target,
            "clock",
            Status.WARNING,
            "the answer carried no Date header",
            guarantee=_ROW_CLOCK,
            measured="unknown",
        )
    server = parsed.timestamp()
    skew = skew_of(server, server + 1.0, sent, answered)  # Date has one-second resolution
    if skew.least > clock_skew:
        return Check(
            target,
            "clock",
            Status.FAILURE,
            f"the service's clock is {skew.middle:+.1f} s from ours (allowed clock_skew {clock_skew:g} s): start "
            "records on Blob expire by the starters' wall clocks, so this host's records and reads disagree "
            "with the others'",
            fix="synchronise this host's clock (NTP, slewed), or raise clock_skew above the real spread",
            guarantee=_ROW_CLOCK,
            measured=skew.describe(),
        )
    return Check(
        target,
        "clock",
        Status.OK,
        f"within {clock_skew:g} s of ours (Date header, 1 s resolution)",
        guarantee=_ROW_CLOCK,
        measured=skew.describe(),
    )


def check_blob(url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None) -> list[Check]:
    """Every check of one ``azblob://`` or ``azurite://`` lock URL."""
    from azure.storage.blob import ContainerClient

    from strict_singleton.lock_backends.blob import BlobLease

    connection, container = blob_target(url)
    client = ContainerClient.from_connection_string(
        connection, container_name=container, retry_total=0, connection_timeout=timeout, read_timeout=timeout
    )
    try:
        check, go_on = container_check(client, target)
        checks = [check]
        if not go_on:
            return checks
        rtt = median_rtt(client.get_container_properties)
        checks.append(
            Check(target, "round trip", Status.OK, "median of 5 container-properties reads", measured=format_ms(rtt))
        )
        checks.append(clock_check(client, target, clock_skew=clock_skew))
        lease = BlobLease(client, prefix=(prefix or DEFAULT_PREFIX) + "doctor/", create_container=False, name=target)
        instance_id = scratch_id()
        checks.append(lease_cycle(lease, target=target, instance_id=instance_id, ttl=float(MIN_LEASE_SECONDS)))
        try:
            client.delete_blob(lease.blob_name(instance_id))
        except Exception as exc:
            if getattr(exc, "status_code", None) != 404:  # a cycle that failed early made no blob
                checks.append(
                    Check(
                        target,
                        "scratch blob",
                        Status.WARNING,
                        f"could not delete the scratch blob {lease.blob_name(instance_id)}: {_describe(exc)}",
                        fix="delete it by hand; it belongs to no lease",
                        measured="left behind",
                    )
                )
        return checks
    finally:
        client.close()


__all__ = ["check_blob"]
