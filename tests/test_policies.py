"""Conflict and reuse policies: each policy x outcome on the sync and
async starters, on the ``atomic`` and ``overwrite`` profiles, over real gRPC; the schedule
request carries the same reuse rule, so an atomic backend enforces it without the lease."""

from __future__ import annotations

import asyncio
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton import (
    AlreadyRunningError,
    AsyncSingletonStarter,
    ConflictPolicy,
    InvalidArgumentError,
    ReusePolicy,
    SingletonStarter,
    StartOutcome,
)
from strict_singleton._harness.strategies import UnsafeNoLease
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_threads

PROFILES = pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)
API = pytest.mark.parametrize("starter", ["sync", "async"], indirect=True)


class Starter:
    """One starter of either kind, called the same way (so sync and async run one suite)."""

    def __init__(self, api: str, backend: DurableTestBackend, directory: Path) -> None:
        self.api = api
        if api == "sync":
            self.client: Any = TaskHubGrpcClient(host_address=backend.address)
            self.starter: Any = SingletonStarter(
                self.client, lock=FileLease(directory), options=StarterOptions(background_finish=False)
            )
        else:
            self.loop = asyncio.new_event_loop()
            self.client = AsyncTaskHubGrpcClient(host_address=backend.address)
            self.starter = AsyncSingletonStarter(
                self.client, lock=AsyncFileLease(directory), options=StarterOptions(background_finish=False)
            )

    def start(self, instance_id: str, **kw: Any) -> Any:
        if self.api == "sync":
            return self.starter.start("orch", instance_id=instance_id, **kw)
        return self.loop.run_until_complete(self.starter.start("orch", instance_id=instance_id, **kw))

    def close(self) -> None:
        if self.api == "sync":
            self.starter.close()
            self.client.close()
        else:
            self.loop.run_until_complete(self.starter.aclose())
            self.loop.run_until_complete(self.client.close())
            self.loop.close()


