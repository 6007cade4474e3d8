"""``start_or_signal`` after its own schedule succeeded: the event's RPC, made under the lease,
never stands between the start and its record, and request records never lose the entry a
call has just written. Driven in memory (``strict_singleton.testing.world``): the real flow,
a virtual clock, a lock store with TTLs and a backend whose status reads lag.

What each test proves:
- a call cancelled while raising its event (or while leaving its records) still leaves the
  start record, so a caller inside the status lag answers ALREADY_RUNNING and nothing is
  overwritten;
- an event RPC slower than the lease cannot let a second caller start: the record is left
  before the event is raised, and the RPC carries a deadline inside the lease;
- request IDs are bounded by the bytes a record stores, and the newest signal entry always fits.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from strict_singleton import _flow
from strict_singleton._validation import StartCall, StarterConfig, validate_request_id
from strict_singleton.errors import InvalidArgumentError, SignalError
from strict_singleton.lock_backends.base import MAX_REQUEST_ID_BYTES, REQUEST_RECORD_MAX, RequestRecord
from strict_singleton.result import StartOutcome
from strict_singleton.testing.world import DEFAULT, World, drive
from suite_helpers import flow_config

IID = "batch-42"
LAG = 3.0  # status reads show a new instance this long after it was created


def config(**overrides: Any) -> StarterConfig:
    return flow_config(**{"visibility_timeout": 10.0, "ambiguity_timeout": 5.0, "request_records": True, **overrides})


def call(*, signal: Any = None, request_id: str | None = None) -> StartCall:
    return StartCall(
        instance_id=IID,
        orchestrator="orch",
        input=None,
        tags={},
        version=None,
        start_at=None,
        request_id=request_id,
        signal=signal,
    )


def run(
    world: World, cfg: StarterConfig, token: str, the_call: StartCall, intercept: Any = None, *, ahead: float = 0.0
) -> Any:
    """A whole call as an inline driver runs it: start_flow, then finish_flow if it holds the lease.
    ``ahead``: seconds the starter's wall clock runs ahead of the backend's."""

    def wall() -> Any:
        return world.clock.wall() + timedelta(seconds=ahead)

    flow = _flow.start_flow(the_call, cfg, token=token, backend="sim", clock=world.clock, wall_clock=wall)
    result = drive(flow, world, intercept)
    if result.hold is not None:
        finish = _flow.finish_flow(the_call, cfg, result.hold, clock=world.clock, wall_clock=wall)
        drive(finish, world, intercept)
    if result.error is not None:
        raise result.error
    return result.result


def plain_start_inside_the_lag(world: World, cfg: StarterConfig) -> Any:
    result = run(world, cfg, "B", call())
    assert world.backend.overwritten(IID) == 0, "a running instance was overwritten"
    assert world.backend.created(IID) == 1, "started twice"
    return result


# -- cancelled after the schedule succeeded ---------------------------------------------------


@pytest.mark.parametrize("where", ["RaiseEvent", "RecordStart", "Extend"])
@pytest.mark.parametrize("executed", [True, False], ids=["after-it-ran", "before-it-ran"])
def test_a_call_cancelled_after_its_start_leaves_the_start_record(where: str, executed: bool) -> None:
    """Cancelled at each yield between the schedule's answer and the release: the record stays."""
    world = World(visibility_lag=LAG)
    cfg = config(lease_ttl=30.0)
    seen: list[str] = []

    def cancel(op: _flow.Op) -> Any:
        name = type(op).__name__
        seen.append(name)
        if name == where and world.backend.created(IID) == 1 and seen.count(name) == 1:
            if executed:
                world.answer(op)
            raise _flow.Abandoned()
        return DEFAULT

    if where == "Extend":  # make a renewal due before the event: a lease short enough, a clock that moved
        cfg = config(lease_ttl=3.0)

        def cancel_after_delay(op: _flow.Op) -> Any:
            if isinstance(op, _flow.RecordStart):
                world.clock.advance(1.5)  # past renew_after: the event's keep renews first
            return cancel(op)

        intercept: Any = cancel_after_delay
    else:
        intercept = cancel
    with pytest.raises(_flow.Abandoned):
        run(world, cfg, "A", call(signal=("item", 1)), intercept)
    assert where in seen, seen
    assert world.store.holder(IID) is None, "the cancelled call left the lease held"
    assert world.store.last_start(IID) is not None, "no start record after a cancelled start_or_signal"
    assert plain_start_inside_the_lag(world, cfg).outcome is StartOutcome.ALREADY_RUNNING


