"""The start flow driven in memory: every branch of ``_flow``, no gRPC, no lock store.

Each test runs the real ``start_flow`` / ``finish_flow`` generators against
``strict_singleton.testing.world`` (a virtual clock, a lock store with TTLs, a Durable
backend with a ledger), scripting faults by intercepting single operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from durabletask.client import OrchestrationStatus

from strict_singleton import _drift, _flow
from strict_singleton._flow import evidence
from strict_singleton._validation import FENCING_TAG, StartCall, StarterConfig
from strict_singleton.errors import LeaseLostError, LockUnavailableError, ScheduleError, StatusReadError
from strict_singleton.result import StartOutcome
from strict_singleton.testing.world import DEFAULT, RpcError, World, drive
from suite_helpers import flow_config

IID = "job-1"


def config(**overrides: Any) -> StarterConfig:
    return flow_config(**{"lease_ttl": 10.0, "ambiguity_timeout": 5.0, "start_records": False, **overrides})


def call(instance_id: str = IID) -> StartCall:
    return StartCall(instance_id=instance_id, orchestrator="orch", input=None, tags={}, version=None, start_at=None)


def start(world: World, cfg: StarterConfig, token: str = "A", *, instance_id: str = IID) -> _flow.Flow:
    return _flow.start_flow(
        call(instance_id), cfg, token=token, backend="sim", clock=world.clock, wall_clock=world.clock.wall
    )


def run_start(
    world: World,
    cfg: StarterConfig,
    intercept: Callable[[_flow.Op], Any] | None = None,
    *,
    token: str = "A",
    log: list[_flow.Op] | None = None,
) -> _flow.FlowResult:
    result: _flow.FlowResult = drive(start(world, cfg, token), world, intercept, log=log)
    return result


def run_full(world: World, cfg: StarterConfig, token: str = "A", **kw: Any) -> _flow.FlowResult:
    """start_flow then, when it holds the lease, finish_flow (as an inline driver does)."""
    result = run_start(world, cfg, token=token, **kw)
    if result.hold is not None:
        drive(_flow.finish_flow(call(), cfg, result.hold, clock=world.clock), world, kw.get("intercept"))
    return result


def kinds(log: list[_flow.Op]) -> list[str]:
    return [type(op).__name__ for op in log]


def when(kind: type, action: Callable[[Any], Any], *, times: int = 1) -> Callable[[_flow.Op], Any]:
    """An intercept that runs ``action(op)`` on the first ``times`` ops of ``kind``."""
    left = [times]

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, kind) and left[0] > 0:
            left[0] -= 1
            return action(op)
        return DEFAULT

    return intercept


def raise_(exc: BaseException) -> Callable[[Any], Any]:
    def action(_op: Any) -> Any:
        raise exc

    return action


# -- the plain paths -------------------------------------------------------------------


def test_fresh_id_is_started_with_the_fencing_tag_and_released_once_visible() -> None:
    world, log = World(), []
    result = run_full(world, config(), log=log)
    assert result.result.outcome is StartOutcome.STARTED and result.result.fencing_token == 1
    assert kinds(log)[:3] == ["Acquire", "Read", "Schedule"]  # no confirmation on a fast path
    schedule = next(op for op in log if isinstance(op, _flow.Schedule))
    assert schedule.tags[FENCING_TAG] == "1" and schedule.send_by is not None
    assert world.backend.created(IID) == 1 and world.store.holder(IID) is None


def test_ops_carry_their_own_arguments() -> None:
    world, log = World(), []
    cfg = config(lease_ttl=7.0)
    run_full(world, cfg, token="tok", log=log)
    acquire = log[0]
    assert acquire == _flow.Acquire(IID, "tok", 7.0)
    read = log[1]
    assert (read.instance_id, read.payloads) == (IID, True)
    # made under the lease: its deadline is inside the lease (the lease's deadline minus the reserve)
    assert read.send_by is not None and read.send_by <= 1000.0 + 7.0 - cfg.send_reserve


def test_active_instance_is_already_running_and_the_lease_released() -> None:
    world = World()
    world.backend.schedule(IID, {})
    result = run_start(world, config())
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING and result.hold is None
    assert result.result.existing is not None and world.store.holder(IID) is None
    assert world.backend.created(IID) == 1


@pytest.mark.parametrize("status", [OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED])
def test_terminal_instance_is_replaced(status: OrchestrationStatus) -> None:
    world = World()
    world.backend.schedule(IID, {})
    world.backend.finish(IID, status)
    assert run_full(world, config()).result.outcome is StartOutcome.STARTED
    assert world.backend.created(IID) == 2 and world.backend.overwritten(IID) == 0


def test_fetch_payloads_off_is_carried_by_every_read() -> None:
    world, log = World(), []
    run_full(world, config(fetch_payloads=False), log=log)
    assert all(not op.payloads for op in log if isinstance(op, _flow.Read))


# -- waiting for another holder -----------------------------------------------------------


def test_held_lease_and_no_wait_is_busy_after_one_look() -> None:
    world = World()
    world.store.acquire(IID, "other", 10.0)
    log: list[_flow.Op] = []
    result = run_start(world, config(wait=0.0), log=log)
    assert result.result.outcome is StartOutcome.BUSY and kinds(log) == ["Acquire", "Read"]


def test_held_lease_with_an_active_instance_is_already_running_without_waiting_out() -> None:
    world = World()
    world.backend.schedule(IID, {})
    world.store.acquire(IID, "other", 10.0)
    result = run_start(world, config(wait=0.0))
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING


def test_waiter_woken_by_the_holder_reads_once_and_answers_already_running() -> None:
    world = World()
    world.store.acquire(IID, "other", 10.0)

    def holder_finishes(op: _flow.Op) -> Any:
        world.backend.schedule(IID, {})
        world.store.release(IID, "other")
        return None

    log: list[_flow.Op] = []
    result = run_start(world, config(wait=1.0), when(_flow.WaitRelease, holder_finishes), log=log)
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING
    assert kinds(log) == ["Acquire", "WaitRelease", "Read"]
    assert log[1] == _flow.WaitRelease(IID, _flow.FIRST_WAIT)


def test_waiter_gets_the_lease_after_an_empty_release_and_starts() -> None:
    world = World()
    world.store.acquire(IID, "other", 10.0)
    released = when(_flow.WaitRelease, lambda op: world.store.release(IID, "other") and None)
    log: list[_flow.Op] = []
    result = run_full(world, config(wait=1.0), intercept=released, log=log)
    assert result.result.outcome is StartOutcome.STARTED
    assert kinds(log)[:4] == ["Acquire", "WaitRelease", "Read", "Acquire"]  # waited, woke, read, took it


def test_waiter_gives_up_busy_when_the_holder_keeps_it() -> None:
    world = World()
    world.store.acquire(IID, "other", 100.0)
    log: list[_flow.Op] = []
    result = run_start(world, config(wait=0.5), log=log)
    assert result.result.outcome is StartOutcome.BUSY
    # FIRST_WAIT, a look, then the rest of `wait` (virtual time), a last attempt, BUSY
    assert kinds(log) == ["Acquire", "WaitRelease", "Read", "Acquire", "WaitRelease", "Read", "Acquire"]
    waits = [op.timeout for op in log if isinstance(op, _flow.WaitRelease)]
    assert waits[0] == _flow.FIRST_WAIT and world.store.holder(IID) == "other"


# -- failures before scheduling ------------------------------------------------------------


def test_read_failure_under_the_lease_releases_and_says_nothing_was_scheduled() -> None:
    world = World()
    with pytest.raises(StatusReadError) as info:
        run_start(world, config(), when(_flow.Read, raise_(RpcError("UNAVAILABLE"))))
    assert not info.value.maybe_scheduled
    assert world.store.holder(IID) is None and world.backend.schedules == 0


def test_read_failure_while_waiting_is_a_status_read_error() -> None:
    world = World()
    world.store.acquire(IID, "other", 10.0)
    with pytest.raises(StatusReadError):
        run_start(world, config(wait=0.0), when(_flow.Read, raise_(RpcError("UNAVAILABLE"))))
    assert world.store.holder(IID) == "other"


def slow_read(world: World, seconds: float, then: Callable[[], None] = lambda: None) -> Callable[[_flow.Op], Any]:
    def action(op: Any) -> Any:
        world.clock.advance(seconds)
        then()
        return world.backend.read(op.instance_id)

    return when(_flow.Read, action)


def test_lease_lost_during_a_slow_read_is_caught_by_the_confirmation() -> None:
    """The key vanished while the read stalled (deleted, evicted, clock step)."""
    world = World()
    with pytest.raises(LeaseLostError):
        run_start(world, config(lease_ttl=30.0), slow_read(world, 1.0, lambda: world.store.lose(IID)))
    assert world.backend.schedules == 0


def test_lease_taken_by_another_during_a_slow_read_is_caught() -> None:
    world = World()

    def stolen() -> None:
        world.store.lose(IID)
        world.store.acquire(IID, "B", 30.0)

    with pytest.raises(LeaseLostError):
        run_start(world, config(lease_ttl=30.0), slow_read(world, 0.5, stolen))
    assert world.store.holder(IID) == "B" and world.backend.schedules == 0


def test_confirmation_only_after_the_bound() -> None:
    world, log = World(), []
    result = run_start(world, config(lease_ttl=30.0, confirm_after=0.2), slow_read(world, 0.3), log=log)
    assert result.result.outcome is StartOutcome.STARTED
    assert kinds(log) == ["Acquire", "Read", "Extend", "Schedule"]
    log2: list[_flow.Op] = []
    run_start(World(), config(lease_ttl=30.0, confirm_after=0.2), log=log2)
    assert "Extend" not in kinds(log2)


def test_confirm_after_zero_always_confirms() -> None:
    world, log = World(), []
    run_start(world, config(confirm_after=0.0), log=log)
    assert kinds(log) == ["Acquire", "Read", "Extend", "Schedule"]


def test_lease_past_its_deadline_is_never_renewed() -> None:
    world, log = World(), []
    with pytest.raises(LeaseLostError):
        run_start(world, config(lease_ttl=1.0), slow_read(world, 2.0), log=log)
    assert "Extend" not in kinds(log) and world.backend.schedules == 0


def test_renewal_refused_is_lease_lost() -> None:
    world = World()
    with pytest.raises(LeaseLostError):
        run_start(world, config(confirm_after=0.0), when(_flow.Extend, lambda op: False))
    assert world.backend.schedules == 0


def test_renewal_that_leaves_too_little_time_is_lease_lost() -> None:
    world = World()

    def slow_extend(op: Any) -> Any:
        world.clock.advance(9.0)
        return True

    with pytest.raises(LeaseLostError):
        run_start(world, config(confirm_after=0.0), when(_flow.Extend, slow_extend))
    assert world.backend.schedules == 0


def test_store_unreachable_at_confirmation_fails_closed_with_its_error() -> None:
    world = World()
    with pytest.raises(LockUnavailableError):
        run_start(world, config(confirm_after=0.0), when(_flow.Extend, raise_(LockUnavailableError("down"))))
    assert world.backend.schedules == 0


def test_old_lease_is_renewed_before_scheduling() -> None:
    world, log = World(), []
    run_start(world, config(lease_ttl=3.0, confirm_after=5.0), slow_read(world, 1.5), log=log)
    assert "Extend" in kinds(log)


def test_send_by_passed_before_sending_is_lease_lost_and_nothing_sent() -> None:
    """A pause (or a slow serialization) between the check and the send."""
    world = World()

    def paused(op: Any) -> Any:
        world.clock.advance(op.send_by - world.clock() + 0.001)
        return DEFAULT

    with pytest.raises(LeaseLostError):
        run_start(world, config(lease_ttl=1.0), when(_flow.Schedule, paused))
    assert world.backend.schedules == 0 and world.store.holder(IID) is None


def test_send_by_keeps_a_reserve_to_renew_after_a_timeout() -> None:
    world, log = World(), []
    cfg = config(lease_ttl=10.0)
    run_start(world, cfg, log=log)
    schedule = next(op for op in log if isinstance(op, _flow.Schedule))
    assert schedule.send_by is not None
    lease_end = 1000.0 + 10.0 - (10.0 * _drift.DRIFT_FACTOR + _drift.DRIFT_FLOOR)
    assert schedule.send_by == pytest.approx(lease_end - cfg.send_reserve)


def test_no_expiry_means_no_send_by() -> None:
    world, log = World(expiring=False), []
    run_start(world, config(), log=log)
    assert next(op for op in log if isinstance(op, _flow.Schedule)).send_by is None


# -- schedule failures ----------------------------------------------------------------------


def test_already_exists_is_already_running_with_the_existing_state() -> None:
    world = World(profile="atomic")

    def someone_else_first(op: Any) -> Any:
        world.backend.schedule(IID, {})
        return DEFAULT

    result = run_start(world, config(), when(_flow.Schedule, someone_else_first))
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING and result.result.existing is not None
    assert world.store.holder(IID) is None


def test_already_exists_with_a_failing_read_still_answers() -> None:
    world = World(profile="atomic")
    world.backend.schedule(IID, {})
    intercept_schedule = when(_flow.Schedule, raise_(RpcError("ALREADY_EXISTS")))
    reads = [0]

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Read):
            reads[0] += 1
            if reads[0] == 1:
                return None  # first read: nothing there yet
            raise RpcError("UNAVAILABLE")
        return intercept_schedule(op)

    result = run_start(world, config(), intercept)
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING and result.result.existing is None


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION"])
def test_definite_failure_releases_and_says_nothing_scheduled(code: str) -> None:
    world = World()
    with pytest.raises(ScheduleError) as info:
        run_start(world, config(), when(_flow.Schedule, raise_(RpcError(code))))
    assert not info.value.maybe_scheduled and info.value.grpc_code == code
    assert world.store.holder(IID) is None


@pytest.mark.parametrize("code", [*sorted(_flow.AMBIGUOUS_CODES), None])
def test_ambiguous_failure_holds_the_lease_through_the_window_then_raises(code: str | None) -> None:
    world = World()
    held_at_each_read: list[str | None] = []
    exc: Exception = RpcError(code) if code else ConnectionError("reset")

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Schedule):
            raise exc
        if isinstance(op, _flow.Read) and held_at_each_read is not None:
            held_at_each_read.append(world.store.holder(IID))
        return DEFAULT

    began = world.clock()
    with pytest.raises(ScheduleError) as info:
        run_start(world, config(lease_ttl=1.0, ambiguity_timeout=5.0), intercept)
    assert info.value.maybe_scheduled and info.value.grpc_code == code
    assert world.clock() - began >= 5.0  # virtual time: the whole window was watched
    assert set(held_at_each_read) == {"A"}  # ours throughout (renewed past the 1 s TTL)
    assert world.store.holder(IID) is None  # released after the window


def test_request_that_lands_late_is_reported_started_not_left_to_overwrite_the_next() -> None:
    """The deadline fired, the request still executes in the backend 3 s later."""
    world = World()

    def delayed(op: Any) -> Any:
        world.backend.schedule_later(op.call.instance_id, op.tags, 3.0)
        raise RpcError("DEADLINE_EXCEEDED")

    result = run_start(world, config(lease_ttl=1.0, ambiguity_timeout=10.0), when(_flow.Schedule, delayed))
    assert result.result.outcome is StartOutcome.STARTED
    assert world.store.holder(IID) is None
    second = run_start(world, config(lease_ttl=1.0), token="B")
    assert second.result.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 1 and world.backend.overwritten(IID) == 0


def test_an_old_instance_is_not_mistaken_for_ours() -> None:
    world = World()
    world.backend.schedule(IID, {})
    world.backend.finish(IID)
    with pytest.raises(ScheduleError) as info:
        run_start(world, config(ambiguity_timeout=1.0), when(_flow.Schedule, raise_(RpcError("DEADLINE_EXCEEDED"))))
    assert info.value.maybe_scheduled


def test_lease_lost_while_watching_gives_up_with_maybe_scheduled() -> None:
    world = World()

    def lost(op: Any) -> Any:
        world.store.lose(IID)
        raise RpcError("DEADLINE_EXCEEDED")

    with pytest.raises(ScheduleError) as info:
        run_start(world, config(lease_ttl=1.0, ambiguity_timeout=10.0), when(_flow.Schedule, lost))
    assert info.value.maybe_scheduled and "no longer ours" in str(info.value)


def test_store_down_while_watching_gives_up_with_maybe_scheduled() -> None:
    world = World()

    def down(op: Any) -> Any:
        world.store.down = True
        raise RpcError("UNAVAILABLE")

    with pytest.raises(ScheduleError) as info:
        run_start(world, config(lease_ttl=1.0, ambiguity_timeout=10.0), when(_flow.Schedule, down))
    assert info.value.maybe_scheduled and "could not renew" in str(info.value)


def test_failed_reads_while_watching_are_tolerated() -> None:
    world = World()
    reads = [0]

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Schedule):
            world.backend.schedule_later(IID, op.tags, 0.5)
            raise RpcError("UNAVAILABLE")
        if isinstance(op, _flow.Read):
            reads[0] += 1
            if 1 < reads[0] < 5:
                raise RpcError("UNAVAILABLE")
        return DEFAULT

    assert run_start(world, config(), intercept).result.outcome is StartOutcome.STARTED


def test_file_lease_after_an_ambiguous_failure_is_released_after_the_window() -> None:
    """A lease that never expires must not stay held after the window."""
    world = World(expiring=False)
    with pytest.raises(ScheduleError):
        run_start(world, config(ambiguity_timeout=2.0), when(_flow.Schedule, raise_(RpcError("UNAVAILABLE"))))
    assert world.store.holder(IID) is None
    assert run_full(world, config(), token="B").result.outcome is StartOutcome.STARTED


# -- abandonment (cancellation, interrupts) -----------------------------------------------------


def abandon_at(kind: type, world: World, cfg: StarterConfig, nth: int = 1) -> tuple[list[_flow.Op], BaseException]:
    """Run a start, throw Abandoned in at the ``nth`` op of ``kind``, drive the clean-up to its end."""
    flow = start(world, cfg)
    log: list[_flow.Op] = []
    seen = 0
    op = next(flow)
    while True:
        log.append(op)
        if isinstance(op, kind):
            seen += 1
            if seen == nth:
                if kind is _flow.Acquire:
                    world.answer(op)  # the store granted it; the answer never reached us
                break
        op = flow.send(world.answer(op))
    with pytest.raises(_flow.Abandoned) as info:
        drive_thrown(flow, world, log)
    return log, info.value


def drive_thrown(flow: _flow.Flow, world: World, log: list[_flow.Op]) -> None:
    op = flow.throw(_flow.Abandoned())
    while True:
        log.append(op)
        try:
            result = world.answer(op)
        except Exception as exc:
            op = flow.throw(exc)
        else:
            op = flow.send(result)


def test_abandoned_while_acquiring_releases_a_grant_that_never_arrived() -> None:
    world = World()
    log, _ = abandon_at(_flow.Acquire, world, config())
    assert isinstance(log[-1], _flow.Release) and world.store.holder(IID) is None


def test_abandoned_while_reading_releases() -> None:
    world = World()
    log, _ = abandon_at(_flow.Read, world, config())
    assert kinds(log)[-1] == "Release" and world.store.holder(IID) is None
    assert world.backend.schedules == 0


def test_abandoned_while_waiting_holds_nothing() -> None:
    world = World()
    world.store.acquire(IID, "other", 10.0)
    log, _ = abandon_at(_flow.WaitRelease, world, config(wait=1.0))
    assert "Release" not in kinds(log) and world.store.holder(IID) == "other"


def test_abandoned_while_scheduling_watches_then_releases() -> None:
    """A cancelled schedule may be in flight: watch for it, then release."""
    world = World()
    flow = start(world, config(lease_ttl=1.0))
    log: list[_flow.Op] = []
    op = next(flow)
    while not isinstance(op, _flow.Schedule):
        op = flow.send(world.answer(op))
    world.backend.schedule_later(IID, op.tags, 0.5)  # it was on its way
    with pytest.raises(_flow.Abandoned):
        drive_thrown(flow, world, log)
    assert "Read" in kinds(log) and kinds(log)[-1] == "Release"
    assert world.store.holder(IID) is None and world.backend.created(IID) == 1
    assert run_start(world, config(), token="B").result.outcome is StartOutcome.ALREADY_RUNNING


def test_abandoned_while_watching_goes_on_watching_within_the_same_window() -> None:
    world = World()
    flow = start(world, config(lease_ttl=1.0, ambiguity_timeout=2.0, visibility_timeout=0.5))
    op = next(flow)
    while not isinstance(op, _flow.Schedule):
        op = flow.send(world.answer(op))
    op = flow.throw(RpcError("DEADLINE_EXCEEDED"))
    while not isinstance(op, _flow.Sleep):
        op = flow.send(world.answer(op))
    began = world.clock()
    log: list[_flow.Op] = []
    with pytest.raises(_flow.Abandoned):
        drive_thrown(flow, world, log)
    assert world.clock() - began < 2.0 + 0.5 + 0.5 and kinds(log)[-1] == "Release"


def test_abandoned_while_releasing_releases_again() -> None:
    world = World()
    world.backend.schedule(IID, {})
    log, _ = abandon_at(_flow.Release, world, config())
    assert kinds(log)[-1] == "Release" and world.store.holder(IID) is None


# -- finish_flow: holding until visible -----------------------------------------------------------


def started(world: World, cfg: StarterConfig) -> _flow.FlowResult:
    result = run_start(world, cfg)
    assert result.hold is not None
    return result


def finish(world: World, cfg: StarterConfig, hold: _flow.Hold, intercept: Any = None, log: Any = None) -> None:
    drive(_flow.finish_flow(call(), cfg, hold, clock=world.clock), world, intercept, log=log)


def test_finish_releases_at_once_when_visible() -> None:
    world, log = World(), []
    cfg = config()
    finish(world, cfg, started(world, cfg).hold, log=log)  # type: ignore[arg-type]
    assert kinds(log) == ["Read", "Release"]


def test_finish_holds_and_renews_through_a_visibility_lag() -> None:
    world = World(profile="overwrite", visibility_lag=3.0)
    cfg = config(lease_ttl=1.0, visibility_timeout=10.0)
    hold = started(world, cfg).hold
    log: list[_flow.Op] = []
    holders: list[str | None] = []

    def watch(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Read):
            holders.append(world.store.holder(IID))
        return DEFAULT

    finish(world, cfg, hold, watch, log)  # type: ignore[arg-type]
    assert "Extend" in kinds(log) and set(holders) == {"A"} and kinds(log)[-1] == "Release"
    # a later caller now sees the instance
    assert run_start(world, cfg, token="B").result.outcome is StartOutcome.ALREADY_RUNNING


def test_finish_is_bounded_even_on_a_lease_that_never_expires() -> None:
    """Visibility never comes; the file lease is released after visibility_timeout."""
    world = World(expiring=False, visibility_lag=1e6)
    cfg = config(visibility_timeout=2.0)
    hold = started(world, cfg).hold
    began = world.clock()
    finish(world, cfg, hold)  # type: ignore[arg-type]
    assert world.store.holder(IID) is None and world.clock() - began >= 2.0


def test_finish_stops_when_the_lease_is_lost() -> None:
    world = World(visibility_lag=100.0)
    cfg = config(lease_ttl=1.0, visibility_timeout=50.0)
    hold = started(world, cfg).hold
    world.store.lose(IID)
    world.store.acquire(IID, "B", 1.0)
    log: list[_flow.Op] = []
    finish(world, cfg, hold, log=log)  # type: ignore[arg-type]
    assert world.store.holder(IID) == "B"  # the token-checked release left B's lease alone
    assert world.clock() < 1000.0 + 5.0


def test_finish_without_confirm_visible_releases_at_once() -> None:
    world, log = World(visibility_lag=10.0), []
    cfg = config(confirm_visible=False)
    finish(world, cfg, started(world, cfg).hold, log=log)  # type: ignore[arg-type]
    assert kinds(log) == ["Release"]


def test_finish_tolerates_failed_reads_and_release_errors() -> None:
    world = World(visibility_lag=0.1)
    cfg = config()
    hold = started(world, cfg).hold
    reads = [0]

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Read):
            reads[0] += 1
            if reads[0] < 3:
                raise RpcError("UNAVAILABLE")
        if isinstance(op, _flow.Release):
            raise LockUnavailableError("down")
        return DEFAULT

    finish(world, cfg, hold, intercept)  # type: ignore[arg-type]
    assert reads[0] >= 3


def test_finish_absorbs_abandonment_and_still_releases() -> None:
    world = World(visibility_lag=0.5)
    cfg = config(lease_ttl=1.0)
    hold = started(world, cfg).hold
    assert hold is not None
    flow = _flow.finish_flow(call(), cfg, hold, clock=world.clock)
    log: list[_flow.Op] = []
    op = next(flow)
    thrown = 0
    with pytest.raises(StopIteration):
        while True:
            log.append(op)
            if thrown < 6 and not isinstance(op, _flow.Release):  # abandon a few reads, sleeps, extends
                thrown += 1
                world.clock.advance(0.05)
                op = flow.throw(_flow.Abandoned())
            else:
                op = flow.send(world.answer(op))
    assert kinds(log)[-1] == "Release" and world.store.holder(IID) is None


def test_finish_store_down_during_renewal_gives_up_and_releases() -> None:
    world = World(visibility_lag=100.0)
    cfg = config(lease_ttl=1.0, visibility_timeout=50.0)
    hold = started(world, cfg).hold
    finish(world, cfg, hold, when(_flow.Extend, raise_(LockUnavailableError("down"))))  # type: ignore[arg-type]
    assert world.clock() < 1000.0 + 5.0


# -- helpers ---------------------------------------------------------------------------------


def test_rpc_code_of_odd_exceptions() -> None:
    class Broken(Exception):
        def code(self) -> Any:
            raise RuntimeError

    class NotCallable(Exception):
        code = "x"

    assert _flow.rpc_code(Broken()) is None and _flow.rpc_code(NotCallable()) is None
    assert _flow.rpc_code(RpcError("UNAVAILABLE")) == "UNAVAILABLE"


def test_created_by_our_send_needs_a_new_creation_time_within_the_skew() -> None:
    world = World()
    sent = world.clock.wall()
    world.backend.schedule(IID, {})
    state = world.backend.read(IID)
    assert evidence.created_by_our_send(state, None, sent, 0.0)
    assert not evidence.created_by_our_send(state, state, sent, 0.0)
    world.clock.advance(100.0)
    assert not evidence.created_by_our_send(state, None, world.clock.wall(), 5.0)
    assert not evidence.created_by_our_send(None, None, sent, 5.0)


# -- watch, acquire and release when a lease is lost or an answer fails or comes late ------------


def test_watch_read_that_outlives_the_lease_does_not_claim_anothers_instance() -> None:
    """A slow watch read let B take the lease and start; A must not report B's instance as its own."""
    world = World(profile="atomic")
    cfg = config(lease_ttl=1.0, ambiguity_timeout=5.0)
    b_result: list[_flow.FlowResult] = []
    reads = [0]

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Schedule):
            raise RpcError("UNAVAILABLE")  # A's request never reached the backend
        if isinstance(op, _flow.Read):
            reads[0] += 1
            if reads[0] == 2:  # A's first watch read stalls past its lease; B runs meanwhile
                world.clock.advance(1.2)
                b_result.append(run_full(world, cfg, token="B"))
        return DEFAULT

    with pytest.raises(ScheduleError) as info:
        run_start(world, cfg, intercept)
    assert info.value.maybe_scheduled
    assert b_result[0].result.outcome is StartOutcome.STARTED and world.backend.created(IID) == 1


