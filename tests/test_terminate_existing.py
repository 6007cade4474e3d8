"""ConflictPolicy.TERMINATE_EXISTING with a real TaskHubGrpcWorker: the active
instance is terminated under the lease, the new one started once it has ended, and in a
wave of overlapping callers exactly one replacement happens."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from strict_singleton import (
    AsyncSingletonStarter,
    ConflictPolicy,
    InvalidArgumentError,
    ReusePolicy,
    SingletonStarter,
    StartOutcome,
    TerminateError,
)
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend
from suite_helpers import fire_threads_async, poll_until, running_worker, wait_for_finish

TERMINATE = ConflictPolicy.TERMINATE_EXISTING
PROFILES = pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)


@pytest.fixture
def worker(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcWorker]:
    with running_worker(strict_singleton_durable_backend.address, wait_for_finish) as w:
        yield w


def running(client: TaskHubGrpcClient, backend: DurableTestBackend, iid: str) -> Any:
    """Create ``iid`` (outside any starter) and wait until the worker runs it."""
    client.schedule_new_orchestration(wait_for_finish, instance_id=iid)
    poll_until(
        lambda: backend.status_of(iid) == OrchestrationStatus.RUNNING.value, 30, f"{iid} to run"
    )  # fmt: skip
    return client.get_orchestration_state(iid)


def terminates(backend: DurableTestBackend, iid: str) -> int:
    return backend.calls.snapshot().by_method(lambda i: i == iid)["TerminateInstance"]


@PROFILES
@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_active_instance_is_terminated_and_replaced(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path, api: str
) -> None:
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    old = running(client, backend, "t1")
    if api == "sync":
        with SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(clock_skew=0)) as starter:
            result = starter.start(wait_for_finish, instance_id="t1", on_conflict=TERMINATE)
    else:

        async def go() -> Any:
            aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
            async with AsyncSingletonStarter(
                aclient, lock=AsyncFileLease(tmp_path), options=StarterOptions(clock_skew=0)
            ) as starter:
                out = await starter.start(wait_for_finish, instance_id="t1", on_conflict="terminate_existing")
            await aclient.close()
            return out

        result = asyncio.run(go())
    assert result.outcome is StartOutcome.STARTED
    assert result.replaced is not None and result.replaced.created_at == old.created_at
    assert result.replaced.runtime_status is OrchestrationStatus.RUNNING
    assert backend.ledger.snapshot().created["t1"] == 2 and terminates(backend, "t1") == 1
    new = client.get_orchestration_state("t1")
    assert new is not None and new.created_at != old.created_at
    client.close()


@pytest.mark.slow  # 20 rounds x 2 profiles, each waiting for its instance to age past the skew: ~25 s
@PROFILES
class AskersByThread(FileLease):
    """A real file lease that notes which threads have asked for each ID's lease (a test barrier:
    a TERMINATE_EXISTING call reads first, before any lease, and asks for the lease only once that
    read is answered: what the call began with is fixed by then). Not the reads themselves: a
    starter's concurrent callers share their status reads, so one read can answer many calls."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.askers: dict[str, set[int]] = {}
        self._askers_lock = threading.Lock()

    def acquire(self, instance_id: str, token: str, ttl: float) -> Any:
        with self._askers_lock:
            self.askers.setdefault(instance_id, set()).add(threading.get_ident())
        return super().acquire(instance_id, token, ttl)


@contextlib.contextmanager
def gate(directory: Path, iid: str) -> Iterator[FileLease]:
    """The ID's lease held by the test itself: calls begin, then wait for it."""
    lease = FileLease(directory)
    assert lease.acquire(iid, "gate", 30.0) is not None
    try:
        yield lease
    finally:
        lease.release(iid, "gate")
        lease.close()


def test_a_wave_of_terminate_callers_replaces_exactly_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    """16 concurrent TERMINATE_EXISTING callers x 20 rounds against a running instance, all of
    which began (made their first read) before any of them held the lease: one terminate and
    one new instance per round; the others ALREADY_RUNNING with it."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    lock = AskersByThread(tmp_path)
    starter = SingletonStarter(client, lock=lock)
    for r in range(20):
        iid = f"wave-{r}"
        old = running(client, backend, iid)
        with gate(tmp_path, iid):
            pending = fire_threads_async(
                16, lambda _i, iid=iid: starter.start(wait_for_finish, instance_id=iid, on_conflict=TERMINATE)
            )
            poll_until(lambda iid=iid: len(lock.askers.get(iid, ())) == 16, 30, "every call to begin")
        recs = pending()
        assert not [rec.value for rec in recs if rec.raised]
        results = [rec.value for rec in recs]
        counts = Counter(res.outcome for res in results)
        assert counts == {StartOutcome.STARTED: 1, StartOutcome.ALREADY_RUNNING: 15}, (r, counts)
        (winner,) = [res for res in results if res.started]
        assert winner.replaced is not None and winner.replaced.created_at == old.created_at
        new = client.get_orchestration_state(iid)
        assert new is not None and new.created_at != old.created_at
        assert all(res.existing.created_at == new.created_at for res in results if not res.started)
        assert terminates(backend, iid) == 1 and backend.ledger.snapshot().created[iid] == 2
    starter.close()
    client.close()


def test_a_young_instance_running_before_the_calls_began_is_replaced_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    """Restarting a job just launched: an instance created a moment before the calls (well
    inside the default clock_skew of 5 s) is terminated and replaced, once, by 12 callers that
    all began while it ran; the other 11 answer ALREADY_RUNNING with the replacement."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    lock = AskersByThread(tmp_path)
    starter = SingletonStarter(client, lock=lock)  # the default clock_skew
    old = running(client, backend, "young")
    with gate(tmp_path, "young"):
        pending = fire_threads_async(
            12, lambda _i: starter.start(wait_for_finish, instance_id="young", on_conflict=TERMINATE)
        )
        poll_until(lambda: len(lock.askers.get("young", ())) == 12, 30, "every call to begin")
    results = [rec.value for rec in pending()]
    assert Counter(res.outcome for res in results) == {StartOutcome.STARTED: 1, StartOutcome.ALREADY_RUNNING: 11}
    (winner,) = [res for res in results if res.started]
    assert winner.replaced is not None and winner.replaced.created_at == old.created_at
    new = client.get_orchestration_state("young")
    assert new is not None and new.created_at != old.created_at
    assert terminates(backend, "young") == 1
    starter.close()
    client.close()