def test_a_cancelled_request_with_an_id_is_not_raised_twice_by_its_retry() -> None:
    world = World(visibility_lag=LAG)
    cfg = config(lease_ttl=30.0)

    def cancel_after_raising(op: _flow.Op) -> Any:
        if isinstance(op, _flow.RaiseEvent):
            world.answer(op)
            raise _flow.Abandoned()
        return DEFAULT

    with pytest.raises(_flow.Abandoned):
        run(world, cfg, "A", call(signal=("item", "r1"), request_id="r1"), cancel_after_raising)
    world.clock.advance(LAG + 0.1)  # the instance shows now
    with pytest.raises(SignalError) as raised:
        run(world, cfg, "C", call(signal=("item", "r1"), request_id="r1"))
    assert raised.value.maybe_delivered  # it may have arrived: never raised again
    assert len(world.backend.events) == 1 and world.backend.created(IID) == 1


# -- an event RPC slower than the lease -------------------------------------------------------


def test_an_event_slower_than_the_lease_never_lets_a_second_caller_start() -> None:
    """While A's event hangs past its lease, B takes the lease and reads a lagging "no instance"."""
    world = World(visibility_lag=LAG)
    cfg = config(lease_ttl=1.0)
    during: list[Any] = []

    def slow_event(op: _flow.Op) -> Any:
        if isinstance(op, _flow.RaiseEvent) and not during:
            world.clock.advance(cfg.lease_ttl * 2)  # the RPC hangs; A's lease expires meanwhile
            during.append(run(world, cfg, "B", call()))
            return world.answer(op)
        return DEFAULT

    result = run(world, cfg, "A", call(signal=("item", 1)), slow_event)
    assert result.outcome is StartOutcome.STARTED
    assert during[0].outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 1 and world.backend.overwritten(IID) == 0


def test_the_event_rpc_under_the_lease_carries_a_deadline_inside_it() -> None:
    world = World()
    cfg = config(lease_ttl=2.0)
    events: list[_flow.RaiseEvent] = []
    acquired: list[float] = []

    def look(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Acquire):
            acquired.append(world.clock())
        if isinstance(op, _flow.RaiseEvent):
            events.append(op)
        return DEFAULT

    run(world, cfg, "A", call(signal=("item", 1)), look)
    (event,) = events
    assert event.send_by is not None
    assert event.send_by <= acquired[0] + cfg.lease_ttl - cfg.send_reserve


def test_an_event_past_its_send_by_is_not_raised_and_the_caller_is_told() -> None:
    world = World()
    cfg = config(lease_ttl=2.0)

    def too_late(op: _flow.Op) -> Any:
        if isinstance(op, _flow.RaiseEvent):
            raise _flow.NotSent("send-by time passed")
        return DEFAULT

    with pytest.raises(SignalError) as raised:
        run(world, cfg, "A", call(signal=("item", 1)), too_late)
    assert not raised.value.maybe_delivered and raised.value.started
    assert world.backend.events == [] and world.store.last_start(IID) is not None


# -- request records hold what the promise needs --------------------------------------------


def test_request_ids_are_bounded_by_the_bytes_a_record_stores() -> None:
    assert validate_request_id("r" * 128) == "r" * 128
    assert validate_request_id("日" * 28) == "日" * 28  # 252 bytes stored
    for too_big in ("日" * 29, "😀" * 22, "日" * 128, "/" * 86):
        with pytest.raises(InvalidArgumentError, match="bytes"):
            validate_request_id(too_big)


def test_the_newest_signal_entry_always_fits_beside_the_largest_start_entry() -> None:
    big = ["日" * 27 + chr(0x4E00 + i) for i in range(12)]  # 252 bytes each once stored
    record = RequestRecord(big[0], 2**63, 2**60, 2**60, "signal", "not-raised", 2**60)
    for rid in big[1:]:
        record = dataclasses.replace(record, signals=record.with_signal(rid, "not-raised", 2**60))
        stored = RequestRecord.decode(record.encode())
        assert stored is not None and stored.signal(rid) is not None, "the entry just written was dropped"
        assert len(record.encode()) <= REQUEST_RECORD_MAX
    assert MAX_REQUEST_ID_BYTES * 2 + 400 < REQUEST_RECORD_MAX


def test_a_retry_of_a_long_non_ascii_request_is_never_raised_twice() -> None:
    """Two large non-ASCII request IDs signal a running instance, then the second retries."""
    world = World()
    cfg = config(lease_ttl=30.0)
    first, second = "日" * 28, "😀" * 21
    assert run(world, cfg, "S", call()).outcome is StartOutcome.STARTED
    for token, rid in (("A", first), ("B", second)):
        assert run(world, cfg, token, call(signal=("item", rid), request_id=rid)).outcome is StartOutcome.SIGNALED
    retried = run(world, cfg, "C", call(signal=("item", second), request_id=second))
    assert retried.outcome is StartOutcome.SIGNALED and retried.deduplicated
    assert [event[3] for event in world.backend.events] == [first, second]


# -- one-second creation times (Durable Functions) ------------------------------------------


