"""`strict-singleton doctor` against real stores configured well and badly.

Real redis-server processes (private ones, started with the settings under test), Azurite,
real lock directories, the in-memory Durable backend over gRPC. Held leases of real
backends must survive a doctor run, and no scratch key, blob or lock file may stay.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from strict_singleton.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, EXIT_WARNINGS, main
from strict_singleton.doctor import (
    Check,
    DoctorReport,
    Status,
    acheck_deployment,
    check_deployment,
    format_report,
    report_json,
)
from strict_singleton.doctor._mounts import filesystem_problem, mount_of, parse_mountinfo, unshared_mount
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.testing import DurableTestBackend, RedisServer, free_port
from strict_singleton.testing.azurite import Azurite
from suite_helpers import ConfiguredRedis, token


@pytest.fixture
def start(servers: list[RedisServer], tmp_path: Path) -> Any:
    def start(*settings: str, password: str | None = None) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = ConfiguredRedis("--dir", str(directory), *settings, password=password).start()
        servers.append(server)
        return server

    return start


WELL_CONFIGURED = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")


def by_name(report: DoctorReport, name: str) -> list[Check]:
    return [c for c in report.checks if c.name == name]


def one(report: DoctorReport, name: str) -> Check:
    found = by_name(report, name)
    assert len(found) == 1, report.checks
    return found[0]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["doctor", *argv], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def keys_of(server: RedisServer) -> set[str]:
    client = redis.Redis(port=server.port, password=server.password)
    try:
        return {k.decode() for k in client.keys("*")}
    finally:
        client.close()


# -- Redis ----------------------------------------------------------------------------------


@pytest.mark.redis
def test_well_configured_redis_is_all_ok_and_exits_0(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    report = check_deployment([server.url])
    assert report.status is Status.OK, format_report(report)
    assert one(report, "maxmemory-policy").measured == "noeviction"
    assert "everysec" in one(report, "persistence").measured
    assert one(report, "permissions").status is Status.OK  # the default user may run ACL DRYRUN
    assert one(report, "lease cycle").status is Status.OK
    assert one(report, "wake-ups").status is Status.OK
    assert all(c.guarantee for c in report.checks), report.checks  # round trip and version too
    status, out, _ = run_cli(server.url)
    assert status == EXIT_OK, out
    assert "doctor: OK" in out


@pytest.mark.redis
def test_an_evicting_policy_is_a_failure_and_exits_1(start: Any) -> None:
    server = start("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru")
    report = check_deployment([server.url])
    policy = one(report, "maxmemory-policy")
    assert policy.status is Status.FAILURE
    assert policy.measured == "allkeys-lru" and "noeviction" in policy.fix and "row 21" in policy.guarantee
    status, out, _ = run_cli(server.url)
    assert status == EXIT_VIOLATION
    assert "FAILURE  maxmemory-policy" in out and "fix: CONFIG SET maxmemory-policy noeviction" in out


@pytest.mark.redis
def test_no_persistence_is_a_warning_and_exits_5(start: Any) -> None:
    server = start()  # the fixture default: --save "" --appendonly no
    report = check_deployment([server.url])
    persistence = one(report, "persistence")
    assert persistence.status is Status.WARNING
    assert "restart forgets every held lease" in persistence.detail and "appendonly yes" in persistence.fix
    assert persistence.guarantee == "row 7"
    assert report.status is Status.WARNING, format_report(report)
    assert run_cli(server.url)[0] == EXIT_WARNINGS


@pytest.mark.redis
def test_rdb_only_is_a_warning_naming_snapshots(start: Any) -> None:
    server = start("--save", "900 1")
    persistence = one(check_deployment([server.url]), "persistence")
    assert persistence.status is Status.WARNING and "RDB snapshots only" in persistence.detail


@pytest.mark.redis
def test_a_master_with_a_replica_warns_about_failover(start: Any) -> None:
    master = start(*WELL_CONFIGURED)
    start("--replicaof", "127.0.0.1", str(master.port))
    client = redis.Redis(port=master.port)
    client.set("written-before", "1")
    assert client.wait(1, 20_000) == 1  # returns once the replica has acknowledged that write
    client.delete("written-before")
    client.close()
    replication = one(check_deployment([master.url]), "replication")
    assert replication.status is Status.WARNING and "failover" in replication.detail
    assert replication.measured == "role master, 1 replica(s)"


@pytest.mark.redis
def test_a_lock_url_pointing_at_a_replica_fails(start: Any) -> None:
    master = start(*WELL_CONFIGURED)
    replica = start(*WELL_CONFIGURED, "--replicaof", "127.0.0.1", str(master.port))
    report = check_deployment([replica.url])
    replication = one(report, "replication")
    assert replication.status is Status.FAILURE and f"127.0.0.1:{master.port}" in replication.detail
    # The lease itself cannot write there: the cycle says so too.
    assert one(report, "lease cycle").status is Status.FAILURE


@pytest.mark.redis
def test_a_password_never_appears_in_text_or_json(start: Any) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = start("--maxmemory-policy", "volatile-lru", password=password)
    good = f"redis://:{password}@127.0.0.1:{server.port}/0"
    wrong = f"redis://default:{password}x@127.0.0.1:{server.port}/0"
    query = f"redis://127.0.0.1:{server.port}/0?password={password}"
    redlock = "redlock://" + ",".join(f":{password}@127.0.0.1:{p}" for p in (server.port, free_port(), free_port()))
    for argv in ([good, wrong, query, redlock], ["--json", good, wrong, query, redlock]):
        status, out, err = run_cli(*argv)
        assert status == EXIT_VIOLATION
        assert password not in out + err
        assert "***" in out
    report = check_deployment([good, wrong])
    assert password not in report_json(report) + format_report(report)
    assert one(report, "maxmemory-policy").status is Status.FAILURE  # the good URL was checked
    assert any(c.name == "reachable" and c.status is Status.FAILURE for c in report.checks)  # the wrong one failed


@pytest.mark.redis
def test_a_held_redis_lease_survives_and_no_scratch_key_stays(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    client = redis.Redis(port=server.port)
    lease = RedisLease(client)
    try:
        grant = lease.acquire("nightly", token("holder"), 30.0)
        assert grant is not None
        before = keys_of(server)
        ttl_before = client.pttl("strict-singleton:{nightly}:lock")
        assert one(check_deployment([server.url]), "lease cycle").status is Status.OK
        assert keys_of(server) == before  # no scratch key left, nothing of the lease's removed
        assert client.get("strict-singleton:{nightly}:lock") == token("holder").encode()
        assert 0 < client.pttl("strict-singleton:{nightly}:lock") <= ttl_before
        assert lease.acquire("nightly", token("intruder"), 30.0) is None  # still held
        assert lease.extend("nightly", token("holder"), 30.0)
        assert lease.release("nightly", token("holder"))
    finally:
        lease.close()
        client.close()


def _limited_user(server: RedisServer, *, may_dryrun: bool) -> str:
    """A user with every command the lease needs except PEXPIRE (its extend); the URL for it."""
    admin = redis.Redis(port=server.port)
    commands = ["+evalsha", "+script|load", "+get", "+set", "+incr", "+pttl", "+del", "+publish", "+subscribe"]
    commands += ["+unsubscribe", "+ping", "+time"]
    if may_dryrun:
        commands += ["+acl|whoami", "+acl|dryrun"]
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+limited-secret"],
        keys=["strict-singleton:*"],
        channels=["strict-singleton:*"],
        commands=commands,
    )
    admin.close()
    return f"redis://limited:limited-secret@127.0.0.1:{server.port}/0"


@pytest.mark.redis
def test_a_user_without_pexpire_fails_by_acl_dryrun(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    report = check_deployment([_limited_user(server, may_dryrun=True)])
    permissions = one(report, "permissions")
    assert permissions.status is Status.FAILURE, format_report(report)
    assert "PEXPIRE lock" in permissions.detail and "+pexpire" in permissions.fix
    assert "limited-secret" not in report_json(report)
    # CONFIG and INFO refused: "could not read", not a crash.
    policy = one(report, "maxmemory-policy")
    assert policy.status is Status.WARNING and policy.measured == "unknown"
    assert one(report, "lease cycle").status is Status.FAILURE
    assert not {k for k in keys_of(server) if "doctor" in k}


@pytest.mark.redis
@pytest.mark.parametrize(
    ("channels", "pubsub", "missing"),
    [
        (["strict-singleton:*"], ["+unsubscribe"], "SUBSCRIBE release"),  # no +subscribe
        (["strict-singleton:*"], ["+subscribe"], "UNSUBSCRIBE release"),
    ],
)
def test_a_user_without_subscribe_only_warns(start: Any, channels: list[str], pubsub: list[str], missing: str) -> None:
    server = start(*WELL_CONFIGURED)
    admin = redis.Redis(port=server.port)
    commands = ["+evalsha", "+script|load", "+get", "+set", "+incr", "+pttl", "+pexpire", "+del"]
    admin.acl_setuser(
        "waiterless",
        enabled=True,
        passwords=["+waiterless-secret"],
        keys=["strict-singleton:*"],
        channels=channels,
        commands=[*commands, *pubsub, "+publish", "+ping", "+time", "+acl|whoami", "+acl|dryrun"],
    )
    admin.close()
    report = check_deployment([f"redis://waiterless:waiterless-secret@127.0.0.1:{server.port}/0"])
    permissions = one(report, "permissions")
    assert permissions.status is Status.WARNING, format_report(report)
    assert missing in permissions.detail and "poll" in permissions.detail
    assert "&strict-singleton:{*}:released" in permissions.fix


@pytest.mark.redis
def test_a_user_without_pexpire_fails_the_lease_cycle_without_dryrun(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    report = check_deployment([_limited_user(server, may_dryrun=False)])
    assert one(report, "permissions").status is Status.SKIPPED
    cycle = one(report, "lease cycle")
    assert cycle.status is Status.FAILURE and cycle.measured == "failed at renew" and "PEXPIRE" in cycle.detail
    assert not {k for k in keys_of(server) if "doctor" in k}
    assert run_cli(_limited_user(server, may_dryrun=False))[0] == EXIT_VIOLATION


def test_an_unreachable_store_fails_and_exits_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    report = check_deployment([url], timeout=1.0)
    reachable = one(report, "reachable")
    assert reachable.status is Status.FAILURE and reachable.measured == "unreachable"
    assert [c.name for c in report.checks] == ["reachable"]
    assert run_cli("--timeout", "1", url)[0] == EXIT_VIOLATION


# -- Redlock -------------------------------------------------------------------------------


@pytest.mark.redis
def test_independent_redlock_masters_pass(start: Any) -> None:
    nodes = [start(*WELL_CONFIGURED) for _ in range(3)]
    url = "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/0"
    report = check_deployment([url])
    assert one(report, "independent nodes").status is Status.OK
    quorum = one(report, "quorum")
    assert quorum.status is Status.OK and quorum.measured == "3 nodes, quorum 2, 0 down"
    assert one(report, "lease cycle").status is Status.OK
    assert len(by_name(report, "maxmemory-policy")) == 3  # every node checked as a server
    assert report.status is Status.OK, format_report(report)
    assert not any("doctor" in k for n in nodes for k in keys_of(n))


@pytest.mark.redis
def test_a_replica_posing_as_a_redlock_node_fails(start: Any) -> None:
    first, second = start(*WELL_CONFIGURED), start(*WELL_CONFIGURED)
    replica = start(*WELL_CONFIGURED, "--replicaof", "127.0.0.1", str(first.port))
    url = f"redlock://127.0.0.1:{first.port},127.0.0.1:{second.port},127.0.0.1:{replica.port}/0"
    report = check_deployment([url])
    independence = one(report, "independent nodes")
    assert independence.status is Status.FAILURE
    assert "node 3 is a replica of" in independence.detail and "(node 1)" in independence.detail
    status, out, _ = run_cli(url)
    assert status == EXIT_VIOLATION and "independent nodes" in out


@pytest.mark.redis
def test_redlock_with_a_node_down_warns_about_the_quorum(start: Any) -> None:
    nodes = [start(*WELL_CONFIGURED) for _ in range(3)]
    url = "redlock://" + ",".join(f"127.0.0.1:{p}" for p in (nodes[0].port, nodes[1].port, free_port())) + "/0"
    report = check_deployment([url], timeout=1.0)
    quorum = one(report, "quorum")
    assert quorum.status is Status.WARNING and "only 0 more may fail" in quorum.detail
    assert one(report, "lease cycle").status is Status.OK  # a majority still serves leases


# -- Redis Cluster --------------------------------------------------------------------------


@pytest.mark.redis
def test_a_cluster_checks_every_primary() -> None:
    from strict_singleton.testing.redis_cluster import RedisCluster3

    with RedisCluster3() as cluster:
        report = check_deployment([f"redis://127.0.0.1:{cluster.ports[0]}/0"])
        assert one(report, "cluster").measured == "3 primaries"
        assert len(by_name(report, "maxmemory-policy")) == 3
        assert one(report, "lease cycle").status is Status.OK, format_report(report)
        for port in cluster.ports:
            client = redis.Redis(port=port)
            assert not [k for k in client.keys("*") if b"doctor" in k]
            client.close()


# -- Azure Blob -----------------------------------------------------------------------------


def test_azurite_lease_cycle_is_ok_and_leaves_no_blob(strict_singleton_azurite: Azurite) -> None:
    url = f"{strict_singleton_azurite.url}/doctor-test"
    report = check_deployment([url])
    assert one(report, "container").measured == "created"
    assert one(report, "lease cycle").status is Status.OK
    assert one(report, "clock").status is Status.OK
    assert report.status is Status.OK, format_report(report)
    with strict_singleton_azurite.container_client("doctor-test") as container:
        assert list(container.list_blobs()) == []
    assert one(check_deployment([url]), "container").measured == "exists"
    assert run_cli(url)[0] == EXIT_OK


def test_a_held_blob_lease_survives(strict_singleton_azurite: Azurite) -> None:
    from strict_singleton.lock_backends.blob import BlobLease

    lease = BlobLease.from_connection_string(
        strict_singleton_azurite.connection_string, container="held", retry_total=0
    )
    try:
        assert lease.acquire("nightly", token("holder"), 15.0) is not None
        assert one(check_deployment([f"{strict_singleton_azurite.url}/held"]), "lease cycle").status is Status.OK
        assert lease.acquire("nightly", token("intruder"), 15.0) is None
        assert lease.extend("nightly", token("holder"), 15.0)
        with strict_singleton_azurite.container_client("held") as container:
            assert [b.name for b in container.list_blobs()] == [lease.blob_name("nightly")]
        assert lease.release("nightly", token("holder"))
    finally:
        lease.close()


def test_azblob_without_its_connection_string_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    check = one(check_deployment(["azblob://locks"]), "configuration")
    assert check.status is Status.FAILURE and "AZURE_STORAGE_CONNECTION_STRING" in check.detail


def test_a_stopped_azurite_is_a_failure() -> None:
    report = check_deployment([f"azurite://127.0.0.1:{free_port()}/locks"], timeout=1.0)
    assert one(report, "reachable").status is Status.FAILURE
    assert "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" not in report_json(report)


# -- file -----------------------------------------------------------------------------------


def test_a_well_configured_directory_is_ok(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    report = check_deployment([f"file:{directory}"])
    assert [c.name for c in report.checks] == ["directory", "local filesystem", "shared directory", "lease cycle"]
    assert report.status is Status.OK, format_report(report)
    assert list(directory.iterdir()) == []  # the scratch lock file is gone
    assert run_cli(f"file:{directory}")[0] == EXIT_OK


def test_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    directory = tmp_path / "not-yet"
    check = one(check_deployment([f"file:{directory}"]), "directory")
    # No lease cycle could run, and whoever runs first decides the owner: a warning.
    assert check.status is Status.WARNING and check.measured == "missing" and "creates it" in check.detail
    assert "mode 0700" in check.detail and "install -d" in check.fix
    assert not directory.exists()


def test_a_world_writable_directory_without_sticky_bit_fails(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    check = one(check_deployment([f"file:{directory}"]), "directory")
    assert check.status is Status.FAILURE and "sticky" in check.detail and check.guarantee == "row 19"
    assert check.measured.endswith("mode 0777")
    directory.chmod(0o1777)  # with the sticky bit, others cannot delete a held lock file
    assert one(check_deployment([f"file:{directory}"]), "directory").status is Status.OK


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_a_directory_owned_by_another_user_fails(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 4242, 4242)
    report = check_deployment([f"file:{directory}"])
    check = one(report, "directory")
    assert check.status is Status.FAILURE and "uid 4242" in check.detail
    assert not by_name(report, "lease cycle")  # refused before any lock file
    status, out, _ = run_cli(f"file:{directory}")
    assert status == EXIT_VIOLATION and "uid 4242" in out


def test_a_held_file_lease_survives_and_no_scratch_file_stays(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    lease = FileLease(directory)
    try:
        assert lease.acquire("nightly", token("holder"), 30.0) is not None
        files = sorted(directory.iterdir())
        assert one(check_deployment([f"file:{directory}"]), "lease cycle").status is Status.OK
        assert sorted(directory.iterdir()) == files
        other = FileLease(directory)
        assert other.acquire("nightly", token("intruder"), 30.0) is None
        other.close()
        assert lease.extend("nightly", token("holder"), 30.0)
    finally:
        lease.close()


MOUNTINFO_HOST = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /tmp rw - tmpfs tmpfs rw
41 27 254:0 /var/tmp /var/tmp rw - ext4 /dev/vda rw
50 27 0:50 / /mnt/shared rw - nfs4 server:/export rw
51 27 0:51 / /mnt/my\\040box rw - fuse.sshfs me@box:/ rw
"""