def test_watch_confirms_the_lease_before_claiming_the_instance() -> None:
    world = World()

    def lost_then_landed(op: Any) -> Any:
        world.backend.schedule_later(IID, op.tags, 0.01)
        raise RpcError("DEADLINE_EXCEEDED")

    def intercept(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Extend):
            return False  # the store no longer has our lease
        return lost_then_landed(op) if isinstance(op, _flow.Schedule) else DEFAULT

    with pytest.raises(ScheduleError) as info:
        run_start(world, config(lease_ttl=30.0), intercept)
    assert info.value.maybe_scheduled and "confirmation refused" in str(info.value)


def test_acquire_error_releases_a_grant_the_store_may_have_made() -> None:
    world = World()

    def granted_then_failed(op: Any) -> Any:
        world.answer(op)
        raise LockUnavailableError("timeout after the SET ran")

    with pytest.raises(LockUnavailableError):
        run_start(world, config(), when(_flow.Acquire, granted_then_failed))
    assert world.store.holder(IID) is None


def test_finish_retries_an_abandoned_release() -> None:
    world = World(expiring=False)
    cfg = config(confirm_visible=False)
    hold = started(world, cfg).hold
    assert hold is not None
    flow = _flow.finish_flow(call(), cfg, hold, clock=world.clock)
    op = next(flow)
    assert isinstance(op, _flow.Release)
    op = flow.throw(_flow.Abandoned())  # the first release was interrupted before it ran
    assert isinstance(op, _flow.Release)
    with pytest.raises(StopIteration):
        flow.send(world.answer(op))
    assert world.store.holder(IID) is None