def test_a_retry_on_one_second_times_never_runs_its_request_twice() -> None:
    """X completes; request R replaces it with Y within the same second; Y completes; a retry of R
    cannot tell Y from X by their creation times: it refuses (maybe_scheduled) instead of starting a third."""
    from strict_singleton.errors import ScheduleError

    world = World(whole_seconds=True)
    world.clock.advance(0.2)  # inside a second, so X and Y share it
    cfg = config(lease_ttl=30.0)
    assert run(world, cfg, "A", call()).outcome is StartOutcome.STARTED  # X
    world.backend.finish(IID)
    first = run(world, cfg, "B", call(request_id="R"))  # Y, the same second as X
    assert first.outcome is StartOutcome.STARTED and world.backend.created(IID) == 2
    world.backend.finish(IID)
    with pytest.raises(ScheduleError) as refused:
        run(world, cfg, "C", call(request_id="R"))
    assert refused.value.maybe_scheduled and "one-second" in str(refused.value)
    assert world.backend.created(IID) == 2  # the request ran once
    assert world.store.holder(IID) is None


def test_a_retry_on_one_second_times_is_recognised_from_the_next_second() -> None:
    world = World(whole_seconds=True)
    world.clock.advance(0.2)
    cfg = config(lease_ttl=30.0)
    run(world, cfg, "A", call())
    world.backend.finish(IID)
    world.clock.advance(1.0)  # Y in a later second than X
    run(world, cfg, "B", call(request_id="R"))
    world.backend.finish(IID)
    retried = run(world, cfg, "C", call(request_id="R"))
    assert retried.outcome is StartOutcome.STARTED and retried.deduplicated
    assert world.backend.created(IID) == 2


# -- status reads under the lease ---------------------------------------------------------------


def test_reads_under_the_lease_carry_its_deadline_and_fail_closed_past_it() -> None:
    from strict_singleton.errors import LeaseLostError

    world = World()
    cfg = config(lease_ttl=2.0)
    reads: list[_flow.Read] = []

    def too_late(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Read):
            reads.append(op)
            raise _flow.NotSent("send-by time passed")
        return DEFAULT

    with pytest.raises(LeaseLostError):
        run(world, cfg, "A", call(), too_late)
    assert reads[0].send_by is not None
    assert world.backend.schedules == 0 and world.store.holder(IID) is None


# -- TERMINATE_EXISTING: a terminate never lands on someone else's replacement -------------------


def terminate_call() -> StartCall:
    from strict_singleton.policies import ConflictPolicy

    return dataclasses.replace(call(), on_conflict=ConflictPolicy.TERMINATE_EXISTING)


def test_a_terminate_is_never_sent_on_a_read_that_outlived_the_lease() -> None:
    """A's read under the lease is answered late, after the store lost A's key and B replaced X with
    Y: A must confirm its lease before terminating, or it ends B's fresh instance."""
    world = World()
    world.backend.schedule(IID, {})  # X, running
    x_created = world.backend.instances[IID].created_at
    cfg = config(lease_ttl=30.0)
    reads: list[int] = []
    b: list[Any] = []

    def slow_read_then_b(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Read) and not b:
            reads.append(1)
            if len(reads) == 2:  # A's read under the lease (its first read was before any lease)
                answer = world.answer(op)  # shows X; the answer is slow to arrive
                world.store.lose(IID)
                world.clock.advance(cfg.confirm_after * 2)
                b.append(run(world, cfg, "B", terminate_call()))
                return answer
        return DEFAULT

    from strict_singleton.errors import LeaseLostError

    with pytest.raises(LeaseLostError):
        run(world, cfg, "A", terminate_call(), slow_read_then_b)
    assert b[0].outcome is StartOutcome.STARTED  # B replaced X with Y
    assert world.backend.terminated == [x_created]  # only X was ever terminated
    assert world.backend.instances[IID].status.name == "RUNNING"


def test_an_ambiguous_terminate_is_watched_and_never_lands_on_a_later_replacement() -> None:
    """A's terminate is cut at its deadline but held in the backend; it lands later. A keeps the
    lease and watches: X ends when it lands, and A starts the replacement. Raising at once and
    releasing would let B replace X with Y, and A's late terminate would then end Y."""
    from strict_singleton.testing.world import RpcError

    world = World()
    world.backend.schedule(IID, {})
    x_created = world.backend.instances[IID].created_at
    cfg = config(lease_ttl=30.0)
    held: list[bool] = []
    reads = [0]

    def cut_then_land(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Terminate) and not held:
            held.append(True)
            raise RpcError("DEADLINE_EXCEEDED")  # not executed yet: held in the backend
        if isinstance(op, _flow.Read) and held and held[-1]:
            reads[0] += 1
            if reads[0] == 3:  # the held terminate lands while A watches
                held.append(False)
                world.backend.terminate(IID)
        return DEFAULT

    outcome: Any = None
    try:
        outcome = run(world, cfg, "A", terminate_call(), cut_then_land)
    except Exception as exc:  # a starter that gives up at once raises TerminateError: the asserts say so
        outcome = exc
    later = run(world, cfg, "B", call())  # a plain start after A
    if held[-1]:  # still held: it lands now
        world.backend.terminate(IID)
    assert world.backend.terminated == [x_created], "a late terminate ended another start's instance"
    assert getattr(outcome, "outcome", None) is StartOutcome.STARTED, outcome
    assert later.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 2 and world.backend.instances[IID].status.name == "RUNNING"


