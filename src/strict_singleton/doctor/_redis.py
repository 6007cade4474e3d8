"""Redis checks: what one server (or each Cluster primary) must be for a lease to hold.

Per server: reachable and its round trip (median of a few ``PTTL``\\s of a lock key:
a command the lease itself sends, so a least-privilege user that may not ``PING`` is
still judged by what it may do), version, ``maxmemory-policy``, persistence
(``appendonly``, ``appendfsync``, ``save``, ``no-appendfsync-on-rewrite``, and ``INFO
persistence``'s last write, rewrite and save), replication (``INFO replication``), and
its clock (``TIME``) against ours. Per lock URL: the commands and key/channel
permissions the lease uses (``ACL DRYRUN`` where this user may run it, see
``_redis_acl``), one real lease cycle on a scratch instance ID and the release wake-up
it sends (see ``_redis_cycle``).

Reads only, except the lease cycle, which touches nothing but its scratch ID's keys. A
server that refuses ``CONFIG`` or ``INFO`` (managed Redis often does) gives a warning
"could not read", never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strict_singleton.doctor._clock import clock_verdict
from strict_singleton.doctor._measure import format_ms, median_rtt, skew_of, wall
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis_acl import PROBE_ID, acl_line, client_name_of, permissions_check
from strict_singleton.doctor._redis_cycle import new_scratch, scratch_cycle
from strict_singleton.doctor._redis_read import describe, read, text
from strict_singleton.lock_backends._redis_common import DEFAULT_PREFIX, RedisKeys, evicting_policy

_ROW_EVICTION = "row 21; residual: store forgets a held lease"
_ROW_PERSISTENCE = "row 7"
_ROW_CLOCK = "row 15; clocks slewed; starters within clock_skew"
_ROW_REACH = "row 10"
ROW_ROUND_TRIP = "rows 3, 12 (confirm_after, send reserve)"
_ROW_VERSION = "row 10 (the lease's commands)"


def connect(url: str, timeout: float) -> Any:
    """A client for one ``redis://`` URL that fails fast: ``timeout`` for connecting and
    reading, no retries (a doctor waits for an answer, it does not ride out an outage)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _config(client: Any, name: str) -> tuple[str | None, str | None]:
    reply, error = read(lambda: client.config_get(name))
    if error is not None:
        return None, error
    for key, value in (reply or {}).items():
        if text(key) == name:
            return text(value), None
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


