"""Fault injection with real processes and real servers. Each test states the scenario, the
expected outcome, and checks the backend's ledger (instances created, active instances
overwritten, STARTED reports), on ``overwrite`` (no protection of its own) and ``atomic``.

The numbering follows docs/guarantees.md.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask.client import TaskHubGrpcClient
from faults_helpers import Gate, HolderProcess, poll_until

from strict_singleton import (
    LeaseLostError,
    LockUnavailableError,
    SingletonStarter,
    StartOutcome,
)
from strict_singleton._harness.strategies import quiet_logger
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.lock_backends.redlock import RedlockLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from strict_singleton.testing.azurite import Azurite
from suite_helpers import WatchedLock, finishes

PROFILES = pytest.mark.parametrize("overwrite_or_atomic", ["overwrite", "atomic"], indirect=True)


def grpc_client(backend: DurableTestBackend) -> TaskHubGrpcClient:
    return TaskHubGrpcClient(host_address=backend.address, logger=quiet_logger())


def assert_exactly_one(backend: DurableTestBackend, iid: str) -> None:
    snap = backend.ledger.snapshot()
    assert snap.created[iid] == 1, f"{iid}: {snap.created[iid]} instances created"
    assert snap.overwritten_active[iid] == 0


def quick_redis(port: int, **kw: Any) -> redis.Redis:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(port=port, **{**options, **kw})


# -- 1. holder SIGKILLed after acquiring, before scheduling ------------------------------


@PROFILES
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_1_holder_killed_before_scheduling(
    overwrite_or_atomic: DurableTestBackend, kind: str, strict_singleton_redis: RedisServer, tmp_path: Path
) -> None:
    """Expected: the next starter proceeds once the lease is free (file: at once, the OS frees it;
    Redis: after the TTL) and starts exactly one instance; the killed holder scheduled nothing."""
    backend = overwrite_or_atomic
    url = f"file:{tmp_path}" if kind == "file" else strict_singleton_redis.url
    gate = Gate(backend, "killed")
    holder = HolderProcess(url, backend.address, "killed", ttl=1.0)
    gate.wait_entered()  # it holds the lease and is inside its status read
    holder.kill()
    gate.opened.set()
    client = grpc_client(backend)
    # File: freed by the OS at once, so a starter that does not wait at all gets it.
    starter = SingletonStarter(client, lock=lock_from_url(url), lease_ttl=1.0, wait=0 if kind == "file" else 10)
    result = starter.start("orch", instance_id="killed")
    assert result.outcome is StartOutcome.STARTED
    assert_exactly_one(backend, "killed")
    starter.close()


# -- 2. holder SIGSTOPped past the TTL ------------------------------------------------------


@PROFILES
def test_2_holder_frozen_past_ttl_does_not_schedule(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_redis: RedisServer
) -> None:
    """Expected: while the holder is frozen its lease expires and another starter wins; when the
    holder resumes it finds its deadline passed and raises LeaseLostError without scheduling.
    Exactly one instance, nothing overwritten."""
    backend = overwrite_or_atomic
    r = quick_redis(strict_singleton_redis.port)
    gate = Gate(backend, "frozen")
    holder = HolderProcess(strict_singleton_redis.url, backend.address, "frozen", ttl=1.0)
    gate.wait_entered()
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        gate.opened.set()  # the read's answer is sent, but the holder is frozen
        poll_until(lambda: r.exists("strict-singleton:{frozen}:lock") == 0, 10, "the frozen holder's lease to expire")
        starter = SingletonStarter(
            grpc_client(backend), lock=RedisLease(r), lease_ttl=1.0, options=StarterOptions(background_finish=False)
        )
        assert starter.start("orch", instance_id="frozen").outcome is StartOutcome.STARTED
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.result() == {"error": "LeaseLostError", "maybe_scheduled": False}
    assert_exactly_one(backend, "frozen")


# -- 3. the schedule call stalls beyond the remaining validity -------------------------------


@PROFILES
def test_3_schedule_stall_gets_a_deadline(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Expected: the schedule call carries a gRPC deadline inside the lease's validity; when it
    stalls past it the starter keeps the lease (renewing it) and watches for its own instance;
    the stalled request lands server-side, so the call answers STARTED (the truth) and only then
    releases. Exactly one instance; the next caller is told ALREADY_RUNNING."""
    backend = overwrite_or_atomic
    r = quick_redis(strict_singleton_redis.port)
    stalled, watching = threading.Event(), threading.Event()

    def stall(_iid: str) -> None:
        # The injected fault: the request sits in the backend until the starter, its call cut
        # short by the deadline, has begun watching for its instance (its first status read
        # after the schedule); only then does it land.
        if not stalled.is_set():
            stalled.set()
            watching.wait(30)

    backend.start_hook = stall
    backend.read_hook = lambda _iid: watching.set() if stalled.is_set() else None
    lock = WatchedLock(RedisLease(r))
    starter = SingletonStarter(
        grpc_client(backend),
        lock=lock,
        lease_ttl=1.0,
        options=StarterOptions(schedule_margin=0.1, ambiguity_timeout=20),
    )
    with caplog.at_level("INFO", logger="strict_singleton"):
        result = starter.start("orch", instance_id="stalled")
    assert result.outcome is StartOutcome.STARTED
    assert any("DEADLINE_EXCEEDED" in rec.getMessage() for rec in caplog.records), "the deadline never cut the call"
    assert len(lock.releases) == 1  # released once, after the instance showed up
    after = starter.start("orch", instance_id="stalled")
    assert after.outcome is StartOutcome.ALREADY_RUNNING
    assert_exactly_one(backend, "stalled")
    starter.close()