@pytest.fixture
def starter(
    request: pytest.FixtureRequest, strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> Any:
    s = Starter(request.param, strict_singleton_durable_backend, tmp_path)
    yield s
    s.close()


def created(backend: DurableTestBackend, iid: str) -> int:
    return backend.ledger.snapshot().created[iid]


# -- conflict policies ------------------------------------------------------------------------


@PROFILES
@API
def test_use_existing_is_the_default(starter: Starter, strict_singleton_durable_backend: DurableTestBackend) -> None:
    assert starter.start("c1").outcome is StartOutcome.STARTED
    again = starter.start("c1", on_conflict=ConflictPolicy.USE_EXISTING)
    assert again.outcome is StartOutcome.ALREADY_RUNNING and again.existing is not None
    assert starter.start("c1").outcome is StartOutcome.ALREADY_RUNNING
    assert created(strict_singleton_durable_backend, "c1") == 1


@PROFILES
@API
def test_fail_raises_with_the_existing_instance_and_schedules_nothing(
    starter: Starter, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    assert starter.start("c2").outcome is StartOutcome.STARTED
    with pytest.raises(AlreadyRunningError) as raised:
        starter.start("c2", on_conflict=ConflictPolicy.FAIL)
    error = raised.value
    assert error.existing is not None and error.existing.instance_id == "c2"
    assert not error.maybe_scheduled and error.instance_id == "c2"
    assert created(strict_singleton_durable_backend, "c2") == 1
    # the lease was released: the next call is answered at once, not BUSY
    assert starter.start("c2").outcome is StartOutcome.ALREADY_RUNNING


@PROFILES
@API
def test_fail_on_a_finished_instance_starts(
    starter: Starter, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    assert starter.start("c3").outcome is StartOutcome.STARTED
    strict_singleton_durable_backend.finish_instance("c3")
    assert starter.start("c3", on_conflict=ConflictPolicy.FAIL).outcome is StartOutcome.STARTED
    assert created(strict_singleton_durable_backend, "c3") == 2


@PROFILES
def test_a_wave_of_fail_callers_one_starts_the_others_raise(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    for r in range(5):
        iid = f"wave-{r}"
        recs = fire_threads(8, lambda _i, iid=iid: starter.start("orch", instance_id=iid, on_conflict="fail"))
        started = [rec for rec in recs if not rec.raised and rec.value.outcome is StartOutcome.STARTED]
        failed = [rec for rec in recs if rec.raised and isinstance(rec.value, AlreadyRunningError)]
        assert len(started) == 1 and len(failed) == 7, [rec.value for rec in recs]
        assert created(strict_singleton_durable_backend, iid) == 1
    starter.close()
    client.close()


# -- reuse policies ---------------------------------------------------------------------------

FINISHED = [
    pytest.param(pb.ORCHESTRATION_STATUS_COMPLETED, id="completed"),
    pytest.param(pb.ORCHESTRATION_STATUS_FAILED, id="failed"),
    pytest.param(pb.ORCHESTRATION_STATUS_TERMINATED, id="terminated"),
]
EXPECTED = {
    ReusePolicy.ALLOW_DUPLICATE: {"completed": True, "failed": True, "terminated": True},
    ReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY: {"completed": False, "failed": True, "terminated": True},
    ReusePolicy.REJECT_DUPLICATE: {"completed": False, "failed": False, "terminated": False},
}
NAMES = {
    pb.ORCHESTRATION_STATUS_COMPLETED: "completed",
    pb.ORCHESTRATION_STATUS_FAILED: "failed",
    pb.ORCHESTRATION_STATUS_TERMINATED: "terminated",
}


@PROFILES
@API
@pytest.mark.parametrize("reuse", list(ReusePolicy), ids=lambda p: p.name)
@pytest.mark.parametrize("status", FINISHED)
def test_reuse_policy_decides_whether_a_finished_instance_is_replaced(
    starter: Starter, strict_singleton_durable_backend: DurableTestBackend, reuse: ReusePolicy, status: int
) -> None:
    iid = f"r-{reuse.name}-{status}"
    assert starter.start(iid).outcome is StartOutcome.STARTED
    strict_singleton_durable_backend.finish_instance(iid, status)
    result = starter.start(iid, reuse=reuse)
    if EXPECTED[reuse][NAMES[status]]:
        assert result.outcome is StartOutcome.STARTED
        assert created(strict_singleton_durable_backend, iid) == 2
    else:
        assert result.outcome is StartOutcome.ALREADY_COMPLETED
        assert result.existing is not None and result.existing.runtime_status is OrchestrationStatus(status)
        assert created(strict_singleton_durable_backend, iid) == 1


@API
@pytest.mark.parametrize("reuse", list(ReusePolicy), ids=lambda p: p.name)
def test_reuse_policy_on_a_fresh_id_starts(starter: Starter, reuse: ReusePolicy) -> None:
    assert starter.start(f"fresh-{reuse.name}", reuse=reuse).outcome is StartOutcome.STARTED


@pytest.mark.parametrize("reuse", list(ReusePolicy), ids=lambda p: p.name)
@pytest.mark.parametrize("status", FINISHED)
def test_the_request_carries_the_same_rule_and_an_atomic_backend_enforces_it(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, reuse: ReusePolicy, status: int
) -> None:
    """Bypassing the lease: the very request the starter builds, sent to the atomic backend."""
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    iid = f"second-line-{reuse.name}-{status}"
    client.schedule_new_orchestration("orch", instance_id=iid)
    strict_singleton_durable_backend.finish_instance(iid, status)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    call, _token = starter._prepare(
        orchestrator="orch", instance_id=iid, input=None, tags=None, version=None, reuse=reuse
    )
    assert list(call.request.orchestrationIdReusePolicy.replaceableStatus) == list(reuse.replaceable)
    if EXPECTED[reuse][NAMES[status]]:
        client._stub.StartInstance(call.request, timeout=30)
        assert created(strict_singleton_durable_backend, iid) == 2
    else:
        with pytest.raises(grpc.RpcError) as raised:
            client._stub.StartInstance(call.request, timeout=30)
        assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert created(strict_singleton_durable_backend, iid) == 1
    client.close()


def test_a_broken_lock_and_reject_duplicate_the_backend_still_starts_one(
    strict_singleton_durable_backend: DurableTestBackend,
) -> None:
    """The atomic backend as the second line: with no lease at all, REJECT_DUPLICATE's empty
    list still lets exactly one of 16 callers create the instance; the rest ALREADY_RUNNING."""
    strict_singleton_durable_backend.latency = 0.002
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=UnsafeNoLease(), options=StarterOptions(background_finish=False))
    recs = fire_threads(16, lambda _i: starter.start("orch", instance_id="nolease", reuse=ReusePolicy.REJECT_DUPLICATE))
    assert not [rec.value for rec in recs if rec.raised]
    counts = Counter(rec.value.outcome for rec in recs)
    assert counts[StartOutcome.STARTED] == 1 and counts[StartOutcome.ALREADY_RUNNING] == 15, counts
    assert created(strict_singleton_durable_backend, "nolease") == 1
    client.close()


# -- bad input --------------------------------------------------------------------------------


@API
@pytest.mark.parametrize(
    "kw",
    [
        {"reuse": "bogus"},
        {"reuse": 1},
        {"reuse": None},
        {"on_conflict": "TERMINATE"},
        {"on_conflict": 0},
        {"on_conflict": ReusePolicy.REJECT_DUPLICATE},
        {"reuse": ConflictPolicy.FAIL},
    ],
    ids=repr,
)
def test_unknown_policy_values_are_refused_before_any_lease(
    starter: Starter, strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, kw: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        starter.start("bad-policy", **kw)
    assert list(tmp_path.iterdir()) == []  # no lock file: no lease was taken
    assert created(strict_singleton_durable_backend, "bad-policy") == 0


@API
def test_policy_values_may_be_given_by_name(starter: Starter) -> None:
    assert starter.start("by-name", reuse="reject_duplicate", on_conflict="use_existing").started
    with pytest.raises(AlreadyRunningError):
        starter.start("by-name", on_conflict="fail")


def test_already_running_error_pickles_with_what_it_saw() -> None:
    error = AlreadyRunningError("exists", instance_id="x", backend="file(/d)", existing={"status": "RUNNING"})
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, AlreadyRunningError) and copy.existing == {"status": "RUNNING"}
    assert copy.instance_id == "x" and not copy.maybe_scheduled


# -- the flow's branches, in memory (no gRPC): the backend's ALREADY_EXISTS answer -----------


def _world_flow(on_conflict: ConflictPolicy, reuse: ReusePolicy, existing_status: OrchestrationStatus) -> Any:
    from strict_singleton import _flow
    from strict_singleton._validation import StartCall, config_of
    from strict_singleton.testing.world import DEFAULT, RpcError, World, drive

    world = World(profile="atomic")
    world.backend.schedule("w", {})
    if existing_status is not OrchestrationStatus.RUNNING:
        world.backend.finish("w", existing_status)
    cfg = config_of(
        lease_ttl=10.0, confirm_visible=True, background_finish=False, max_instance_id_length=256,
        fetch_payloads=True, backend="sim",
    )  # fmt: skip
    call = StartCall("w", "orch", None, {}, None, None, reuse=reuse, on_conflict=on_conflict)
    reads = [0]

    def stale_first_read(op: Any) -> Any:
        if isinstance(op, _flow.Read):
            reads[0] += 1
            if reads[0] == 1:
                return None  # a stale read under the lease: the backend's dedupe must answer
        if isinstance(op, _flow.Schedule):
            raise RpcError("ALREADY_EXISTS")
        return DEFAULT

    flow = _flow.start_flow(call, cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    return lambda: drive(flow, world, stale_first_read), world


def test_already_exists_on_a_finished_instance_is_already_completed() -> None:
    run, world = _world_flow(ConflictPolicy.USE_EXISTING, ReusePolicy.REJECT_DUPLICATE, OrchestrationStatus.COMPLETED)
    result = run()
    assert result.result.outcome is StartOutcome.ALREADY_COMPLETED and world.store.holder("w") is None


def test_already_exists_on_an_active_instance_is_already_running_or_fails() -> None:
    run, _ = _world_flow(ConflictPolicy.USE_EXISTING, ReusePolicy.ALLOW_DUPLICATE, OrchestrationStatus.RUNNING)
    assert run().result.outcome is StartOutcome.ALREADY_RUNNING
    run, world = _world_flow(ConflictPolicy.FAIL, ReusePolicy.ALLOW_DUPLICATE, OrchestrationStatus.RUNNING)
    with pytest.raises(AlreadyRunningError):
        run()
    assert world.store.holder("w") is None
