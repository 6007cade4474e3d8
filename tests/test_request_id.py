"""request_id: a retried start finds what the earlier call with the same request ID
did and does nothing new (``result.deduplicated``). Driven in memory
(``strict_singleton.testing.world``): each case states the store's and the backend's
history and counts what happened in the backend.
"""

from __future__ import annotations

from typing import Any

import pytest
from durabletask.client import OrchestrationStatus

from strict_singleton import _flow
from strict_singleton._validation import REQUEST_ID_TAG, StartCall, StarterConfig
from strict_singleton.errors import LeaseLostError, LockUnavailableError, ScheduleError, SignalError
from strict_singleton.policies import ConflictPolicy
from strict_singleton.result import StartOutcome
from strict_singleton.testing.world import DEFAULT, RpcError, World, drive
from suite_helpers import flow_config

IID = "job-1"


def config(**overrides: Any) -> StarterConfig:
    return flow_config(**{"visibility_timeout": 2.0, "ambiguity_timeout": 1.0, "request_records": True, **overrides})


def call(request_id: str | None = "req-1", **kw: Any) -> StartCall:
    return StartCall(
        instance_id=IID,
        orchestrator="orch",
        input=None,
        tags={},
        version=None,
        start_at=None,
        request_id=request_id,
        **kw,
    )


def run(world: World, c: StartCall, token: str, intercept: Any = None, log: list[Any] | None = None, **cfg: Any) -> Any:
    """A whole start as an inline driver runs it: start_flow, then finish_flow; raises a flow's error."""
    conf = config(**cfg)
    result = drive(
        _flow.start_flow(c, conf, token=token, backend="sim", clock=world.clock, wall_clock=world.clock.wall),
        world,
        intercept,
        log=log,
    )
    if result.hold is not None:
        finish = _flow.finish_flow(c, conf, result.hold, clock=world.clock, wall_clock=world.clock.wall)
        drive(finish, world, intercept, log=log)
    if result.error is not None:
        raise result.error
    return result.result


def kinds(log: list[Any]) -> list[str]:
    return [type(op).__name__ for op in log]


def late_schedule(world: World, delay: float) -> Any:
    """The schedule request is held in the backend and executes ``delay`` s later; the caller sees a deadline."""

    def intercept(op: Any) -> Any:
        if isinstance(op, _flow.Schedule):
            world.backend.schedule_later(op.call.instance_id, op.tags, delay)
            raise RpcError("DEADLINE_EXCEEDED")
        return DEFAULT

    return intercept


# -- an ambiguous failure, then a retry ------------------------------------------------


def test_a_retry_after_maybe_scheduled_finds_the_instance_its_request_created() -> None:
    world = World()
    with pytest.raises(ScheduleError) as err:
        run(world, call(), "a", late_schedule(world, 10.0))
    assert err.value.maybe_scheduled and "request_id='req-1'" in str(err.value)
    assert world.backend.created(IID) == 0
    world.clock.advance(10.0)  # the held request executes after the caller gave up
    assert world.backend.created(IID) == 1
    log: list[Any] = []
    result = run(world, call(), "b", log=log)
    assert result.outcome is StartOutcome.STARTED and result.deduplicated
    assert result.existing is not None and result.existing.runtime_status is OrchestrationStatus.RUNNING
    assert "Schedule" not in kinds(log)
    assert world.backend.created(IID) == 1
    assert world.backend.instances[IID].tags[REQUEST_ID_TAG] == "req-1"


def test_the_same_retry_without_the_request_id_is_only_told_it_is_running() -> None:
    world = World()
    with pytest.raises(ScheduleError):
        run(world, call(), "a", late_schedule(world, 10.0))
    world.clock.advance(10.0)
    other = run(world, call("req-2"), "b")
    plain = run(world, call(None), "c")
    assert (other.outcome, other.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)
    assert (plain.outcome, plain.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)
    assert world.backend.created(IID) == 1


def test_a_retry_whose_earlier_request_never_executed_starts_it_now() -> None:
    world = World()

    def lost(op: Any) -> Any:
        if isinstance(op, _flow.Schedule):
            raise RpcError("UNAVAILABLE")  # the request never reached the backend
        return DEFAULT

    with pytest.raises(ScheduleError):
        run(world, call(), "a", lost)
    result = run(world, call(), "b")
    assert (result.outcome, result.deduplicated) == (StartOutcome.STARTED, False)
    assert world.backend.created(IID) == 1


# -- a matching request ID wins over every policy ----------------------------------