MOUNTINFO_PRIVATE = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
80 27 254:0 /tmp/systemd-private-abc-app.service-XyZ/tmp /var/tmp rw - ext4 /dev/vda rw
"""


def test_mountinfo_parsing_finds_the_holding_mount() -> None:
    mounts = parse_mountinfo(MOUNTINFO_HOST)
    assert mount_of(mounts, "/var/tmp/strict-singleton") == mounts[2]
    assert mount_of(mounts, "/mnt/my box/locks") == mounts[4]
    assert mount_of(mounts, "/srv/locks") == mounts[0]
    nfs = filesystem_problem(mounts[3])
    assert nfs is not None and nfs[0] == "failure" and "nfs4" in nfs[1]
    sshfs = filesystem_problem(mounts[4])
    assert sshfs is not None and sshfs[0] == "failure"
    assert filesystem_problem(mounts[0]) is None and filesystem_problem(mounts[1]) is None


def test_a_private_var_tmp_is_detected() -> None:
    host = parse_mountinfo(MOUNTINFO_HOST)
    private = parse_mountinfo(MOUNTINFO_PRIVATE)
    why = unshared_mount(private, host, "/var/tmp/strict-singleton")
    assert why is not None and "PrivateTmp" in why
    # Without PID 1's table, the systemd-private root still shows it.
    assert unshared_mount(private, None, "/var/tmp/strict-singleton") is not None
    assert unshared_mount(host, host, "/var/tmp/strict-singleton") is None
    assert unshared_mount(host, host, "/srv/locks") is None


# -- the Durable client ---------------------------------------------------------------------


def test_the_durable_client_answers_a_scratch_status_read(strict_singleton_durable_backend: DurableTestBackend) -> None:
    address = f"grpc://{strict_singleton_durable_backend.address}"
    report = check_deployment([], client=address)
    read = one(report, "status read")
    assert read.status is Status.OK and read.measured.endswith(" ms")
    assert strict_singleton_durable_backend.ledger.snapshot().created.total() == 0  # nothing scheduled
    assert run_cli("--client", address)[0] == EXIT_OK


def test_an_unreachable_durable_backend_fails() -> None:
    report = check_deployment([], client=f"grpc://127.0.0.1:{free_port()}", timeout=1.0)
    read = one(report, "status read")
    assert read.status is Status.FAILURE and "UNAVAILABLE" in read.detail


def test_the_async_twin_gives_the_same_report(
    tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    from durabletask.client import AsyncTaskHubGrpcClient

    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)

    async def run() -> DoctorReport:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        try:
            return await acheck_deployment(f"file:{directory}", client=client)
        finally:
            await client.close()

    report = asyncio.run(run())
    sync = check_deployment(f"file:{directory}", client=strict_singleton_durable_backend.address)
    assert [(c.name, c.status) for c in report.checks] == [(c.name, c.status) for c in sync.checks]
    assert report.status is Status.OK, format_report(report)


# -- output and usage -----------------------------------------------------------------------


def test_json_shape(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    status, out, _ = run_cli("--json", f"file:{directory}")
    assert status == EXIT_VIOLATION
    document = json.loads(out)
    assert set(document) == {"status", "exit", "counts", "checks"}
    assert document["status"] == "failure"
    assert set(document["counts"]) == {"ok", "skipped", "warning", "failure"}
    assert document["counts"]["failure"] == 1
    first = document["checks"][0]
    assert set(first) == {"target", "check", "status", "measured", "detail", "fix", "guarantee"}
    assert first["check"] == "directory" and first["status"] == "failure" and first["guarantee"] == "row 19"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777  # the doctor changes nothing


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli()[0] == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "ftp://user:hunter22@host/x"])
    assert exc.value.code == EXIT_USAGE
    assert "hunter22" not in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError):
        check_deployment(["memcached://127.0.0.1:1"])
    with pytest.raises(InvalidArgumentError):
        check_deployment(["file"], timeout=0)


def test_help_text_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    text = capsys.readouterr().out
    for code in (EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_WARNINGS):
        assert f"\n  {code}  " in text


# -- secrets in every URL given -----------------------------------------------------------


def test_client_address_credentials_never_appear(capsys: pytest.CaptureFixture[str]) -> None:
    # gRPC addresses carry no credentials: one that does is refused before any channel.
    address = f"grpc://user:topsecret-client@127.0.0.1:{free_port()}"
    with pytest.raises(InvalidArgumentError) as exc:
        check_deployment([], client=address, timeout=0.5)
    assert "topsecret-client" not in str(exc.value)
    for argv in (["--client", address, "--timeout", "0.5"], ["--json", "--client", address, "--timeout", "0.5"]):
        status, out, err = _run_argparse(*argv)
        assert status == EXIT_USAGE
        assert "topsecret-client" not in out + err + capsys.readouterr().err


# -- clocks: the assumption is pairwise ---------------------------------------------------


def _pinned_wall(monkeypatch: pytest.MonkeyPatch, module: str, ahead: float) -> None:
    import time

    monkeypatch.setattr(f"strict_singleton.doctor.{module}.wall", lambda: time.time() + ahead)


def test_a_blob_host_more_than_half_clock_skew_off_warns(
    strict_singleton_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{strict_singleton_azurite.url}/doctor-clock"
    # Two hosts 3.5 s from Azure on opposite sides are 7 s apart: beyond clock_skew 5.
    _pinned_wall(monkeypatch, "_blob", -3.5)
    clock = one(check_deployment([url]), "clock")
    assert clock.status is Status.WARNING and "clock_skew / 2" in clock.detail
    _pinned_wall(monkeypatch, "_blob", -8.0)
    assert one(check_deployment([url]), "clock").status is Status.FAILURE
    # clock_skew 5 minus the Date header's 1 s: a host 1 s ahead or behind is fine.
    _pinned_wall(monkeypatch, "_blob", 0.0)
    assert one(check_deployment([url], clock_skew=10.0), "clock").status is Status.OK


@pytest.mark.redis
def test_a_redis_host_more_than_half_clock_skew_off_warns(start: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(*WELL_CONFIGURED)
    _pinned_wall(monkeypatch, "_redis", 3.5)
    clock = one(check_deployment([server.url]), "clock")
    assert clock.status is Status.WARNING and "clock_skew / 2" in clock.detail


# -- file: paths, ancestors, filesystems -------------------------------------------------


def test_a_relative_directory_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "locks").mkdir(mode=0o700)
    check = one(check_deployment(["file:locks"]), "directory")
    assert check.status is Status.FAILURE and "absolute path" in check.fix
    assert run_cli("file:locks")[0] == EXIT_VIOLATION


def test_a_world_writable_ancestor_fails(tmp_path: Path) -> None:
    open_parent = tmp_path / "ww"
    open_parent.mkdir()
    open_parent.chmod(0o777)  # no sticky bit: anyone may rename what is inside
    (open_parent / "locks").mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(open_parent)
    for url in (f"file:{open_parent}/locks", f"file:{link}/locks"):
        check = one(check_deployment([url]), "directory")
        assert check.status is Status.FAILURE, check
        assert str(open_parent) in check.detail and "rename" in check.detail
    open_parent.chmod(0o1777)
    assert one(check_deployment([f"file:{link}/locks"]), "directory").status is Status.OK


def test_a_missing_directory_under_a_world_writable_ancestor_fails(tmp_path: Path) -> None:
    """Not created yet under a directory anyone may write without the sticky bit: another user could
    create it first, as its own, or rename it away later."""
    open_parent = tmp_path / "ww"
    open_parent.mkdir()
    open_parent.chmod(0o777)
    check = one(check_deployment([f"file:{open_parent}/locks"]), "directory")
    assert check.status is Status.FAILURE and check.measured == "missing", check
    assert str(open_parent) in check.detail
    assert not (open_parent / "locks").exists()  # the doctor never creates it
    open_parent.chmod(0o1777)
    assert one(check_deployment([f"file:{open_parent}/locks"]), "directory").status is Status.WARNING


def test_fuse_filesystems_by_driver() -> None:
    table = """\
