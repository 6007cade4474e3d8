"""ConflictPolicy.TERMINATE_EXISTING (issue 14) with a real TaskHubGrpcWorker: the active
instance is terminated under the lease, the new one started once it has ended, and in a
wave of overlapping callers exactly one replacement happens."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
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
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_threads
from suite_helpers import poll_until, running_worker, wait_for_finish

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


SKEW = 0.5


def older_than_skew(state: Any) -> None:
    """Wait until ``state`` was created more than SKEW ago: only then is it not this wave's."""
    created = state.created_at.replace(tzinfo=timezone.utc)
    poll_until(lambda: datetime.now(timezone.utc) > created + timedelta(seconds=SKEW), 30, "the instance to age")


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
        with SingletonStarter(client, lock=FileLease(tmp_path), clock_skew=0) as starter:
            result = starter.start(wait_for_finish, instance_id="t1", on_conflict=TERMINATE)
    else:

        async def go() -> Any:
            aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
            async with AsyncSingletonStarter(aclient, lock=AsyncFileLease(tmp_path), clock_skew=0) as starter:
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
def test_a_wave_of_terminate_callers_replaces_exactly_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    """16 concurrent TERMINATE_EXISTING callers x 20 rounds against a running instance:
    one terminate and one new instance per round; the others ALREADY_RUNNING with it."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    # clock_skew is how long after a replacement a late-starting call of the wave still takes it
    # as its answer (threads released by one barrier do not all begin at once on two cores).
    starter = SingletonStarter(client, lock=FileLease(tmp_path), clock_skew=SKEW)
    for r in range(20):
        iid = f"wave-{r}"
        old = running(client, backend, iid)
        older_than_skew(old)
        recs = fire_threads(
            16, lambda _i, iid=iid: starter.start(wait_for_finish, instance_id=iid, on_conflict=TERMINATE)
        )  # fmt: skip
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


def test_an_instance_that_does_not_end_in_time_raises_and_nothing_starts(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    """No worker: the termination is never processed, so the instance never ends."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    client.schedule_new_orchestration("orch", instance_id="stuck")
    starter = SingletonStarter(client, lock=FileLease(tmp_path), clock_skew=0, background_finish=False)
    with pytest.raises(TerminateError, match="terminate_timeout") as raised:
        starter.start("orch", instance_id="stuck", on_conflict=TERMINATE, terminate_timeout=0.3)
    assert not raised.value.maybe_scheduled
    assert backend.ledger.snapshot().created["stuck"] == 1
    # the lease was released: the next caller gets an answer, not BUSY
    assert starter.start("orch", instance_id="stuck").outcome is StartOutcome.ALREADY_RUNNING
    client.close()


def test_an_instance_created_after_the_call_began_is_its_answer(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    """clock_skew widens "after the call began" backwards: an instance created within it
    counts as this wave's and is not terminated (the documented trade-off)."""
    backend = strict_singleton_durable_backend
    client = TaskHubGrpcClient(host_address=backend.address)
    running(client, backend, "recent")
    starter = SingletonStarter(client, lock=FileLease(tmp_path), clock_skew=3600)
    result = starter.start(wait_for_finish, instance_id="recent", on_conflict=TERMINATE)
    assert result.outcome is StartOutcome.ALREADY_RUNNING and terminates(backend, "recent") == 0
    starter.close()
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
    from strict_singleton._validation import StartCall, build_config
    from strict_singleton.testing.world import drive

    cfg = build_config(
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