def test_reuse_policy_lists_only_terminal_statuses() -> None:
    from durabletask.internal import orchestrator_service_pb2 as pb

    from strict_singleton.policies import ReusePolicy

    terminal = {
        pb.ORCHESTRATION_STATUS_COMPLETED,
        pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_TERMINATED,
        pb.ORCHESTRATION_STATUS_CANCELED,
    }
    assert set(ReusePolicy.ALLOW_DUPLICATE.request_policy().replaceableStatus) == terminal


def test_watch_covers_a_late_execution_that_is_then_slow_to_show() -> None:
    """A request executed late in the window and visible only after it is held for, not released blind."""
    world = World(visibility_lag=1.5)
    cfg = config(lease_ttl=1.0, ambiguity_timeout=1.0, visibility_timeout=3.0)

    def delayed(op: Any) -> Any:
        world.backend.schedule_later(op.call.instance_id, op.tags, 0.9)
        raise RpcError("DEADLINE_EXCEEDED")

    result = run_start(world, cfg, when(_flow.Schedule, delayed))
    assert result.result.outcome is StartOutcome.STARTED  # held until it showed, not released blind
    assert run_start(world, cfg, token="B").result.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.overwritten(IID) == 0


def test_the_world_refuses_a_schedule_whose_send_by_passes_while_it_travels() -> None:
    """The simulated backend counts the operation's own cost: a schedule whose send-by time falls
    within it arrives too late and is not sent, as a real driver's deadline would cut it."""
    world = World(profile="atomic")
    late = _flow.Schedule(call(), {}, world.clock() + world.op_cost / 2)
    with pytest.raises(_flow.NotSent):
        world.answer(late)
    assert world.backend.read(IID) is None
    in_time = _flow.Schedule(call(), {}, world.clock() + world.op_cost * 2)
    world.answer(in_time)
    assert world.backend.read(IID) is not None