def test_async_a_young_instance_is_replaced(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    old = running(client, backend, "young-async")

    async def go() -> Any:
        aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
        try:
            async with AsyncSingletonStarter(aclient, lock=AsyncFileLease(tmp_path)) as starter:
                return await starter.start(wait_for_finish, instance_id="young-async", on_conflict=TERMINATE)
        finally:
            await aclient.close()

    result = asyncio.run(go())
    assert result.outcome is StartOutcome.STARTED
    assert result.replaced is not None and result.replaced.created_at == old.created_at
    client.close()


def test_an_instance_created_after_the_call_began_is_its_answer(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    """The call began (its first read: no instance), then, while it waited for the lease, another
    start created one: that instance is this call's answer, not replaced (no clocks compared)."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    lock = AskersByThread(tmp_path)
    starter = SingletonStarter(client, lock=lock)
    with gate(tmp_path, "recent"):
        pending = fire_threads_async(
            1, lambda _i: starter.start(wait_for_finish, instance_id="recent", on_conflict=TERMINATE)
        )
        poll_until(lambda: len(lock.askers.get("recent", ())) == 1, 30, "the call to begin")
        created = running(client, backend, "recent")
    (rec,) = pending()
    assert not rec.raised, rec.value
    assert rec.value.outcome is StartOutcome.ALREADY_RUNNING and terminates(backend, "recent") == 0
    assert rec.value.existing.created_at == created.created_at
    starter.close()
    client.close()


def test_an_instance_that_does_not_end_in_time_raises_and_nothing_starts(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    """No worker: the termination is never processed, so the instance never ends."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    client.schedule_new_orchestration("orch", instance_id="stuck")
    starter = SingletonStarter(
        client, lock=FileLease(tmp_path), options=StarterOptions(clock_skew=0, background_finish=False)
    )
    with pytest.raises(TerminateError, match="terminate_timeout") as raised:
        starter.start("orch", instance_id="stuck", on_conflict=TERMINATE, terminate_timeout=0.3)
    assert not raised.value.maybe_scheduled
    assert backend.ledger.snapshot().created["stuck"] == 1
    # the lease was released: the next caller gets an answer, not BUSY
    assert starter.start("orch", instance_id="stuck").outcome is StartOutcome.ALREADY_RUNNING
    client.close()


@pytest.mark.parametrize(
    "kw",
    [
        {"on_conflict": TERMINATE, "reuse": ReusePolicy.REJECT_DUPLICATE},
        {"on_conflict": TERMINATE, "terminate_timeout": 0},
        {"on_conflict": TERMINATE, "terminate_timeout": -1},
        {"on_conflict": TERMINATE, "terminate_timeout": float("nan")},
        {"on_conflict": TERMINATE, "terminate_timeout": "5"},
        {"terminate_timeout": 10**6},
    ],
    ids=repr,
)
def test_bad_terminate_settings_are_refused_before_any_lease(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, kw: dict[str, Any]
) -> None:
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    with pytest.raises(InvalidArgumentError):
        starter.start("orch", instance_id="bad-terminate", **kw)
    assert list(tmp_path.iterdir()) == []
    assert strict_singleton_durable_backend.ledger.snapshot().created["bad-terminate"] == 0
    client.close()


# -- the same flow in memory (strict_singleton.testing.world): no worker, no gRPC ------------


def _flow_run(world: Any, **call_kw: Any) -> Any:
    from strict_singleton import _flow
    from strict_singleton._validation import StartCall, config_of
    from strict_singleton.testing.world import drive

    cfg = config_of(
        lease_ttl=1.0, confirm_visible=True, background_finish=False, max_instance_id_length=256,
        fetch_payloads=True, backend="sim", clock_skew=0.0,
    )  # fmt: skip
    call = StartCall("m", "orch", None, {}, None, None, on_conflict=TERMINATE, **call_kw)
    flow = _flow.start_flow(call, cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    return drive(flow, world)


def test_in_memory_a_slow_termination_is_waited_for_renewing_the_lease() -> None:
    from strict_singleton.testing.world import World

    world = World(profile="atomic")
    world.backend.schedule("m", {})
    old = world.backend.read("m")
    world.clock.advance(1.0)
    world.backend.terminate_lag = 2.5  # longer than the 1 s lease: it must be renewed meanwhile
    result = _flow_run(world, terminate_timeout=10.0)
    assert result.result.outcome is StartOutcome.STARTED and result.result.replaced == old
    assert world.backend.terminates == 1 and world.backend.created("m") == 2
    assert world.backend.overwritten("m") == 0


def test_in_memory_a_termination_that_never_ends_times_out_with_nothing_started() -> None:
    from strict_singleton.testing.world import World

    world = World(profile="atomic")
    world.backend.schedule("m", {})
    world.clock.advance(1.0)
    world.backend.terminate_lag = None
    with pytest.raises(TerminateError):
        _flow_run(world, terminate_timeout=3.0)
    assert world.backend.created("m") == 1 and world.store.holder("m") is None