# -- 4. a stale holder releases or extends a lease now owned by another ---------------------


def test_4_stale_holder_is_refused(
    strict_singleton_redis: RedisServer, strict_singleton_azurite: Azurite, tmp_path: Path
) -> None:
    """Expected: release and extend by a holder whose lease expired (or was broken) are refused;
    the new owner keeps the lease. For the file lease, a token that does not hold it is refused."""
    from azure.storage.blob import BlobLeaseClient

    from strict_singleton.lock_backends import BlobLease, FileLease

    old, new = "0b6b1a3e-5d0c-4ef4-9f5e-1f2d3c4b5a60", "7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    lease = RedisLease(quick_redis(strict_singleton_redis.port))
    assert lease.acquire("stale", old, 0.05) is not None
    poll_until(lambda: lease.acquire("stale", new, 10.0) is not None, 5, "the stale lease to expire")
    assert (lease.release("stale", old), lease.extend("stale", old, 10.0)) == (False, False)
    assert lease.extend("stale", new, 10.0) is True

    blob = BlobLease(strict_singleton_azurite.container_client("locks"))
    assert blob.acquire("stale", old, 15) is not None
    blob_client = strict_singleton_azurite.container_client("locks").get_blob_client(blob.blob_name("stale"))
    BlobLeaseClient(blob_client).break_lease(lease_break_period=0)
    assert blob.acquire("stale", new, 15) is not None
    assert (blob.release("stale", old), blob.extend("stale", old, 15)) == (False, False)
    assert blob.extend("stale", new, 15) is True

    file = FileLease(tmp_path)
    assert file.acquire("stale", new, 15) is not None
    assert (file.release("stale", old), file.extend("stale", old, 15)) == (False, False)
    assert file.extend("stale", new, 15) is True


# -- 5. the key disappears behind the holder's back -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@PROFILES
def test_5_redlock_nodes_forget_the_key(
    overwrite_or_atomic: DurableTestBackend, redis_nodes: list[RedisServer]
) -> None:
    """Expected: keys of our lease vanish on 3 of 5 Redlock nodes (expired early, e.g. a clock
    jump); the renewal before scheduling reaches no majority, so LeaseLostError and no schedule."""
    backend = overwrite_or_atomic
    clients = [quick_redis(n.port) for n in redis_nodes]
    clock = Clock()

    def vanish(_iid: str) -> None:
        for c in clients[:3]:
            c.delete("strict-singleton:{vanish}:lock")
        clock.now += 12.0  # past a third of the 30 s TTL: the starter renews before scheduling

    backend.read_hook = vanish
    starter = SingletonStarter(grpc_client(backend), lock=RedlockLease(clients), lease_ttl=30, _clock=clock)
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="vanish")
    assert backend.ledger.snapshot().total_created == 0