def db_of(client: Any) -> int:
    """The db a client selects (redis-py sends ``SELECT`` for any but 0)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def address_of(client: Any) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("host", "?")), int(kwargs.get("port", 0) or 0)


def reach(client: Any, target: str, *, prefix: str = DEFAULT_PREFIX) -> tuple[list[Check], bool]:
    """The round-trip check, and whether the server answered at all.

    Timed with ``PTTL`` of a lock key (what a waiter sends): an error reply (a refusal,
    ``NoPermissionError``; a Cluster node's ``MOVED``) is an answer too, so a user
    without ``PING`` or even without ``PTTL`` still counts as reachable; its permissions
    are the permissions check's business. A wrong password, a closed port or a TLS
    mismatch is unreachable (redis-py raises those as connection errors)."""
    from redis.exceptions import AuthenticationWrongNumberOfArgsError, ResponseError

    key = RedisKeys(prefix, target).lock(PROBE_ID)
    refused = connect_refusal(client, target, prefix=prefix)
    if refused is not None:
        return [refused], False

    def probe() -> None:
        try:
            client.pttl(key)
        except AuthenticationWrongNumberOfArgsError:
            raise
        except ResponseError:
            return

    try:
        rtt = median_rtt(probe)
    except Exception as exc:
        return [
            Check(
                target,
                "reachable",
                Status.FAILURE,
                f"no answer: {describe(exc)}; every start fails closed (LockUnavailableError) meanwhile",
                fix="check host, port, password, TLS (rediss://) and firewalls",
                guarantee=_ROW_REACH,
                measured="unreachable",
            )
        ], False
    return [
        Check(
            target,
            "round trip",
            Status.OK,
            "median of 5 PTTLs of a lock key (a command the lease sends)",
            guarantee=ROW_ROUND_TRIP,
            measured=format_ms(rtt),
        )
    ], True


def connect_commands(client: Any) -> list[str]:
    """The commands redis-py sends on every new connection of ``client`` whose refusal
    fails the connection (``AUTH`` and ``HELLO`` aside: every user may run them)."""
    sent = ["CLIENT SETNAME (the URL's client_name)"] if client_name_of(client) else []
    return sent + (["SELECT (the URL's db)"] if db_of(client) else [])


def connect_refusal(client: Any, target: str, *, prefix: str) -> Check | None:
    """A failure if the server refuses a command redis-py sends while connecting (e.g.
    ``CLIENT SETNAME`` for ``?client_name=`` to a user without ``+client|setname``): the
    refusal then fails every command, and each check would blame its own. None if the
    connection is made, or fails otherwise (the round trip reports that)."""
    from redis.exceptions import ResponseError

    pool = client.connection_pool
    try:
        connection = pool.get_connection()
    except ResponseError as exc:
        sent = connect_commands(client)
        return Check(
            target,
            "connect",
            Status.FAILURE,
            f"connecting sends {', '.join(sent) or 'commands'} before any lease command, and the server refused: "
            f"{describe(exc)}; every start fails closed (LockUnavailableError)",
            fix=f"{acl_line('USER', prefix, db=db_of(client), client_name=client_name_of(client))} (with "
            "+client|setname for client_name, +select for a db other than 0), or drop the option from the URL",
            guarantee=_ROW_REACH,
            measured="refused at connect",
        )
    except Exception:
        return None
    pool.release(connection)
    return None


def node_checks(client: Any, target: str, *, clock_skew: float) -> tuple[list[Check], NodeFacts]:
    """Version, eviction, persistence, replication and clock of one reachable server."""
    checks: list[Check] = []
    server, server_error = read(lambda: client.info("server"))
    replication, replication_error = read(lambda: client.info("replication"))
    cluster_info, _ = read(lambda: client.info("cluster"))
    if server_error is None:
        checks.append(
            Check(
                target,
                "version",
                Status.OK,
                f"redis_version {server.get('redis_version', '?')}",
                guarantee=_ROW_VERSION,
                measured=str(server.get("redis_version", "?")),
            )
        )
    else:
        checks.append(_could_not_read(target, "version", "INFO server", server_error, _ROW_VERSION))
    checks.append(eviction_check(target, *_config(client, "maxmemory-policy")))
    checks.append(persistence_check(target, client))
    checks.append(persistence_health_check(target, client))
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
    return None if value is None else text(value)


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


def persistence_verdict(
    appendonly: str, appendfsync: str, save: str, no_fsync_on_rewrite: str = "no"
) -> tuple[Status, str, str]:
    """(status, detail, fix) for a server's persistence settings."""
    if appendonly == "yes":
        if appendfsync in ("always", "everysec") and no_fsync_on_rewrite == "yes":
            return (
                Status.WARNING,
                f"AOF with appendfsync {appendfsync}, but no-appendfsync-on-rewrite yes: while an AOF rewrite or "
                "an RDB save runs, writes are not fsynced, so a host crash then can lose held leases",
                "CONFIG SET no-appendfsync-on-rewrite no (and in redis.conf)",
            )
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


_PERSISTENCE_SETTINGS = ("appendonly", "appendfsync", "save", "no-appendfsync-on-rewrite")
# INFO persistence fields that say whether the last write, rewrite and snapshot worked.
_PERSISTENCE_STATUSES = ("aof_last_write_status", "aof_last_bgrewrite_status", "rdb_last_bgsave_status")


def persistence_check(target: str, client: Any) -> Check:
    values: dict[str, str] = {}
    for name in _PERSISTENCE_SETTINGS:
        value, error = _config(client, name)
        if value is None:
            return _could_not_read(
                target,
                "persistence",
                "CONFIG GET",
                error or "?",
                _ROW_PERSISTENCE,
                "make sure AOF is on with appendfsync everysec or always, and no-appendfsync-on-rewrite no",
            )
        values[name] = value
    status, detail, fix = persistence_verdict(
        values["appendonly"], values["appendfsync"], values["save"], values["no-appendfsync-on-rewrite"]
    )
    measured = f"appendonly {values['appendonly']}, appendfsync {values['appendfsync']}, save '{values['save']}'"
    if values["no-appendfsync-on-rewrite"] == "yes":
        measured += ", no-appendfsync-on-rewrite yes"
    return Check(target, "persistence", status, detail, fix=fix, guarantee=_ROW_PERSISTENCE, measured=measured)


def persistence_health_check(target: str, client: Any) -> Check:
    """Whether the server's last AOF write, AOF rewrite and RDB save succeeded: a failing
    disk keeps the settings right and the leases unpersisted."""
    info, error = read(lambda: client.info("persistence"))
    if error is not None:
        return _could_not_read(target, "persistence health", "INFO persistence", error, _ROW_PERSISTENCE)
    failing = [f"{name} {text(info[name])}" for name in _PERSISTENCE_STATUSES if text(info.get(name, "ok")) != "ok"]
    if failing:
        return Check(
            target,
            "persistence health",
            Status.WARNING,
            f"{', '.join(failing)}: the server could not persist its last writes, so a restart may forget held "
            "leases (with AOF, Redis may also refuse writes until the disk recovers)",
            fix="check the Redis log and the disk (space, permissions) of its dir",
            guarantee=_ROW_PERSISTENCE,
            measured=", ".join(failing),
        )
    return Check(
        target,
        "persistence health",
        Status.OK,
        "last AOF write, AOF rewrite and RDB save succeeded (or never ran)",
        guarantee=_ROW_PERSISTENCE,
        measured="ok",
    )


def replication_check(target: str, info: dict[str, Any]) -> Check:
    role = text(info.get("role", "?"))
    if role == "slave":
        master = f"{text(info.get('master_host', '?'))}:{info.get('master_port', '?')}"
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
    """``TIME`` against our wall clock.

    What depends on which clock: the lease key and the start record expire by Redis's own
    clock, and a starter reads the start record's remaining life as its ``PTTL`` (also
    Redis's clock), so skew between a starter and Redis breaks neither. The request
    record's expiry is compared with the *reading starter's* wall clock
    (``expires_at + clock_skew < now``): that needs the starters within ``clock_skew`` of
    each other, and two hosts each within ``clock_skew`` of Redis may be twice that
    apart. So each host is held to ``clock_skew / 2`` of Redis, the common reference,
    minus the round trip's uncertainty; beyond it is a warning (an unsynchronised host,
    and a correction that, if stepped on the Redis host, expires held leases at once)."""
    sent = wall()
    reply, error = read(lambda: client.time())
    answered = wall()
    if error is not None:
        return _could_not_read(target, "clock", "TIME", error, _ROW_CLOCK)
    server = float(reply[0]) + float(reply[1]) / 1e6
    status, detail = clock_verdict(skew_of(server, server, sent, answered), clock_skew, fail_beyond=False)
    fix = "" if status is Status.OK else "run NTP in slew mode on every host (chronyd without makestep after boot)"
    measured = skew_of(server, server, sent, answered).describe()
    return Check(target, "clock", status, detail, fix=fix, guarantee=_ROW_CLOCK, measured=measured)


# -- the lease cycle on a scratch ID ---------------------------------------------------


def quiet_policy_warning(lease: Any) -> None:
    """Settle the lease's own one-time ``maxmemory-policy`` warning: the doctor reports
    the policy as a check, and the log line would repeat it on stderr."""
    checks = getattr(lease, "_eviction", None)
    for check in checks if isinstance(checks, list) else [checks] if checks is not None else []:
        check.take()


def cycle_check(lease_client: Any, target: str, *, prefix: str, timeout: float) -> list[Check]:
    """One real :class:`RedisLease` cycle on a scratch ID, with its wake-up; the scratch
    keys deleted on every way out."""
    from strict_singleton.lock_backends.redis import RedisLease

    scratch = new_scratch(prefix, target)
    lease = RedisLease(lease_client, prefix=prefix, name=target)
    quiet_policy_warning(lease)
    try:
        return scratch_cycle(lease, [lease_client], lease_client, scratch, target=target, timeout=timeout)
    finally:
        lease.close()


# -- Redis Cluster ----------------------------------------------------------------------


def cluster_primaries(client: Any) -> list[tuple[str, int]]:
    """(host, port) of every primary ``CLUSTER NODES`` lists as healthy."""
    nodes = text(client.execute_command("CLUSTER", "NODES"))
    primaries = []
    for line in nodes.splitlines():
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


def check_redis(
    url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None, checks: list[Check]
) -> list[Check]:
    """Every check of one ``redis://`` or ``rediss://`` lock URL, each appended to
    ``checks`` as it is done (``checks`` is returned)."""
    prefix = prefix or DEFAULT_PREFIX
    client = connect(url, timeout)
    try:
        reached, reachable = reach(client, target, prefix=prefix)
        checks += reached
        if not reachable:
            return checks
        cluster_info, _ = read(lambda: client.info("cluster"))
        if not (cluster_info or {}).get("cluster_enabled"):
            node, _ = node_checks(client, target, clock_skew=clock_skew)
            checks += node
            checks.append(permissions_check(client, target, prefix=prefix, db=db_of(client)))
            checks += cycle_check(client, target, prefix=prefix, timeout=timeout)
            return checks
        _check_cluster(url, client, target, timeout=timeout, clock_skew=clock_skew, prefix=prefix, checks=checks)
        return checks
    finally:
        client.close()


def _check_cluster(
    url: str, client: Any, target: str, *, timeout: float, clock_skew: float, prefix: str, checks: list[Check]
) -> None:
    primaries, error = read(lambda: cluster_primaries(client))
    if error is not None or not primaries:
        checks.append(_could_not_read(target, "cluster", "CLUSTER NODES", error or "no primaries", "row 20"))
        return
    checks.append(
        Check(
            target,
            "cluster",
            Status.OK,
            f"Redis Cluster with {len(primaries)} primaries, each checked below; a redis:// lock URL builds a "
            "single-node client: give RedisLease a redis.cluster.RedisCluster in code",
            guarantee="row 20",
            measured=f"{len(primaries)} primaries",
        )
    )
    for host, port in primaries:
        node = node_client(client, host, port)
        node_target = f"{target} primary {host}:{port}"
        try:
            reached, ok = reach(node, node_target, prefix=prefix)
            checks += reached
            if ok:
                checks += node_checks(node, node_target, clock_skew=clock_skew)[0]
                checks.append(permissions_check(node, node_target, prefix=prefix))
        finally:
            node.close()
    cluster_client = connect_cluster(url, timeout)
    try:
        checks += cycle_check(cluster_client, target, prefix=prefix, timeout=timeout)
    finally:
        cluster_client.close()


__all__ = ["check_redis"]
