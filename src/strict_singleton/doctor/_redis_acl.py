"""What a Redis user must be allowed for the lease: the commands, keys and channels, the
exact ``ACL SETUSER`` grants, and the ``ACL DRYRUN`` check of them.

Derived from what :class:`~strict_singleton.lock_backends.redis.RedisLease` (and every
Redlock node) really sends, on its real key and channel names:

* top level: ``EVALSHA`` (redis-py's ``Script``), ``SCRIPT LOAD`` (when the server
  forgot the script, e.g. after a restart), ``PTTL`` of the lock (a waiter's bound),
  ``SUBSCRIBE`` and ``UNSUBSCRIBE`` of the release channel of each ID a caller waits
  for (wake-ups), ``CONFIG GET
  maxmemory-policy`` (the start-up eviction warning), ``SELECT`` when the URL's db is
  not 0 and ``CLIENT SETNAME`` when it sets ``client_name`` (redis-py sends both on
  every new connection, and a refusal fails the connection); not ``HELLO`` or ``AUTH``
  (every user may run them) nor ``CLIENT SETINFO`` (redis-py ignores its refusal);
* inside the Lua scripts, which Redis checks against the user's ACL too: ``SET``,
  ``INCR``, ``GET``, ``PTTL``, ``PEXPIRE``, ``DEL``, ``PUBLISH``.

Keys: ``<prefix>{*`` (plain form) and ``<prefix>#{*`` (digest form). Channels: two
patterns that match every release channel, in both forms, as ``SUBSCRIBE`` and
``PUBLISH`` name them. Nothing else: a user granted exactly :func:`acl_grants` can run
every lease, and the doctor's lease cycle and wake-up check. (Releases of this library
before per-ID subscriptions used ``PSUBSCRIBE`` of those two patterns: a fleet that
still runs one needs ``+psubscribe`` too, which the same channel patterns cover.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from typing import Any

from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis_read import read, text
from strict_singleton.lock_backends._redis_common import ACQUIRE_SCRIPT, RedisKeys, _glob_escape

PROBE_ID = "strict-singleton-doctor"  # the ID ACL DRYRUN is asked about (it runs nothing)
ROW = "row 10"


@dataclass(frozen=True, slots=True)
class Need:
    """One command the lease sends (or its scripts run), with arguments shaped as it sends them."""

    label: str
    args: tuple[str, ...]
    grant: str
    required: bool = True  # False: the lease works without it, degraded
    without: str = ""  # what goes wrong without it


def client_name_of(client: Any) -> bool:
    """Whether ``client`` names its connections (``?client_name=``): redis-py then sends
    ``CLIENT SETNAME`` on every new connection."""
    pool = getattr(client, "connection_pool", None)
    return bool(getattr(pool, "connection_kwargs", {}).get("client_name"))


def lease_needs(prefix: str, *, db: int = 0, client_name: bool = False) -> list[Need]:
    """Every command the lease sends, on the lease's real key and channel names."""
    keys = RedisKeys(prefix, "doctor")
    lock, fence, start, request = keys.acquire_keys(PROBE_ID)
    channel = keys.channel(PROBE_ID)
    sha = hashlib.sha1(ACQUIRE_SCRIPT.encode()).hexdigest()
    needs = [
        Need("EVALSHA", ("EVALSHA", sha, "4", lock, fence, start, request, "token", "1000"), "+evalsha"),
        Need("SCRIPT LOAD", ("SCRIPT", "LOAD", "return 1"), "+script|load"),
        Need("SET lock NX PX", ("SET", lock, "token", "NX", "PX", "1000"), "+set"),
        Need("SET fence", ("SET", fence, "1"), "+set"),  # Redlock raises a node's fence
        Need("INCR fence", ("INCR", fence), "+incr"),
        Need("GET lock", ("GET", lock), "+get"),
        Need("GET start record", ("GET", start), "+get"),
        Need("GET request record", ("GET", request), "+get"),
        Need("PTTL lock", ("PTTL", lock), "+pttl"),
        Need("PTTL start record", ("PTTL", start), "+pttl"),
        Need("PEXPIRE lock", ("PEXPIRE", lock, "1000"), "+pexpire"),
        Need("DEL lock", ("DEL", lock), "+del"),
        Need("SET start record PX", ("SET", start, "record", "PX", "1000"), "+set"),
        Need("SET request record PX", ("SET", request, "record", "PX", "1000"), "+set"),
        Need("PUBLISH release", ("PUBLISH", channel, "1"), "+publish"),
        Need(
            "SUBSCRIBE release",
            ("SUBSCRIBE", channel),
            "+subscribe",
            required=False,
            without="waiters are not woken by a release and poll instead",
        ),
        Need(
            "UNSUBSCRIBE release",
            ("UNSUBSCRIBE", channel),
            "+unsubscribe",
            required=False,
            without="a waiter's listener stops at its first UNSUBSCRIBE, and waiters poll instead",
        ),
        Need(
            "CONFIG GET maxmemory-policy",
            ("CONFIG", "GET", "maxmemory-policy"),
            "+config|get",
            required=False,
            without="the lease's start-up warning about an evicting policy is skipped",
        ),
    ]
    if db:
        needs.append(Need("SELECT db", ("SELECT", str(db)), "+select"))
    if client_name:
        needs.append(Need("CLIENT SETNAME", ("CLIENT", "SETNAME", PROBE_ID), "+client|setname"))
    return needs