@PROFILES
def test_5_redis_key_deleted_before_renewal(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_redis: RedisServer
) -> None:
    """Expected: the lock key is deleted behind the holder's back; the renewal notices; no schedule."""
    backend = overwrite_or_atomic
    r = quick_redis(strict_singleton_redis.port)
    clock = Clock()

    def delete(_iid: str) -> None:
        r.delete("strict-singleton:{deleted}:lock")
        clock.now += 12.0

    backend.read_hook = delete
    starter = SingletonStarter(grpc_client(backend), lock=RedisLease(r), lease_ttl=30, _clock=clock)
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="deleted")
    assert backend.ledger.snapshot().total_created == 0


# -- 6 and 9. the lock store killed mid-swarm, then restarted --------------------------------


def swarm_through_an_outage(
    backend: DurableTestBackend, lock: Any, kill: Any, restart: Any, ttl: float
) -> Counter[str]:
    """8 threads x 12 starts on 6 IDs; the store dies after the first few starts."""
    client = grpc_client(backend)
    starter = SingletonStarter(
        client, lock=lock, lease_ttl=ttl, wait=2, options=StarterOptions(background_finish=False)
    )
    reports: list[tuple[str, str]] = []
    guard = threading.Lock()
    count = 0

    def worker(i: int) -> None:
        nonlocal count
        for n in range(12):
            iid = f"outage-{(i + n) % 6}"
            try:
                outcome = starter.start("orch", instance_id=iid).outcome.value
            except LockUnavailableError:
                outcome = "unavailable"
            with guard:
                reports.append((iid, outcome))
                count += 1
                if count == 10:
                    kill()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    snap = backend.ledger.snapshot()
    started = Counter(iid for iid, o in reports if o == "started")
    for iid in {iid for iid, _ in reports}:
        assert snap.created[iid] == started[iid] <= 1, (iid, snap.created[iid], started[iid])  # no duplicate, none lost
    assert snap.total_overwritten == 0
    outcomes = Counter(o for _, o in reports)
    assert outcomes["unavailable"] > 0  # the outage really happened mid-swarm
    restart()
    assert starter.start("orch", instance_id="after-outage").started
    client.close()
    return outcomes


@PROFILES
def test_6_redis_killed_mid_swarm(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_private_redis: RedisServer
) -> None:
    """Expected: starts fail closed with LockUnavailableError while Redis is down, zero duplicates,
    every STARTED matches one created instance; after a restart on the same port starts work again."""
    lock = RedisLease(quick_redis(strict_singleton_private_redis.port))
    swarm_through_an_outage(
        overwrite_or_atomic, lock, strict_singleton_private_redis.stop, strict_singleton_private_redis.start, ttl=5
    )


@PROFILES
def test_9_azurite_killed_mid_swarm(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_private_azurite: Azurite
) -> None:
    """Expected: as 6, for the Blob lease and the Azurite emulator."""
    from strict_singleton.lock_backends import BlobLease

    lock = BlobLease(strict_singleton_private_azurite.container_client("locks"))
    swarm_through_an_outage(
        overwrite_or_atomic, lock, strict_singleton_private_azurite.stop, strict_singleton_private_azurite.start, ttl=15
    )


# -- 7. Redis restarted without persistence while a holder is inside --------------------------


@pytest.mark.parametrize(("overwrite_or_atomic", "expected_created", "expected_overwritten"),
                         [("atomic", 1, 0), ("overwrite", 2, 1)], indirect=["overwrite_or_atomic"])  # fmt: skip
