"""Redis checks: what one server (or each Cluster primary) must be for a lease to hold.

Per server: reachable (median of a few ``PING``\\s), version, ``maxmemory-policy``,
persistence (``appendonly``, ``appendfsync``, ``save``), replication (``INFO
replication``), and its clock (``TIME``) against ours. Per lock URL: the commands and
key/channel permissions the lease uses (``ACL DRYRUN`` where this user may run it) and
one real lease cycle on scratch keys.

Reads only, except the lease cycle, which touches nothing but its own scratch keys:
``<prefix>doctor:{<random ID>}:...``. Every real key of the lease continues its prefix
with ``{`` or ``#``, so no scratch key can be a real lease's key; they are deleted
afterwards. A server that refuses ``CONFIG`` or ``INFO`` (managed Redis often does)
gives a warning "could not read", never a crash.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from strict_singleton.doctor._cycle import lease_cycle
from strict_singleton.doctor._measure import format_ms, median_rtt, skew_of, wall
from strict_singleton.doctor._model import Check, Status
from strict_singleton.lock_backends._redis_common import (
    ACQUIRE_SCRIPT,
    DEFAULT_PREFIX,
    RedisKeys,
    evicting_policy,
)

SCRATCH_SUFFIX = "doctor:"
SCRATCH_TTL = 15.0  # a scratch lease left behind by a crash of the doctor itself expires on its own
_PROBE_ID = "strict-singleton-doctor"  # the ID ACL DRYRUN is asked about: it runs nothing
# What each step of the lease cycle sends, for a failure's message.
CYCLE_USES = {
    "acquire": "EVALSHA or SCRIPT LOAD; in Lua SET NX PX, INCR, GET, PTTL",
    "renew": "EVALSHA; in Lua GET, PEXPIRE",
    "record": "EVALSHA; in Lua GET, SET PX",
    "release": "EVALSHA; in Lua GET, DEL, SET PX, PUBLISH",
}

_ROW_EVICTION = "row 21; residual: store forgets a held lease"
_ROW_PERSISTENCE = "row 7"
_ROW_CLOCK = "row 15; assumption: clocks slewed, not stepped"
_ROW_REACH = "row 10"


def describe(exc: BaseException) -> str:
    """An error in one line (redis-py messages name host and port, never the password)."""
    text = " ".join(str(exc).split()).rstrip(".")
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def connect(url: str, timeout: float) -> Any:
    """A client for one ``redis://`` URL that fails fast: ``timeout`` for connecting and
    reading, no retries (a doctor waits for an answer, it does not ride out an outage)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _read(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """(answer, None) or (None, why it could not be read)."""
    try:
        return call(), None
    except Exception as exc:
        return None, describe(exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config(client: Any, name: str) -> tuple[str | None, str | None]:
    reply, error = _read(lambda: client.config_get(name))
    if error is not None:
        return None, error
    for key, value in (reply or {}).items():
        if _text(key) == name:
            return _text(value), None
    return None, f"CONFIG GET {name} gave no value"


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What one server said about itself (``None``: it refused to say)."""

    target: str
    host: str
    port: int
    run_id: str | None
    role: str | None
    master_host: str | None
    master_port: int | None
    master_replid: str | None
    cluster: bool


def address_of(client: Any) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("host", "?")), int(kwargs.get("port", 0) or 0)


def reach(client: Any, target: str) -> tuple[list[Check], bool]:
    """The round-trip check, and whether the server answered at all."""
    try:
        rtt = median_rtt(client.ping)
    except Exception as exc:
        return [
            Check(
                target,
                "reachable",
                Status.FAILURE,
                f"no answer to PING: {describe(exc)}; every start fails closed (LockUnavailableError) meanwhile",
                fix="check host, port, password, TLS (rediss://) and firewalls",
                guarantee=_ROW_REACH,
                measured="unreachable",
            )
        ], False
    return [Check(target, "round trip", Status.OK, "median of 5 PINGs", measured=format_ms(rtt))], True


def node_checks(client: Any, target: str, *, clock_skew: float) -> tuple[list[Check], NodeFacts]:
    """Version, eviction, persistence, replication and clock of one reachable server."""
    checks: list[Check] = []
    server, server_error = _read(lambda: client.info("server"))
    replication, replication_error = _read(lambda: client.info("replication"))
    cluster_info, _ = _read(lambda: client.info("cluster"))
    if server_error is None:
        checks.append(
            Check(
                target,
                "version",
                Status.OK,
                f"redis_version {server.get('redis_version', '?')}",
                measured=str(server.get("redis_version", "?")),
            )
        )
    else:
        checks.append(_could_not_read(target, "version", "INFO server", server_error, ""))
    checks.append(eviction_check(target, *_config(client, "maxmemory-policy")))
    checks.append(persistence_check(target, client))
    if replication_error is None:
        checks.append(replication_check(target, replication))
    else:
        checks.append(_could_not_read(target, "replication", "INFO replication", replication_error, _ROW_PERSISTENCE))
    checks.append(clock_check(target, client, clock_skew=clock_skew))
    host, port = address_of(client)
    repl = replication or {}
    facts = NodeFacts(
        target=target,
        host=host,
        port=port,
        run_id=None if server is None else _opt(server.get("run_id")),
        role=_opt(repl.get("role")),
        master_host=_opt(repl.get("master_host")),
        master_port=int(repl["master_port"]) if "master_port" in repl else None,
        master_replid=_opt(repl.get("master_replid")),
        cluster=bool((cluster_info or {}).get("cluster_enabled")),
    )
    return checks, facts


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)


def _could_not_read(target: str, name: str, what: str, error: str, guarantee: str, fix: str = "") -> Check:
    return Check(
        target,
        name,
        Status.WARNING,
        f"could not read ({what} refused: {error}); not checked",
        fix=fix or f"allow {what} for this user, or check the setting in the service's own console",
        guarantee=guarantee,
        measured="unknown",
    )


def eviction_check(target: str, policy: str | None, error: str | None) -> Check:
    """``noeviction`` keeps a held lease under memory pressure; ``volatile-*`` and
    ``allkeys-*`` evict keys with a TTL, which every lease has."""
    fix = "CONFIG SET maxmemory-policy noeviction (and in redis.conf or the service's parameters)"
    if policy is None:
        return _could_not_read(target, "maxmemory-policy", "CONFIG GET", error or "?", _ROW_EVICTION, fix)
    if evicting_policy({"maxmemory-policy": policy}) is not None:
        return Check(
            target,
            "maxmemory-policy",
            Status.FAILURE,
            f"{policy} evicts keys with a TTL under memory pressure: a held lease can vanish and let a second "
            "caller in",
            fix=fix,
            guarantee=_ROW_EVICTION,
            measured=policy,
        )
    return Check(
        target,
        "maxmemory-policy",
        Status.OK,
        f"{policy}: keys are never evicted",
        guarantee=_ROW_EVICTION,
        measured=policy,
    )


def persistence_verdict(appendonly: str, appendfsync: str, save: str) -> tuple[Status, str, str]:
    """(status, detail, fix) for a server's persistence settings."""
    if appendonly == "yes":
        if appendfsync == "always":
            return Status.OK, "AOF, fsync on every write: a restart keeps every held lease", ""
        if appendfsync == "everysec":
            return (
                Status.OK,
                "AOF, fsync every second: a restart keeps held leases (a host crash may lose the "
                "last second of writes)",
                "",
            )
        return (
            Status.WARNING,
            f"AOF with appendfsync {appendfsync}: the OS decides when writes reach the disk, so a host crash "
            "can lose held leases",
            "CONFIG SET appendfsync everysec (or always)",
        )
    fix = "CONFIG SET appendonly yes and appendfsync everysec (and in redis.conf)"
    if save.strip():
        return (
            Status.WARNING,
            f"RDB snapshots only (save {save}): a restart forgets every lease taken since the last snapshot",
            fix,
        )
    return Status.WARNING, "no persistence: a restart forgets every held lease", fix


def persistence_check(target: str, client: Any) -> Check:
    values: dict[str, str] = {}
    for name in ("appendonly", "appendfsync", "save"):
        value, error = _config(client, name)
        if value is None:
            return _could_not_read(
                target,
                "persistence",
                "CONFIG GET",
                error or "?",
                _ROW_PERSISTENCE,
                "make sure AOF is on with appendfsync everysec or always",
            )
        values[name] = value
    status, detail, fix = persistence_verdict(values["appendonly"], values["appendfsync"], values["save"])
    measured = f"appendonly {values['appendonly']}, appendfsync {values['appendfsync']}, save '{values['save']}'"
    return Check(target, "persistence", status, detail, fix=fix, guarantee=_ROW_PERSISTENCE, measured=measured)


def replication_check(target: str, info: dict[str, Any]) -> Check:
    role = _text(info.get("role", "?"))
    if role == "slave":
        master = f"{_text(info.get('master_host', '?'))}:{info.get('master_port', '?')}"
        return Check(
            target,
            "replication",
            Status.FAILURE,
            f"a replica of {master}: it refuses writes (replica-read-only) or loses them at its next sync",
            fix="point the lock URL at the master",
            guarantee=_ROW_PERSISTENCE,
            measured=f"role replica of {master}",
        )
    replicas = int(info.get("connected_slaves", 0) or 0)
    if replicas:
        return Check(
            target,
            "replication",
            Status.WARNING,
            f"master with {replicas} replica(s), replicated asynchronously: a failover to a replica that missed "
            "the write loses the held lease",
            fix="use an atomic-dedupe Durable host as the second line, or redlock:// over independent masters "
            "without failover",
            guarantee=f"{_ROW_PERSISTENCE}; residual: store forgets a held lease",
            measured=f"role master, {replicas} replica(s)",
        )
    return Check(
        target,
        "replication",
        Status.OK,
        "master without replicas: no failover can swap the data",
        guarantee=_ROW_PERSISTENCE,
        measured="role master, 0 replicas",
    )


def clock_check(target: str, client: Any, *, clock_skew: float) -> Check:
    """``TIME`` against our wall clock. Redis expires keys by its own clock, so skew alone
    breaks nothing; a large one shows a host whose clock is not synchronised, and the
    correction, if stepped, expires every held lease at once."""
    sent = wall()
    reply, error = _read(lambda: client.time())
    answered = wall()
    if error is not None:
        return _could_not_read(target, "clock", "TIME", error, _ROW_CLOCK)
    server = float(reply[0]) + float(reply[1]) / 1e6
    skew = skew_of(server, server, sent, answered)
    if skew.least > clock_skew:
        return Check(
            target,
            "clock",
            Status.WARNING,
            f"the server's clock is {skew.middle:+.1f} s from ours (allowed {clock_skew:g} s): one of the two is "
            "not synchronised, and stepping it later expires held leases at once",
            fix="run NTP in slew mode on both hosts (chronyd without makestep after boot)",
            guarantee=_ROW_CLOCK,
            measured=skew.describe(),
        )
    return Check(
        target, "clock", Status.OK, f"within {clock_skew:g} s of ours", guarantee=_ROW_CLOCK, measured=skew.describe()
    )


# -- the commands the lease uses ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Need:
    """One command the lease sends (or its scripts run), with arguments shaped as it sends them."""

    label: str
    args: tuple[str, ...]
    required: bool = True  # False: the lease works without it, degraded
    without: str = ""  # what goes wrong without it


def lease_needs(prefix: str, *, redlock: bool = False) -> list[Need]:
    """What :class:`RedisLease` (and each Redlock node) sends, on the lease's real key names.

    Top level: ``EVALSHA`` (redis-py's ``Script``), ``SCRIPT LOAD`` (after a restart
    forgot the script), ``PTTL`` (a waiter's bound), ``PSUBSCRIBE`` (release wake-ups)
    and ``CONFIG GET maxmemory-policy`` (the start-up eviction warning). Inside the Lua
    scripts, which Redis 7 checks against the user's ACL too: ``SET NX PX``, ``INCR``,
    ``GET``, ``PTTL``, ``PEXPIRE``, ``DEL``, ``SET PX`` (records), ``PUBLISH``.
    """
    keys = RedisKeys(prefix, "doctor")
    lock, fence, start, request = keys.acquire_keys(_PROBE_ID)
    channel = keys.channel(_PROBE_ID)
    sha = hashlib.sha1(ACQUIRE_SCRIPT.encode()).hexdigest()
    needs = [
        Need("EVALSHA", ("EVALSHA", sha, "4", lock, fence, start, request, "token", "1000")),
        Need("SCRIPT LOAD", ("SCRIPT", "LOAD", "return 1")),
        Need("SET lock NX PX", ("SET", lock, "token", "NX", "PX", "1000")),
        Need("INCR fence", ("INCR", fence)),
        Need("GET lock", ("GET", lock)),
        Need("GET start record", ("GET", start)),
        Need("GET request record", ("GET", request)),
        Need("PTTL lock", ("PTTL", lock)),
        Need("PTTL start record", ("PTTL", start)),
        Need("PEXPIRE lock", ("PEXPIRE", lock, "1000")),
        Need("DEL lock", ("DEL", lock)),
        Need("SET start record PX", ("SET", start, "record", "PX", "1000")),
        Need("SET request record PX", ("SET", request, "record", "PX", "1000")),
        Need("PUBLISH release", ("PUBLISH", channel, "1")),
        Need(
            "PSUBSCRIBE releases",
            ("PSUBSCRIBE", *keys.channel_patterns()),
            required=False,
            without="waiters are not woken by a release and poll instead",
        ),
        Need(
            "CONFIG GET maxmemory-policy",
            ("CONFIG", "GET", "maxmemory-policy"),
            required=False,
            without="the lease's start-up warning about an evicting policy is skipped",
        ),
    ]
    if redlock:
        needs.insert(4, Need("SET fence", ("SET", fence, "1")))
    return needs


def permissions_check(client: Any, target: str, *, prefix: str, redlock: bool = False) -> Check:
    """Ask ``ACL DRYRUN`` (Redis 7) whether this user may run every command the lease
    sends, on the lease's own key and channel names. Runs nothing. Skipped where this
    user may not run ``ACL DRYRUN`` itself: the lease cycle then tells."""
    user, error = _read(lambda: client.execute_command("ACL", "WHOAMI"))
    denied: list[tuple[Need, str]] = []
    if error is None:
        for need in lease_needs(prefix, redlock=redlock):
            answer, error = _read(partial(client.execute_command, "ACL", "DRYRUN", _text(user), *need.args))
            if error is not None:
                break
            if _text(answer) != "OK":
                denied.append((need, _text(answer)))
    if error is not None:
        return Check(
            target,
            "permissions",
            Status.SKIPPED,
            f"ACL DRYRUN not available to this user ({error}); the lease cycle exercises the same commands",
            guarantee=_ROW_REACH,
            measured="not asked",
        )
    name = _text(user)
    # Redis compares a PSUBSCRIBE pattern literally with the user's channel patterns, so
    # the lease's own patterns are granted as they are, beside the prefix glob.
    channels = " ".join(f"&{p}" for p in [f"{prefix}*", *RedisKeys(prefix, "doctor").channel_patterns()])
    missing = [need for need, _ in denied if need.required]
    if missing:
        first = next(answer for need, answer in denied if need.required)
        grants = " ".join(sorted({_acl_name(n) for n, _ in denied}))
        return Check(
            target,
            "permissions",
            Status.FAILURE,
            f"user '{name}' may not run {', '.join(n.label for n in missing)} ({first}): every start fails closed",
            fix=f"ACL SETUSER {name} {grants} ~{prefix}* {channels}",
            guarantee=_ROW_REACH,
            measured=f"{len(missing)} denied",
        )
    if denied:
        return Check(
            target,
            "permissions",
            Status.WARNING,
            "; ".join(f"user '{name}' may not run {n.label}: {n.without}" for n, _ in denied),
            fix=f"ACL SETUSER {name} " + " ".join(sorted({_acl_name(n) for n, _ in denied})) + f" {channels}",
            guarantee=_ROW_REACH,
            measured=f"{len(denied)} optional denied",
        )
    count = len(lease_needs(prefix, redlock=redlock))
    return Check(
        target,
        "permissions",
        Status.OK,
        f"user '{name}' may run all {count} commands the lease sends",
        guarantee=_ROW_REACH,
        measured=f"{count} allowed",
    )


def _acl_name(need: Need) -> str:
    command = need.args[0].lower()
    if command in ("script", "config"):
        return f"+{command}|{need.args[1].lower()}"
    return f"+{command}"


# -- the lease cycle on scratch keys ----------------------------------------------------


def scratch_id() -> str:
    return f"strict-singleton-doctor-{uuid.uuid4().hex}"


def quiet_policy_warning(lease: Any) -> None:
    """Settle the lease's own one-time ``maxmemory-policy`` warning: the doctor reports
    the policy as a check, and the log line would repeat it on stderr."""
    checks = getattr(lease, "_eviction", None)
    for check in checks if isinstance(checks, list) else [checks] if checks is not None else []:
        check.take()


def cycle_check(lease_client: Any, target: str, *, prefix: str) -> list[Check]:
    """One real :class:`RedisLease` cycle on scratch keys, then the scratch keys deleted."""
    from strict_singleton.lock_backends.redis import RedisLease

    scratch = prefix + SCRATCH_SUFFIX
    instance_id = scratch_id()
    lease = RedisLease(lease_client, prefix=scratch, name=target)
    quiet_policy_warning(lease)
    try:
        checks = [lease_cycle(lease, target=target, instance_id=instance_id, ttl=SCRATCH_TTL, uses=CYCLE_USES)]
    finally:
        lease.close()
    checks += cleanup([lease_client], target, RedisKeys(scratch, target).acquire_keys(instance_id))
    return checks


def cleanup(clients: list[Any], target: str, keys: list[str]) -> list[Check]:
    """Delete the scratch keys on every client; a warning naming them if any stay."""
    left: list[str] = []
    for client in clients:
        try:
            client.delete(*keys)
        except Exception as exc:
            left.append(f"{describe(exc)}")
    if not left:
        return []
    return [
        Check(
            target,
            "scratch keys",
            Status.WARNING,
            f"could not delete the scratch keys {', '.join(keys)} ({'; '.join(left)}); the fence key has no TTL",
            fix="DEL them by hand; they belong to no lease",
            measured="left behind",
        )
    ]


# -- Redis Cluster ----------------------------------------------------------------------


def cluster_primaries(client: Any) -> list[tuple[str, int]]:
    """(host, port) of every primary ``CLUSTER NODES`` lists as healthy."""
    text = _text(client.execute_command("CLUSTER", "NODES"))
    primaries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        flags = fields[2].split(",")
        if "master" in flags and not {"fail", "noaddr", "handshake"} & set(flags):
            address = fields[1].split("@")[0].split(",")[0]
            host, _, port = address.rpartition(":")
            primaries.append((host, int(port)))
    return sorted(primaries)


def node_client(client: Any, host: str, port: int) -> Any:
    """A client for another node with ``client``'s credentials, TLS and timeouts."""
    import redis

    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "host": host, "port": port, "db": 0}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def connect_cluster(url: str, timeout: float) -> Any:
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check_redis(url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None) -> list[Check]:
    """Every check of one ``redis://`` or ``rediss://`` lock URL."""
    prefix = prefix or DEFAULT_PREFIX
    client = connect(url, timeout)
    try:
        checks, reachable = reach(client, target)
        if not reachable:
            return checks
        cluster_info, _ = _read(lambda: client.info("cluster"))
        if not (cluster_info or {}).get("cluster_enabled"):
            node, _ = node_checks(client, target, clock_skew=clock_skew)
            checks += node
            checks.append(permissions_check(client, target, prefix=prefix))
            checks += cycle_check(client, target, prefix=prefix)
            return checks
        return checks + _check_cluster(url, client, target, timeout=timeout, clock_skew=clock_skew, prefix=prefix)
    finally:
        client.close()


def _check_cluster(
    url: str, client: Any, target: str, *, timeout: float, clock_skew: float, prefix: str
) -> list[Check]:
    primaries, error = _read(lambda: cluster_primaries(client))
    if error is not None or not primaries:
        return [_could_not_read(target, "cluster", "CLUSTER NODES", error or "no primaries", "row 20")]
    checks = [
        Check(
            target,
            "cluster",
            Status.OK,
            f"Redis Cluster with {len(primaries)} primaries, each checked below; a redis:// lock URL builds a "
            "single-node client: give RedisLease a redis.cluster.RedisCluster in code",
            guarantee="row 20",
            measured=f"{len(primaries)} primaries",
        )
    ]
    for host, port in primaries:
        node = node_client(client, host, port)
        node_target = f"{target} primary {host}:{port}"
        try:
            reached, ok = reach(node, node_target)
            checks += reached
            if ok:
                checks += node_checks(node, node_target, clock_skew=clock_skew)[0]
                checks.append(permissions_check(node, node_target, prefix=prefix))
        finally:
            node.close()
    cluster_client = connect_cluster(url, timeout)
    try:
        checks += cycle_check(cluster_client, target, prefix=prefix)
    finally:
        cluster_client.close()
    return checks


__all__ = ["check_redis"]