def test_a_retry_never_runs_its_request_twice_when_the_clocks_differ_beyond_clock_skew() -> None:
    """The starter's clock 8 s ahead of the backend's (clock_skew 5 s): the instance the request
    created looks older than its send, yet the record names the request as the latest start, and
    the instance is newer than the one it replaced: it is the request's own."""
    world = World()
    cfg = config(lease_ttl=30.0)
    first = run(world, cfg, "A", call(request_id="order-1"), ahead=8.0)
    assert first.outcome is StartOutcome.STARTED
    world.backend.finish(IID)
    world.clock.advance(1.0)
    retried = run(world, cfg, "B", call(request_id="order-1"), ahead=8.0)
    assert retried.outcome is StartOutcome.STARTED and retried.deduplicated
    assert world.backend.created(IID) == 1


def test_a_call_cancelled_while_its_terminate_may_be_in_flight_keeps_watching() -> None:
    """A's terminate is cut at its deadline and held in the backend; A is cancelled while it
    watches. A must go on watching (keeping the lease) until the instance ends, or the late
    terminate would land on the replacement B starts next (explorer configuration ``terminate-young``)."""
    from strict_singleton.testing.world import RpcError

    world = World()
    world.backend.schedule(IID, {})
    x_created = world.backend.instances[IID].created_at
    cfg = config(lease_ttl=30.0)
    state = {"held": False, "reads": 0, "cancelled": False}

    def cut_cancel_land(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Terminate) and not state["held"]:
            state["held"] = True
            raise RpcError("DEADLINE_EXCEEDED")
        if isinstance(op, _flow.Read) and state["held"]:
            state["reads"] += 1
            if state["reads"] == 2 and not state["cancelled"]:
                state["cancelled"] = True
                raise _flow.Abandoned()
            if state["reads"] == 4:
                world.backend.terminate(IID)  # the held terminate lands while A still watches
        return DEFAULT

    with pytest.raises(_flow.Abandoned):
        run(world, cfg, "A", terminate_call(), cut_cancel_land)
    assert world.store.holder(IID) is None
    b = run(world, cfg, "B", call())  # X has ended: B starts Y
    assert b.outcome is StartOutcome.STARTED
    assert world.backend.terminated == [x_created]
    assert world.backend.instances[IID].status.name == "RUNNING"


def test_the_watch_of_an_ambiguous_terminate_survives_a_failed_read() -> None:
    """One transient read failure during the watch must not let go while the terminate may land."""
    from strict_singleton.testing.world import RpcError

    world = World()
    world.backend.schedule(IID, {})
    x_created = world.backend.instances[IID].created_at
    cfg = config(lease_ttl=30.0)
    state = {"held": False, "reads": 0}

    def cut_fail_land(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Terminate) and not state["held"]:
            state["held"] = True
            raise RpcError("DEADLINE_EXCEEDED")
        if isinstance(op, _flow.Read) and state["held"]:
            state["reads"] += 1
            if state["reads"] == 2:
                raise RpcError("UNAVAILABLE", "one transient read failure")
            if state["reads"] == 4:
                world.backend.terminate(IID)  # the held terminate lands, still inside the watch
        return DEFAULT

    result = run(world, cfg, "A", terminate_call(), cut_fail_land)
    assert result.outcome is StartOutcome.STARTED and result.replaced is not None
    assert world.backend.terminated == [x_created]


def test_any_exception_thrown_into_a_waiting_flow_releases_the_lease() -> None:
    """A user's SIGINT handler raising its own exception lands in a wait of the flow (here the
    wait for an earlier start's record to show): the call fails with it, and the lease is released."""

    class Cancelled(Exception):
        pass

    world = World(visibility_lag=3.0)
    cfg = config(lease_ttl=30.0)
    assert run(world, cfg, "A", call()).outcome is StartOutcome.STARTED

    def interrupt_the_wait(op: _flow.Op) -> Any:
        if isinstance(op, _flow.Sleep):
            raise Cancelled("user pressed Ctrl-C")
        return DEFAULT

    with pytest.raises(Cancelled):
        run(world, cfg, "B", call(), interrupt_the_wait)
    assert world.store.holder(IID) is None
    assert world.backend.created(IID) == 1