def test_7_lock_forgotten_by_a_restart(
    overwrite_or_atomic: DurableTestBackend,
    strict_singleton_private_redis: RedisServer,
    expected_created: int,
    expected_overwritten: int,
) -> None:
    """Expected (documented, not claimed safe on every host): the restart forgets the held lease, so a
    second starter gets it and starts the instance. When the first holder resumes, on ``atomic``
    the terminal-only reuse policy makes the backend reject its duplicate: it answers
    ALREADY_RUNNING, one instance. On ``overwrite`` no lease-based scheme can help: the holder's
    schedule replaces the running instance (both report STARTED; the fencing tags on the two
    instances show which lease holder started each). Mitigation: an atomic-dedupe backend, Redis
    persistence, or keeping a restarted node down for one TTL (or Redlock with a majority up)."""
    backend = overwrite_or_atomic
    r = quick_redis(strict_singleton_private_redis.port)
    gate = Gate(backend, "forgotten", on="start")  # the holder read "none" and is scheduling
    client = grpc_client(backend)
    first = SingletonStarter(client, lock=RedisLease(r), lease_ttl=30, options=StarterOptions(background_finish=False))
    results: dict[str, Any] = {}
    holder = threading.Thread(target=lambda: results.update(first=first.start("orch", instance_id="forgotten")))
    holder.start()
    gate.wait_entered()
    strict_singleton_private_redis.stop()
    strict_singleton_private_redis.start()  # same port, no persistence: the lease is gone
    second = SingletonStarter(
        client,
        lock=RedisLease(quick_redis(strict_singleton_private_redis.port)),
        lease_ttl=30,
        options=StarterOptions(background_finish=False),
    )
    assert second.start("orch", instance_id="forgotten").outcome is StartOutcome.STARTED
    gate.opened.set()
    holder.join(30)
    snap = backend.ledger.snapshot()
    assert (snap.created["forgotten"], snap.overwritten_active["forgotten"]) == (expected_created, expected_overwritten)
    expected_first = StartOutcome.ALREADY_RUNNING if expected_overwritten == 0 else StartOutcome.STARTED
    assert results["first"].outcome is expected_first
    fences = [t["strict_singleton.fencing_token"] for t in snap.tags["forgotten"]]
    assert len(fences) == expected_created  # each created instance carries its holder's fencing token


# -- 8. Redlock with 5 nodes: minority down, majority down, a slow node ------------------------


@PROFILES
def test_8_redlock_minority_down_works_majority_down_fails_closed(
    overwrite_or_atomic: DurableTestBackend, redis_nodes: list[RedisServer]
) -> None:
    """Expected: 2 of 5 nodes down -> starts work; 3 of 5 down -> LockUnavailableError, nothing scheduled."""
    backend = overwrite_or_atomic
    clients = [quick_redis(n.port) for n in redis_nodes]
    lock = RedlockLease(clients, node_timeout=0.2)
    starter = SingletonStarter(
        grpc_client(backend), lock=lock, lease_ttl=5, options=StarterOptions(background_finish=False)
    )
    redis_nodes[0].stop()
    redis_nodes[1].stop()
    result = starter.start("orch", instance_id="two-down")
    assert result.started and result.fencing_token is not None
    redis_nodes[2].stop()
    with pytest.raises(LockUnavailableError, match="3 of 5 Redlock nodes down"):
        starter.start("orch", instance_id="three-down")
    assert set(backend.ledger.snapshot().created) == {"two-down"}
    lock.close()