@pytest.mark.parametrize("policy", list(ConflictPolicy), ids=lambda p: p.name)
def test_a_retry_after_success_is_deduplicated_under_every_conflict_policy(policy: ConflictPolicy) -> None:
    world = World()
    first = run(world, call(), "a")
    assert (first.outcome, first.deduplicated) == (StartOutcome.STARTED, False)
    log: list[Any] = []
    again = run(world, call(on_conflict=policy), "b", log=log)
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert again.fencing_token == first.fencing_token
    assert "Schedule" not in kinds(log) and "Terminate" not in kinds(log)
    assert world.backend.created(IID) == 1 and world.backend.terminates == 0


def test_a_retry_finds_its_finished_instance_and_does_not_start_another() -> None:
    world = World()
    run(world, call(), "a")
    world.backend.finish(IID)
    again = run(world, call(), "b")
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert again.existing is not None and again.existing.runtime_status is OrchestrationStatus.COMPLETED
    assert world.backend.created(IID) == 1


def test_a_later_start_without_a_request_id_leaves_a_tombstone() -> None:
    """After the request's instance finished and a plain start made a new one, the retry
    must not claim the new one as its own."""
    world = World()
    run(world, call(), "a")
    world.backend.finish(IID)
    assert run(world, call(None), "b").outcome is StartOutcome.STARTED
    stored = world.store.last_request(IID)
    assert stored is not None and stored.request_id is None
    again = run(world, call(), "c")
    assert (again.outcome, again.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)
    assert world.backend.created(IID) == 2


def test_a_start_without_a_request_id_writes_nothing_when_no_request_is_remembered() -> None:
    world, log = World(), []
    run(world, call(None), "a", log=log)
    assert "RecordRequest" not in kinds(log)


def test_an_expired_request_record_is_not_a_match() -> None:
    world = World()
    run(world, call(), "a", request_ttl=5.0)
    record, _ = world.store.requests[IID]
    world.store.requests[IID] = (record, float("inf"))  # a store without key expiry (file, Blob)
    world.clock.advance(5.0 + 5.0 + 0.1)  # the TTL, then the clock-skew allowance
    again = run(world, call(), "b", request_ttl=5.0)
    assert (again.outcome, again.deduplicated) == (StartOutcome.ALREADY_RUNNING, False)


def test_a_retry_waiting_for_the_lease_decides_under_it_not_on_a_lockless_read() -> None:
    world = World()
    run(world, call(), "a")
    world.store.acquire(IID, "someone-else", 0.5)  # a holder; the retry waits, then wakes
    log: list[Any] = []
    again = run(world, call(), "b", log=log)
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert kinds(log).count("Acquire") >= 2


# -- the record is written before anything is sent; failing closed ---------------------


def test_the_request_record_is_written_under_the_lease_before_the_schedule() -> None:
    world, log = World(), []
    run(world, call(), "a", log=log)
    k = kinds(log)
    assert k.index("RecordRequest") < k.index("Schedule")
    record = next(op.record for op in log if isinstance(op, _flow.RecordRequest))
    assert (record.request_id, record.action, record.event) == ("req-1", "start", "")


def test_a_store_that_cannot_take_the_request_record_means_nothing_is_scheduled() -> None:
    world, log = World(), []

    def down(op: Any) -> Any:
        if isinstance(op, _flow.RecordRequest):
            raise LockUnavailableError("down", instance_id=IID, backend="sim")
        return DEFAULT

    with pytest.raises(LockUnavailableError):
        run(world, call(), "a", down, log=log)
    assert "Schedule" not in kinds(log) and world.backend.created(IID) == 0
    assert world.store.holder(IID) is None


def test_a_refused_request_record_is_a_lost_lease_and_nothing_is_scheduled() -> None:
    world, log = World(), []
    with pytest.raises(LeaseLostError):
        run(world, call(), "a", lambda op: False if isinstance(op, _flow.RecordRequest) else DEFAULT, log=log)
    assert "Schedule" not in kinds(log) and world.backend.created(IID) == 0


def test_a_tombstone_that_cannot_be_written_means_nothing_is_scheduled() -> None:
    world = World()
    run(world, call(), "a")
    world.backend.finish(IID)

    def down(op: Any) -> Any:
        if isinstance(op, _flow.RecordRequest):
            raise LockUnavailableError("down", instance_id=IID, backend="sim")
        return DEFAULT

    with pytest.raises(LockUnavailableError):
        run(world, call(None), "b", down)
    assert world.backend.created(IID) == 1


def test_a_definite_schedule_failure_clears_the_request_record() -> None:
    world = World()

    def refused(op: Any) -> Any:
        if isinstance(op, _flow.Schedule):
            raise RpcError("INVALID_ARGUMENT")
        return DEFAULT

    with pytest.raises(ScheduleError) as err:
        run(world, call(), "a", refused)
    assert not err.value.maybe_scheduled
    stored = world.store.last_request(IID)
    assert stored is not None and stored.request_id is None