def acl_grants(prefix: str, *, db: int = 0, client_name: bool = False) -> str:
    """The exact ``ACL SETUSER`` rules the lease needs (commands, keys, channels); ``db``
    and ``client_name``: the URL's, whose connections send ``SELECT`` or ``CLIENT SETNAME``."""
    commands = dict.fromkeys(n.grant for n in lease_needs(prefix, db=db, client_name=client_name))
    escaped = _glob_escape(prefix)
    keys = [f"~{escaped}{{*", f"~{escaped}#{{*"]
    channels = [f"&{p}" for p in RedisKeys(prefix, "doctor").channel_patterns()]
    return " ".join([*commands, *keys, *channels])


def acl_line(user: str, prefix: str, *, db: int = 0, client_name: bool = False) -> str:
    return f"ACL SETUSER {user} {acl_grants(prefix, db=db, client_name=client_name)}"


def permissions_check(client: Any, target: str, *, prefix: str, db: int = 0) -> Check:
    """Ask ``ACL DRYRUN`` (Redis 7) whether this user may run every command the lease
    sends, on the lease's own key and channel names. Runs nothing. Where this user may
    not run ``ACL DRYRUN`` itself it is skipped: the lease cycle and the wake-up check
    then run the same commands for real."""
    user, error = read(lambda: client.execute_command("ACL", "WHOAMI"))
    denied: list[tuple[Need, str]] = []
    named = client_name_of(client)
    needs = lease_needs(prefix, db=db, client_name=named)
    if error is None:
        for need in needs:
            answer, error = read(partial(client.execute_command, "ACL", "DRYRUN", text(user), *need.args))
            if error is not None:
                break
            if text(answer) != "OK":
                denied.append((need, text(answer)))
    if error is not None:
        return Check(
            target,
            "permissions",
            Status.SKIPPED,
            f"ACL DRYRUN not available to this user ({error}); the lease cycle and the wake-up check send "
            "the lease's commands for real",
            fix=f"the lease needs exactly: {acl_line('USER', prefix, db=db, client_name=named)}",
            guarantee=ROW,
            measured="not asked",
        )
    name = text(user)
    fix = f"{acl_line(name, prefix, db=db, client_name=named)} (exactly what the lease sends)"
    missing = [need for need, _ in denied if need.required]
    if missing:
        first = next(answer for need, answer in denied if need.required)
        return Check(
            target,
            "permissions",
            Status.FAILURE,
            f"user '{name}' may not run {', '.join(n.label for n in missing)} ({first}): every start fails closed",
            fix=fix,
            guarantee=ROW,
            measured=f"{len(missing)} denied",
        )
    if denied:
        return Check(
            target,
            "permissions",
            Status.WARNING,
            "; ".join(f"user '{name}' may not run {n.label}: {n.without}" for n, _ in denied),
            fix=fix,
            guarantee=ROW,
            measured=f"{len(denied)} optional denied",
        )
    return Check(
        target,
        "permissions",
        Status.OK,
        f"user '{name}' may run all {len(needs)} commands the lease sends",
        guarantee=ROW,
        measured=f"{len(needs)} allowed",
    )
