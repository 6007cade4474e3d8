"""The headline claim: >= 16 concurrent starters x >= 50 rounds on one ID per round give
exactly one STARTED and exactly one created instance per round, per lock backend and per
API (threads, asyncio tasks, separate processes).

Runs on the ``overwrite`` profile, where the Durable backend gives no protection of its
own: a second schedule would create (and count) a second instance. The lease is the
only thing standing between the callers and a duplicate.

Azure Blob (three HTTP round trips per lease operation, one single-threaded emulator)
runs 10 rounds in the default run and the full 50 with the rest of the ``slow`` campaign
(``python -m pytest -m slow``), as do the separate-process variants.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome
from strict_singleton._harness.procs import WorkerSpec, run_process_swarm
from strict_singleton._harness.strategies import naive_start
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from suite_helpers import LOCK_KINDS

STARTERS = 16
ROUNDS = 50
ALLOWED_LOSERS = {StartOutcome.ALREADY_RUNNING, StartOutcome.BUSY}
QUICK_BLOB_ROUNDS = 10
# (lock kind, rounds) for the in-process swarms.
KIND_ROUNDS = [
    *(pytest.param(kind, ROUNDS, id=kind) for kind in LOCK_KINDS if kind != "blob"),
    pytest.param("blob", QUICK_BLOB_ROUNDS, id="blob-quick"),
    pytest.param("blob", ROUNDS, id="blob", marks=pytest.mark.slow),
]
pytestmark = pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)


def check_round(backend: DurableTestBackend, iid: str, outcomes: list[Any]) -> None:
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, f"{iid}: starters raised {errors[:3]}"
    counts = Counter(o.outcome for o in outcomes)
    assert counts[StartOutcome.STARTED] == 1, f"{iid}: {counts}"
    assert set(counts) - {StartOutcome.STARTED} <= ALLOWED_LOSERS
    snap = backend.ledger.snapshot()
    assert snap.created[iid] == 1, f"{iid}: backend created {snap.created[iid]} instances"
    assert snap.overwritten_active[iid] == 0


@pytest.mark.parametrize(("lock_url", "rounds"), KIND_ROUNDS, indirect=["lock_url"])
def test_threads_exactly_once(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str, rounds: int
) -> None:
    lock = lock_from_url(lock_url)
    with SingletonStarter(client, lock=lock, lease_ttl=15) as starter:
        for r in range(rounds):
            iid = f"threads-{r}"
            recs = fire_threads(STARTERS, lambda _i, iid=iid: starter.start("orch", instance_id=iid))
            check_round(strict_singleton_durable_backend, iid, [rec.value for rec in recs])
    lock.close()
    assert strict_singleton_durable_backend.ledger.snapshot().total_created == rounds


@pytest.mark.parametrize(("lock_url", "rounds"), KIND_ROUNDS, indirect=["lock_url"])
def test_asyncio_exactly_once(strict_singleton_durable_backend: DurableTestBackend, lock_url: str, rounds: int) -> None:
    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        lock = lock_from_url(lock_url, asynchronous=True)
        async with AsyncSingletonStarter(client, lock=lock, lease_ttl=15) as starter:
            for r in range(rounds):
                iid = f"tasks-{r}"
                recs = await fire_tasks(STARTERS, lambda _i, iid=iid: starter.start("orch", instance_id=iid))
                check_round(strict_singleton_durable_backend, iid, [rec.value for rec in recs])
        await lock.close()
        await client.close()

    asyncio.run(main())
    assert strict_singleton_durable_backend.ledger.snapshot().total_created == rounds


@pytest.mark.slow
@pytest.mark.parametrize("api", ["threads", "asyncio"])
@pytest.mark.parametrize("lock_url", LOCK_KINDS, indirect=True)
def test_processes_exactly_once(strict_singleton_durable_backend: DurableTestBackend, lock_url: str, api: str) -> None:
    processes, per_process = 4, 4  # 16 concurrent starters in 4 separate OS processes
    spec = WorkerSpec(
        address=strict_singleton_durable_backend.address,
        lock_url=lock_url,
        api=api,
        starters=per_process,
        rounds=ROUNDS,
        id_prefix=f"procs-{api}",
    )
    rows = run_process_swarm(spec, processes)
    pids = {row[0] for row in rows}
    assert len(pids) == processes and os.getpid() not in pids  # really separate processes
    by_round: dict[int, list[str]] = {}
    for _pid, _proc, r, outcomes, _began in rows:
        by_round.setdefault(r, []).extend(outcomes)
    snap = strict_singleton_durable_backend.ledger.snapshot()
    for r in range(ROUNDS):
        counts = Counter(by_round[r])
        assert counts["started"] == 1, f"round {r}: {counts}"
        assert set(counts) <= {"started", "already_running", "busy"}, counts
        assert sum(counts.values()) == processes * per_process
        assert snap.created[f"procs-{api}-{r}"] == 1
    assert snap.total_created == ROUNDS and snap.total_overwritten == 0


def test_harness_catches_the_naive_pattern(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient
) -> None:
    """The same checks fail for the docs' unlocked check-then-schedule: the test can fail."""
    strict_singleton_durable_backend.latency = 0.002  # a realistic backend round trip widens the race window
    violations = 0
    for r in range(10):
        iid = f"naive-{r}"
        recs = fire_threads(STARTERS, lambda _i, iid=iid: naive_start(client, "orch", instance_id=iid))
        believed = sum(1 for rec in recs if rec.value is True)
        created = strict_singleton_durable_backend.ledger.snapshot().created[iid]
        violations += believed != 1 or created != 1
    assert violations > 0, "the naive pattern never raced: the harness would not catch a broken lock"