# -- start_or_signal: the start once, the event never twice ----------------------------


def signal_call(request_id: str | None = "req-1") -> StartCall:
    return call(request_id, signal=("item", "payload"))


def test_start_or_signal_retry_after_start_and_event_does_nothing_new() -> None:
    world, log = World(), []
    first = run(world, signal_call(), "a")
    again = run(world, signal_call(), "b", log=log)
    assert first.outcome is StartOutcome.STARTED
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert "RaiseEvent" not in kinds(log) and "Schedule" not in kinds(log)
    assert len(world.backend.events) == 1 and world.backend.created(IID) == 1


def test_start_or_signal_retry_after_a_signal_does_not_raise_it_again() -> None:
    world = World()
    run(world, call(None), "a")  # an active instance
    first = run(world, signal_call(), "b")
    log: list[Any] = []
    again = run(world, signal_call(), "c", log=log)
    assert first.outcome is StartOutcome.SIGNALED
    assert (again.outcome, again.deduplicated) == (StartOutcome.SIGNALED, True)
    assert "RaiseEvent" not in kinds(log)
    assert len(world.backend.events) == 1


def test_start_or_signal_retry_after_an_ambiguous_event_says_so_and_does_not_raise() -> None:
    world = World()
    run(world, call(None), "a")

    def flaky(op: Any) -> Any:
        if isinstance(op, _flow.RaiseEvent):
            raise RpcError("UNAVAILABLE")
        return DEFAULT

    with pytest.raises(SignalError) as first:
        run(world, signal_call(), "b", flaky)
    assert first.value.maybe_delivered
    log: list[Any] = []
    with pytest.raises(SignalError) as again:
        run(world, signal_call(), "c", log=log)
    assert again.value.maybe_delivered and not again.value.started
    assert "RaiseEvent" not in kinds(log)
    assert world.store.holder(IID) is None


def test_start_or_signal_retry_after_a_surely_failed_event_raises_it() -> None:
    world = World()
    run(world, call(None), "a")
    failing = {"on": True}

    def refused(op: Any) -> Any:
        if isinstance(op, _flow.RaiseEvent) and failing["on"]:
            raise RpcError("INVALID_ARGUMENT")
        return DEFAULT

    with pytest.raises(SignalError) as first:
        run(world, signal_call(), "b", refused)
    assert not first.value.maybe_delivered
    failing["on"] = False
    again = run(world, signal_call(), "c")
    assert (again.outcome, again.deduplicated) == (StartOutcome.SIGNALED, False)
    assert len(world.backend.events) == 1


def test_start_or_signal_retry_after_start_with_a_surely_failed_event_raises_it_once() -> None:
    world = World()
    failing = {"on": True}

    def refused(op: Any) -> Any:
        if isinstance(op, _flow.RaiseEvent) and failing["on"]:
            raise RpcError("INVALID_ARGUMENT")
        return DEFAULT

    with pytest.raises(SignalError) as first:
        run(world, signal_call(), "a", refused)
    assert first.value.started and not first.value.maybe_delivered
    failing["on"] = False
    again = run(world, signal_call(), "b")
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert len(world.backend.events) == 1 and world.backend.created(IID) == 1
    third = run(world, signal_call(), "c")
    assert (third.outcome, third.deduplicated) == (StartOutcome.STARTED, True)
    assert len(world.backend.events) == 1


def test_start_or_signal_event_record_cannot_be_written_nothing_raised() -> None:
    world = World()
    run(world, call(None), "a")

    def down(op: Any) -> Any:
        if isinstance(op, _flow.RecordRequest):
            raise LockUnavailableError("down", instance_id=IID, backend="sim")
        return DEFAULT

    with pytest.raises(LockUnavailableError):
        run(world, signal_call(), "b", down)
    assert world.backend.events == [] and world.store.holder(IID) is None


# -- signals, late starts and stale reads between a request and its retry --------------


def test_another_requests_signal_does_not_displace_a_start() -> None:
    """start_or_signal(r1) starts, start_or_signal(r2) signals; r1's retry is still
    r1's start (deduplicated) and its event is not raised again; r2's retry is deduplicated too."""
    world = World()
    assert run(world, call("r1", signal=("item", "r1")), "a").outcome is StartOutcome.STARTED
    assert run(world, call("r2", signal=("item", "r2")), "b").outcome is StartOutcome.SIGNALED
    again = run(world, call("r1", signal=("item", "r1")), "c")
    other = run(world, call("r2", signal=("item", "r2")), "d")
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert (other.outcome, other.deduplicated) == (StartOutcome.SIGNALED, True)
    assert [e[3] for e in world.backend.events] == ["r1", "r2"]