@PROFILES
def test_8_redlock_slow_nodes_count_as_down(
    overwrite_or_atomic: DurableTestBackend, redis_nodes: list[RedisServer]
) -> None:
    """Expected: nodes frozen (SIGSTOP) beyond the per-node timeout count as down: 2 frozen -> works;
    3 frozen -> fails closed promptly (no waiting on the frozen nodes' sockets)."""
    backend = overwrite_or_atomic
    clients = [quick_redis(n.port, socket_timeout=120) for n in redis_nodes]
    lock = RedlockLease(clients, node_timeout=0.1)
    starter = SingletonStarter(
        grpc_client(backend), lock=lock, lease_ttl=5, options=StarterOptions(background_finish=False)
    )
    frozen: list[int] = []
    try:
        for node in redis_nodes[:2]:
            assert node.pid is not None
            os.kill(node.pid, signal.SIGSTOP)
            frozen.append(node.pid)
        assert starter.start("orch", instance_id="two-slow").started
        assert redis_nodes[2].pid is not None
        os.kill(redis_nodes[2].pid, signal.SIGSTOP)
        frozen.append(redis_nodes[2].pid)

        def three_slow() -> None:
            with pytest.raises(LockUnavailableError, match="too slow"):
                starter.start("orch", instance_id="three-slow")

        # Waiting on a frozen node's socket would take its 120 s socket timeout.
        finishes(three_slow, within=30, what="failing closed with 3 of 5 nodes frozen")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert set(backend.ledger.snapshot().created) == {"two-slow"}
    lock.close()


def test_8_redlock_exactly_once_under_contention(
    strict_singleton_durable_backend: DurableTestBackend, redis_nodes: list[RedisServer]
) -> None:
    """Redlock passes the same race as the other backends: 16 threads x 20 rounds on overwrite."""
    from strict_singleton.testing.swarm import fire_threads

    strict_singleton_durable_backend.profile = "overwrite"
    lock = RedlockLease([quick_redis(n.port) for n in redis_nodes], node_timeout=1.0)
    with SingletonStarter(grpc_client(strict_singleton_durable_backend), lock=lock, lease_ttl=5) as starter:
        for r in range(20):
            iid = f"redlock-{r}"
            recs = fire_threads(16, lambda _i, iid=iid: starter.start("orch", instance_id=iid))
            assert not [x.value for x in recs if x.raised]
            assert Counter(x.value.outcome for x in recs)[StartOutcome.STARTED] == 1
            assert_exactly_one(strict_singleton_durable_backend, iid)
    lock.close()


def test_redlock_fencing_tokens_only_grow(redis_nodes: list[RedisServer]) -> None:
    """Fencing across different majorities: tokens still only grow."""
    clients = [quick_redis(n.port) for n in redis_nodes]
    seen = []
    for i in range(6):
        # A different pair of nodes is unreachable each time: majorities differ.
        down = {i % 5, (i + 2) % 5}
        lock = RedlockLease([c if k not in down else quick_redis(1) for k, c in enumerate(clients)], node_timeout=0.2)
        token = f"00000000-0000-4000-8000-00000000000{i}"
        grant = lock.acquire("fence", token, 5.0)
        assert grant is not None
        seen.append(grant.fencing_token)
        lock.release("fence", token)
        lock.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen


# -- 10. the lock store unreachable from the start -----------------------------------------------


def test_10_unreachable_from_the_start(strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path) -> None:
    """Expected: closed port, wrong password, TLS against a plain server: LockUnavailableError that
    names the store and carries no secret; nothing scheduled."""
    from strict_singleton.lock_backends import BlobLease
    from strict_singleton.testing import free_port
    from strict_singleton.testing.azurite import DEV_KEY, dev_connection_string

    secret = "s3cret-pass-word"
    with RedisServer(password=secret) as guarded:
        cases = {
            "closed port": RedisLease(quick_redis(free_port())),
            "wrong password": RedisLease(quick_redis(guarded.port, password="wrong-" + secret)),
            "no password": RedisLease(quick_redis(guarded.port)),
            "tls mismatch": RedisLease(quick_redis(guarded.port, ssl=True)),
            "azurite closed port": BlobLease.from_connection_string(
                dev_connection_string("127.0.0.1", free_port()), container="locks", retry_total=0
            ),
        }
        client = grpc_client(strict_singleton_durable_backend)
        for case, lock in cases.items():
            starter = SingletonStarter(client, lock=lock, lease_ttl=15)
            with pytest.raises(LockUnavailableError) as info:
                starter.start("orch", instance_id=f"unreachable-{case}")
            message = str(info.value)
            assert lock.name in message, (case, message)
            assert secret not in message and DEV_KEY not in message, (case, message)
    assert strict_singleton_durable_backend.instance_count() == 0
