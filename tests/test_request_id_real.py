"""request_id on real components: the in-memory Durable backend over real gRPC,
real lock stores, real threads, tasks and processes. What happened is counted in the backend."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from strict_singleton import (
    AsyncSingletonStarter,
    ConflictPolicy,
    InvalidArgumentError,
    ScheduleError,
    SingletonStarter,
    StartOutcome,
)
from strict_singleton._harness.procs import WorkerSpec, run_process_swarm
from strict_singleton._validation import REQUEST_ID_TAG
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.redis_server import RedisServer
from strict_singleton.testing.swarm import fire_threads
from suite_helpers import poll_until, running_worker, starter_kwargs

# Short enough that the schedule RPC's deadline (the lease's) cuts a request held in the backend.
CUT = {"lease_ttl": 1.0, "ambiguity_timeout": 0.2, "visibility_timeout": 0.2}


class HeldStart:
    """A backend start hook: the request for ``iid`` waits in the backend until ``go`` is set."""

    def __init__(self, iid: str) -> None:
        self.iid = iid
        self.arrived = threading.Event()
        self.go = threading.Event()

    def __call__(self, instance_id: str) -> None:
        if instance_id == self.iid and not self.go.is_set():
            self.arrived.set()
            assert self.go.wait(60), "the test never let the held start go"


def created(backend: DurableTestBackend, iid: str) -> int:
    return backend.ledger.snapshot().created[iid]


def test_sync_deadline_cut_schedule_then_retry_is_deduplicated(
    strict_singleton_durable_backend: DurableTestBackend, strict_singleton_redis: RedisServer
) -> None:
    backend, iid = strict_singleton_durable_backend, "cut-sync"
    held = backend.start_hook = HeldStart(iid)
    client = TaskHubGrpcClient(host_address=backend.address)
    starter = SingletonStarter(
        client, lock=RedisLease(redis.Redis(port=strict_singleton_redis.port)), **starter_kwargs(**CUT)
    )
    with pytest.raises(ScheduleError) as err:
        starter.start("orch", instance_id=iid, request_id="order-7")
    assert err.value.maybe_scheduled and held.arrived.is_set()
    assert created(backend, iid) == 0
    held.go.set()  # the held request now executes: the instance exists after the caller gave up
    poll_until(lambda: created(backend, iid) == 1, 30, "the held start to execute")
    again = starter.start("orch", instance_id=iid, request_id="order-7")
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert again.existing is not None and again.existing.runtime_status is OrchestrationStatus.PENDING
    other = starter.start("orch", instance_id=iid, request_id="order-8")
    assert (other.outcome, other.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)
    assert created(backend, iid) == 1
    assert backend.ledger.snapshot().tags[iid][-1][REQUEST_ID_TAG] == "order-7"
    starter.close()
    client.close()


def test_async_deadline_cut_schedule_then_retry_is_deduplicated(
    strict_singleton_durable_backend: DurableTestBackend, strict_singleton_redis: RedisServer
) -> None:
    import redis.asyncio as aioredis

    backend, iid = strict_singleton_durable_backend, "cut-async"
    held = backend.start_hook = HeldStart(iid)

    async def scenario() -> None:
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        lock = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port))
        async with AsyncSingletonStarter(client, lock=lock, **starter_kwargs(**CUT)) as starter:
            with pytest.raises(ScheduleError) as err:
                await starter.start("orch", instance_id=iid, request_id="order-7")
            assert err.value.maybe_scheduled and held.arrived.is_set()
            held.go.set()
            await asyncio.to_thread(poll_until, lambda: created(backend, iid) == 1, 30, "the held start")
            again = await starter.start("orch", instance_id=iid, request_id="order-7", on_conflict=ConflictPolicy.FAIL)
            assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
        await lock.close()
        await client.close()

    asyncio.run(scenario())
    assert created(backend, iid) == 1


def test_async_caller_gone_mid_schedule_then_retry_is_deduplicated(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    """The caller's own deadline (a cancelled task) while the schedule is held in the backend."""
    backend, iid = strict_singleton_durable_backend, "gone-async"
    held = backend.start_hook = HeldStart(iid)

    async def scenario() -> None:
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        async with AsyncSingletonStarter(client, lock=AsyncFileLease(tmp_path)) as starter:
            first = asyncio.create_task(starter.start("orch", instance_id=iid, request_id="order-9"))
            await asyncio.to_thread(held.arrived.wait, 60)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            held.go.set()
            again = await starter.start("orch", instance_id=iid, request_id="order-9")
            assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
        await client.close()

    asyncio.run(scenario())
    assert created(backend, iid) == 1


@pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)
def test_a_wave_with_distinct_request_ids_then_every_caller_retries(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    backend, iid, n = strict_singleton_durable_backend, "wave-rid", 16
    client = TaskHubGrpcClient(host_address=backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    first = fire_threads(n, lambda i: starter.start("orch", instance_id=iid, request_id=f"caller-{i}"))
    assert not [r.value for r in first if r.raised]
    winners = [i for i, r in enumerate(first) if r.value.outcome is StartOutcome.STARTED]
    assert len(winners) == 1 and Counter(r.value.outcome for r in first)[StartOutcome.ALREADY_RUNNING] == n - 1
    retry = fire_threads(n, lambda i: starter.start("orch", instance_id=iid, request_id=f"caller-{i}"))
    assert not [r.value for r in retry if r.raised]
    deduplicated = [i for i, r in enumerate(retry) if r.value.outcome is StartOutcome.STARTED]
    assert deduplicated == winners and retry[winners[0]].value.deduplicated
    assert not [r for r in retry if r.value.deduplicated and r.value.outcome is not StartOutcome.STARTED]
    assert created(backend, iid) == 1
    starter.close()
    client.close()


def test_retry_of_a_finished_instance_is_deduplicated_on_the_async_starter(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    backend, iid = strict_singleton_durable_backend, "done-rid"

    async def scenario() -> None:
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        async with AsyncSingletonStarter(client, lock=AsyncFileLease(tmp_path)) as starter:
            first = await starter.start("orch", instance_id=iid, request_id="r")
            assert first.outcome is StartOutcome.STARTED and not first.deduplicated
            assert backend.finish_instance(iid)
            again = await starter.start("orch", instance_id=iid, request_id="r")
            assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
            assert again.existing is not None and again.existing.runtime_status is OrchestrationStatus.COMPLETED
            fresh = await starter.start("orch", instance_id=iid)  # no request ID: the finished one is replaced
            assert (fresh.outcome, fresh.deduplicated) == (StartOutcome.STARTED, False)
            late = await starter.start("orch", instance_id=iid, request_id="r")
            assert (late.outcome, late.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)
        await client.close()

    asyncio.run(scenario())
    assert created(backend, iid) == 2


BAD_REQUEST_IDS = ["", " r", "r ", "a\x00b", "a\nb", "x" * 129, 7, b"r", ["r"]]


@pytest.mark.parametrize("bad", BAD_REQUEST_IDS, ids=repr)
@pytest.mark.parametrize("api", ["start", "start_or_signal"])
def test_bad_request_ids_are_refused_before_any_lease(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, bad: Any, api: str
) -> None:
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    extra: dict[str, Any] = {"event_name": "item"} if api == "start_or_signal" else {}
    with pytest.raises(InvalidArgumentError, match="request_id"):
        getattr(starter, api)("orch", instance_id="bad-rid", request_id=bad, **extra)

    async def on_async() -> None:
        aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
        async with AsyncSingletonStarter(aclient, lock=AsyncFileLease(tmp_path)) as astarter:
            with pytest.raises(InvalidArgumentError, match="request_id"):
                await getattr(astarter, api)("orch", instance_id="bad-rid", request_id=bad, **extra)
        await aclient.close()

    asyncio.run(on_async())
    assert list(tmp_path.iterdir()) == []
    assert (
        created(backend, "bad-rid") == 0 and backend.calls.snapshot().by_method(lambda i: i == "bad-rid") == Counter()
    )
    client.close()


def test_a_lock_without_request_records_refuses_request_ids_before_any_lease(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    class PlainLease:  # a user's own lease backend: the base protocol only
        def __init__(self) -> None:
            self._inner = FileLease(tmp_path)
            self.name = "plain"

        def __getattr__(self, name: str) -> Any:
            if name in ("record_request", "release_with_record", "record_start"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=PlainLease())
    with pytest.raises(InvalidArgumentError, match="request records"):
        starter.start("orch", instance_id="plain-rid", request_id="r")
    assert list(tmp_path.iterdir()) == []
    assert starter.start("orch", instance_id="plain-rid").outcome is StartOutcome.STARTED
    starter.close()
    client.close()


# -- start_or_signal with several processes --------------------------------------------

PROCS, PER_PROC = 4, 4


def collect(ctx: task.OrchestrationContext, n: int) -> Any:
    got: list[Any] = []
    while len(got) < n:
        item = yield ctx.wait_for_external_event("item")
        got.append(item)
    return got


@pytest.fixture
def worker(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcWorker]:
    with running_worker(strict_singleton_durable_backend.address, collect) as w:
        yield w


@pytest.mark.parametrize("api", ["threads", "asyncio"])
def test_start_or_signal_from_several_processes_one_instance_every_event_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path, api: str
) -> None:
    backend, rounds = strict_singleton_durable_backend, 3
    spec = WorkerSpec(
        address=backend.address,
        lock_url=f"file:{tmp_path}",
        api=api,
        starters=PER_PROC,
        rounds=rounds,
        id_prefix=f"psig-{api}",
        orchestrator="collect",
        input=PROCS * PER_PROC,
        event_name="item",
    )
    rows = run_process_swarm(spec, PROCS)
    client = TaskHubGrpcClient(host_address=backend.address)
    for r in range(rounds):
        iid = f"psig-{api}-{r}"
        outcomes = Counter(o for row in rows if row[2] == r for o in row[3])
        assert outcomes == {"started": 1, "signaled": PROCS * PER_PROC - 1}, (iid, outcomes)
        assert created(backend, iid) == 1
        poll_until(
            lambda iid=iid: (
                (s := client.get_orchestration_state(iid)) is not None
                and s.runtime_status is OrchestrationStatus.COMPLETED
            ),
            60,
            f"{iid} to collect its events",
        )
        state = client.get_orchestration_state(iid)
        assert state is not None and state.serialized_output is not None
        assert sorted(json.loads(state.serialized_output)) == sorted(
            f"p{p}-{i}" for p in range(PROCS) for i in range(PER_PROC)
        )
    client.close()