def test_a_signal_never_makes_a_start_retry_terminate_its_own_instance() -> None:
    """start(r1), start_or_signal(r2), then start(r1, TERMINATE_EXISTING) after clock_skew."""
    world = World()
    run(world, call("r1"), "a")
    run(world, call("r2", signal=("item", "x")), "b")
    world.clock.advance(6.0)
    log: list[Any] = []
    again = run(world, call("r1", on_conflict=ConflictPolicy.TERMINATE_EXISTING), "c", log=log)
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert "Terminate" not in kinds(log) and world.backend.created(IID) == 1


def test_signal_entries_survive_a_later_start() -> None:
    world = World()
    run(world, call(None), "a")
    run(world, call("r2", signal=("item", "x")), "b")
    world.backend.finish(IID)
    assert run(world, call(None), "c").outcome is StartOutcome.STARTED  # a tombstone, signals kept
    again = run(world, call("r2", signal=("item", "x")), "d")
    assert (again.outcome, again.deduplicated) == (StartOutcome.SIGNALED, True)
    assert len(world.backend.events) == 1


def test_start_or_signal_whose_schedule_was_ambiguous_raises_its_event_on_retry() -> None:
    """The event was surely never raised (the schedule's outcome was unknown);
    the retry that finds the instance raises it, once."""
    world = World()
    with pytest.raises(ScheduleError):
        run(world, call("r1", signal=("item", "x")), "a", late_schedule(world, 10.0))
    world.clock.advance(10.0)
    again = run(world, call("r1", signal=("item", "x")), "b")
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    assert len(world.backend.events) == 1 and world.backend.created(IID) == 1
    third = run(world, call("r1", signal=("item", "x")), "c")
    assert third.deduplicated and len(world.backend.events) == 1


def landing_before_send(world: World) -> Any:
    """Every held request executes right before the next schedule is sent (it lands first)."""

    def intercept(op: Any) -> Any:
        if isinstance(op, _flow.Schedule):
            for item in list(world.backend._queued):
                world.backend._queued.remove(item)
                world.backend.schedule(item[1], item[2])
        return DEFAULT

    return intercept


def test_already_exists_from_the_requests_own_late_start_is_deduplicated() -> None:
    """The retry's schedule is refused because the first call's held request lands first."""
    world = World(profile="atomic")
    with pytest.raises(ScheduleError):
        run(world, call("r1"), "a", late_schedule(world, 10.0))
    again = run(world, call("r1", on_conflict=ConflictPolicy.FAIL), "b", landing_before_send(world))
    assert (again.outcome, again.deduplicated) == (StartOutcome.STARTED, True)
    third = run(world, call("r1"), "c")
    assert (third.outcome, third.deduplicated) == (StartOutcome.STARTED, True)
    assert world.backend.created(IID) == 1


def test_already_exists_in_start_or_signal_signals_under_a_record() -> None:
    """Another caller's late start lands first; the event goes to that instance under
    a signal record, and the retry does not raise it again."""
    world = World(profile="atomic")
    with pytest.raises(ScheduleError):
        run(world, call(None), "x", late_schedule(world, 100.0))  # held past the watch
    world.clock.advance(5.0)  # past the start record the watch left; the request is still held
    assert world.backend.created(IID) == 0
    first = run(world, call("r1", signal=("item", "x")), "a", landing_before_send(world))
    again = run(world, call("r1", signal=("item", "x")), "b")
    assert first.outcome is StartOutcome.SIGNALED
    assert (again.outcome, again.deduplicated) == (StartOutcome.SIGNALED, True)
    assert len(world.backend.events) == 1 and world.backend.created(IID) == 1


def test_a_retry_does_not_claim_the_predecessor_seen_active_again() -> None:
    """The request never executed; the instance it would have replaced shows as
    active again (rewound, or a stale read): not this request's instance."""
    world = World()
    run(world, call(None), "a")
    world.backend.finish(IID, OrchestrationStatus.FAILED)
    world.clock.advance(30.0)

    def lost(op: Any) -> Any:
        if isinstance(op, _flow.Schedule):
            raise RpcError("UNAVAILABLE")
        return DEFAULT

    with pytest.raises(ScheduleError):
        run(world, call("r1"), "b", lost)
    world.backend.instances[IID].status = OrchestrationStatus.RUNNING
    retry = run(world, call("r1"), "c")
    assert not retry.deduplicated and retry.outcome is StartOutcome.ALREADY_RUNNING