27 1 0:30 / / rw - fuse.fuse-overlayfs fuse-overlayfs rw
60 27 0:60 / /mnt/s3 rw - fuse.s3fs s3fs rw
61 27 0:61 / /mnt/gcs rw - fuse.gcsfuse bucket rw
62 27 0:62 / /mnt/sshfs rw - fuse.sshfs me@box:/ rw
63 27 0:63 / /mnt/odd rw - fuse.somethingnew dev rw
"""
    mounts = parse_mountinfo(table)
    assert filesystem_problem(mounts[0]) is None  # rootless Podman's root: a local kernel lock
    for mount in mounts[1:4]:
        problem = filesystem_problem(mount)
        assert problem is not None and problem[0] == "failure", mount
    unknown = filesystem_problem(mounts[4])
    assert unknown is not None and unknown[0] == "warning"


# -- Redis persistence ----------------------------------------------------------------------


@pytest.mark.redis
def test_no_appendfsync_on_rewrite_warns(start: Any) -> None:
    server = start(*WELL_CONFIGURED, "--no-appendfsync-on-rewrite", "yes")
    persistence = one(check_deployment([server.url]), "persistence")
    assert persistence.status is Status.WARNING and "no-appendfsync-on-rewrite" in persistence.fix


def test_failed_persistence_statuses_warn() -> None:
    from strict_singleton.doctor._redis import persistence_health_check

    class Info:
        def __init__(self, **fields: str) -> None:
            self.fields = fields

        def info(self, section: str) -> dict[str, str]:
            return self.fields

    ok = persistence_health_check("t", Info(aof_last_write_status="ok", rdb_last_bgsave_status="ok"))
    assert ok.status is Status.OK
    bad = persistence_health_check("t", Info(aof_last_write_status="err", aof_last_bgrewrite_status="ok"))
    assert bad.status is Status.WARNING and "aof_last_write_status err" in bad.measured


# -- Redis ACL: exactly what the lease needs ----------------------------------------------


def _user_with(server: RedisServer, name: str, rules: str) -> str:
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", name, "on", f">{name}-pw", "resetchannels", *rules.split())
    admin.close()
    return f"redis://{name}:{name}-pw@127.0.0.1:{server.port}/0"


@pytest.mark.redis
def test_the_printed_acl_line_is_exactly_enough(start: Any) -> None:
    from strict_singleton.doctor._redis_acl import acl_grants
    from strict_singleton.lock_backends.base import StartRecord

    server = start(*WELL_CONFIGURED)
    url = _user_with(server, "exact", acl_grants("strict-singleton:"))
    report = check_deployment([url])
    assert report.status is not Status.FAILURE, format_report(report)
    assert one(report, "round trip").status is Status.OK  # no +ping, yet reachable
    assert one(report, "lease cycle").status is Status.OK
    assert one(report, "wake-ups").status is Status.OK
    client = redis.Redis.from_url(url)
    lease = RedisLease(client)
    try:
        grant = lease.acquire("nightly", token("t"), 5.0)
        assert grant is not None and lease.extend("nightly", token("t"), 5.0)
        record = StartRecord(fencing_token=grant.fencing_token, sent_at_us=1, previous_created_us=None, expires_at_us=2)
        assert lease.release_with_record("nightly", token("t"), record, 5.0)
        assert lease.acquire("nightly", token("holder"), 5.0) is not None
        lease.wait_for_release("nightly", 0.1)  # PTTL, SUBSCRIBE and UNSUBSCRIBE allowed: no error
        assert lease._live  # the release listener runs (a refused command would have stopped it)
    finally:
        lease.close()
        client.close()
    # Each grant is needed: without +pexpire the cycle fails at renew.
    narrower = _user_with(server, "narrower", acl_grants("strict-singleton:").replace("+pexpire ", ""))
    assert one(check_deployment([narrower]), "lease cycle").measured == "failed at renew"


@pytest.mark.redis
def test_grants_on_exactly_the_real_key_names_pass_the_cycle(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    rules = (
        "+evalsha +script|load +get +set +incr +pttl +pexpire +del +publish +subscribe +unsubscribe "
        "~strict-singleton:{* ~strict-singleton:#{* "
        "&strict-singleton:{*}:released &strict-singleton:#{*}:released:*"
    )
    report = check_deployment([_user_with(server, "tight", rules)])
    assert one(report, "lease cycle").status is Status.OK, format_report(report)
    assert not by_name(report, "scratch keys")  # nothing left, nothing to report
    assert not {k for k in keys_of(server) if "doctor" in k}


@pytest.mark.redis
def test_a_read_only_user_reports_no_leftovers(start: Any) -> None:
    server = start(*WELL_CONFIGURED)
    report = check_deployment([_user_with(server, "reader", "+get +pttl ~*")])
    assert one(report, "lease cycle").status is Status.FAILURE
    assert not by_name(report, "scratch keys")


# -- Redis scratch keys: a TTL from the first write, deleted on every way out -------------


class Interrupted(BaseException):
    """Stands in for Ctrl-C (KeyboardInterrupt) at one step of the cycle."""


@pytest.mark.redis
@pytest.mark.parametrize("step", ["acquire", "extend", "record_request", "release_with_record"])
def test_an_interrupt_at_any_step_leaves_no_scratch_key(start: Any, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    server = start(*WELL_CONFIGURED)
    original = getattr(RedisLease, step)
    seen: dict[str, int] = {}

    def interrupted(self: RedisLease, instance_id: str, *args: Any) -> Any:
        original(self, instance_id, *args)
        admin = redis.Redis(port=server.port)
        # Every key written so far already expires on its own.
        seen.update({k.decode(): admin.pttl(k) for k in admin.keys("*doctor*")})
        admin.close()
        raise Interrupted

    monkeypatch.setattr(RedisLease, step, interrupted)
    with pytest.raises(Interrupted):
        check_deployment([server.url])
    assert seen and all(ttl > 0 for ttl in seen.values()), seen
    assert not {k for k in keys_of(server) if "doctor" in k}


# -- configuration errors are usage errors, before any store ------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["redlock://127.0.0.1:1/0"],
        ["redlock://127.0.0.1:1,127.0.0.1:2/0"],
        ["--prefix", "a{b", "redis://127.0.0.1:1/0"],
        ["--prefix", "", "redis://127.0.0.1:1/0"],
        ["redis://127.0.0.1:1/0?socket_timeout=abc"],
    ],
)
def test_configuration_errors_exit_2_before_any_store(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        try:
            status = main(["doctor", *args], stdout=out, stderr=err)
        except SystemExit as exc:  # argparse's own usage errors
            status = int(exc.code or 0)
        return status, out.getvalue(), err.getvalue()

    status, out, err = run(*argv)
    assert status == EXIT_USAGE, out + err
    assert "error" in err + capsys.readouterr().err  # argparse writes to sys.stderr
    status, out, err = run("--json", *argv)
    assert status == EXIT_USAGE
    document = json.loads(out)
    assert document["status"] == "usage error" and document["error"] and document["exit"] == EXIT_USAGE


# -- the wrong client kind ------------------------------------------------------------------


def test_the_wrong_client_kind_is_refused_before_any_call() -> None:
    from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

    address = f"127.0.0.1:{free_port()}"
    async_client = AsyncTaskHubGrpcClient(host_address=address)
    sync_client = TaskHubGrpcClient(host_address=address)
    try:
        with pytest.raises(InvalidArgumentError, match="acheck_deployment"):
            check_deployment([], client=async_client)
        with pytest.raises(InvalidArgumentError, match="check_deployment"):
            asyncio.run(acheck_deployment([], client=sync_client))
    finally:
        sync_client.close()
        asyncio.run(async_client.close())


# -- output ---------------------------------------------------------------------------------


def test_table_lines_stay_narrow_and_json_keeps_full_values() -> None:
    long_value = "x" * 300
    report = DoctorReport.of(
        [
            Check(
                "t",
                "persistence",
                Status.WARNING,
                "word " * 80,
                fix="fix " * 40,
                guarantee="g " * 60,
                measured=long_value,
            ),
            Check("t", "round trip", Status.OK, "fine", guarantee="rows 3, 12", measured="1.00 ms"),
        ]
    )
    text = format_report(report)
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert long_value in "".join(line.strip() for line in text.splitlines())  # the full value, wrapped
    assert json.loads(report_json(report))["checks"][0]["measured"] == long_value


def test_every_check_names_what_it_protects(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    report = check_deployment([f"file:{directory}"])
    assert all(c.guarantee for c in report.checks), report.checks


# -- argparse: URLs among options, and JSON for every usage error -------------------------


def _run_argparse(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(["doctor", *argv], stdout=out, stderr=err)
    except SystemExit as exc:  # argparse's own usage errors
        status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def test_lock_urls_may_follow_options(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir(mode=0o700)
    status, out, err = _run_argparse(f"file:{first}", "--timeout", "2", f"file:{second}", "--json")
    assert status == EXIT_OK, out + err
    targets = {c["target"] for c in json.loads(out)["checks"]}
    assert targets == {f"file:{first}", f"file:{second}"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "redis://127.0.0.1:1/0", "--bogus"],
        ["--json", "redis://:S3cretPW@127.0.0.1:1/0", "--", "redis://:0therPW@127.0.0.1:1/0", "extra"],
        ["--json", "--timeout", "abc", "redis://:S3cretPW@127.0.0.1:1/0"],
        ["--json", "--client", "user:S3cretPW@127.0.0.1:1"],
        ["--json", "--client"],
    ],
)
def test_every_json_usage_error_is_one_json_document(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run_argparse(*argv)
    captured = capsys.readouterr()
    assert status == EXIT_USAGE
    document = json.loads(out)
    assert document["status"] == "usage error" and document["exit"] == EXIT_USAGE and document["checks"] == []
    assert not (err + captured.err).strip()
    assert "S3cret" not in out + err + captured.out + captured.err
    assert "0therPW" not in out


def test_json_is_not_abbreviated(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # main() decides on JSON errors by the literal flag: an abbreviation must not slip by.
    status, _, _ = _run_argparse("--jso", f"file:{tmp_path}")
    assert status == EXIT_USAGE
    assert "--jso" in capsys.readouterr().err


def test_every_json_report_carries_its_exit_status(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    status, out, _ = run_cli("--json", f"file:{tmp_path}")
    assert json.loads(out)["exit"] == status == EXIT_OK
    tmp_path.chmod(0o777)
    status, out, _ = run_cli("--json", f"file:{tmp_path}")
    assert json.loads(out)["exit"] == status == EXIT_VIOLATION


# -- the --client address: host:port only, checked before any channel ---------------------

CLIENT_LEAKS = [
    "Secr3tPW@127.0.0.1:1",
    "user:Secr3tPW@127.0.0.1:1",
    "127.0.0.1:Secr3t+PW",
    "127.0.0.1:1?token=Secr3t[x]",
    "grpc://user:Secr3tPW@127.0.0.1:1",
    "grpcs://Secr3tPW@127.0.0.1:1",
    "grpc://127.0.0.1:1?token=Secr3tPW",
    "grpc://127.0.0.1:1/Secr3tPW",
    "grpc://127.0.0.1:1#Secr3tPW",
    "Secr3t%40PW@127.0.0.1:1",
    "127.0.0.1:%53ecr3t",
    "unix:/tmp/Secr3t.sock",
    "dns:///Secr3t:1",
]


@pytest.mark.parametrize("address", CLIENT_LEAKS)
def test_a_client_address_that_is_not_host_port_is_a_usage_error(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        check_deployment([], client=address)
    assert "Secr3t" not in str(exc.value) and "ecr3t" not in str(exc.value)
    for argv in (["--client", address], ["--json", "--client", address]):
        status, out, err = _run_argparse(*argv)
        captured = capsys.readouterr()
        assert status == EXIT_USAGE
        assert "ecr3t" not in out + err + captured.out + captured.err
    assert json.loads(_run_argparse("--json", "--client", address)[1])["status"] == "usage error"


def test_no_client_secret_reaches_grpcs_own_log() -> None:
    import subprocess
    import sys

    for address in CLIENT_LEAKS[:4]:
        done = subprocess.run(
            [sys.executable, "-m", "strict_singleton.cli", "doctor", "--timeout", "1", "--client", address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == EXIT_USAGE
        assert "ecr3t" not in done.stdout + done.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:1", "grpc://localhost:1", "grpcs://[::1]:1", "host-1.example:80"])
def test_plain_client_addresses_are_accepted(address: str) -> None:
    from strict_singleton.doctor._address import validate_client_address

    validate_client_address(address)
    with pytest.raises(InvalidArgumentError):
        check_deployment([], client=address.replace(":1", ":99999").replace(":80", ":0"))


# -- one surprise keeps the checks already done --------------------------------------------


def test_an_unexpected_exception_keeps_the_checks_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Check:
        raise RuntimeError("surprise")

    monkeypatch.setattr("strict_singleton.doctor._file.lease_cycle", boom)
    tmp_path.chmod(0o700)
    report = check_deployment(f"file:{tmp_path}")
    assert [c.name for c in report.checks] == ["directory", "local filesystem", "shared directory", "doctor"]
    assert "surprise" in one(report, "doctor").detail


def test_a_malformed_blob_date_is_a_clock_warning(
    strict_singleton_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strict_singleton.doctor import _blob

    monkeypatch.setattr(_blob._DateHook, "__call__", lambda self, response: setattr(self, "date", "Mon, 99 Foo"))
    report = check_deployment(f"{strict_singleton_azurite.url}/doctor-bad-date")
    clock = one(report, "clock")
    assert clock.status is Status.WARNING and clock.measured == "unknown"
    assert not by_name(report, "doctor")
    assert one(report, "lease cycle").status is Status.OK


# -- connect-time commands and memory ------------------------------------------------------


@pytest.mark.redis
def test_client_name_needs_client_setname_and_says_so(start: Any) -> None:
    from strict_singleton.doctor._redis_acl import acl_grants

    server = start(*WELL_CONFIGURED)
    plain = _user_with(server, "plain", acl_grants("strict-singleton:"))
    report = check_deployment([f"{plain}?client_name=myapp"])
    assert report.status is Status.FAILURE
    failures = [c for c in report.checks if c.status is Status.FAILURE]
    assert len(failures) == 1, format_report(report)
    assert "CLIENT SETNAME" in failures[0].detail and "+client|setname" in failures[0].fix
    assert not [c for c in report.checks if "client|setname" in c.detail and c is not failures[0]]
    grants = acl_grants("strict-singleton:", client_name=True)
    assert "+client|setname" in grants
    named = _user_with(server, "named", grants)
    for protocol in ("2", "3"):
        report = check_deployment([f"{named}?client_name=myapp&protocol={protocol}"])
        assert report.status is not Status.FAILURE, format_report(report)
        assert one(report, "lease cycle").status is Status.OK, format_report(report)
        assert "+client|setname" in one(report, "permissions").fix  # the printed line includes it


@pytest.mark.redis
def test_maxmemory_reached_is_a_memory_fix(start: Any) -> None:
    server = start(*WELL_CONFIGURED, "--maxmemory", "1")
    cycle = one(check_deployment([f"redis://127.0.0.1:{server.port}/0"]), "lease cycle")
    assert cycle.status is Status.FAILURE
    assert "maxmemory" in cycle.fix and "grant" not in cycle.fix
