"""Start records: the lease is released with a record of the start instead of
being held until the new instance is visible; the next holder whose read does not show
that start yet waits for it. Driven in memory (``strict_singleton.testing.world``) and,
for the drivers' wiring, on real starters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from datetime import timedelta, timezone
from typing import Any

import pytest
from durabletask.client import OrchestrationStatus

from strict_singleton import AsyncSingletonStarter, SingletonStarter, _flow
from strict_singleton._flow import evidence
from strict_singleton._validation import StarterConfig
from strict_singleton.errors import (
    InvalidArgumentError,
    LeaseLostError,
    LockUnavailableError,
    ScheduleError,
    StatusReadError,
)
from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends.base import Grant, StartRecord
from strict_singleton.result import StartOutcome
from strict_singleton.testing.world import DEFAULT, World, drive
from suite_helpers import flow_config

IID = "job-1"


def config(**overrides: Any) -> StarterConfig:
    return flow_config(**{"visibility_timeout": 10.0, "ambiguity_timeout": 5.0, **overrides})


def call() -> Any:
    from strict_singleton._validation import StartCall

    return StartCall(instance_id=IID, orchestrator="orch", input=None, tags={}, version=None, start_at=None)


def run(world: World, cfg: StarterConfig, token: str, intercept: Any = None, log: list[Any] | None = None) -> Any:
    """A whole start as an inline driver runs it: start_flow, then finish_flow if it holds the lease."""
    flow = _flow.start_flow(call(), cfg, token=token, backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    result = drive(flow, world, intercept, log=log)
    if result.hold is not None:
        finish = _flow.finish_flow(call(), cfg, result.hold, clock=world.clock, wall_clock=world.clock.wall)
        drive(finish, world, intercept, log=log)
    return result


def kinds(log: list[Any]) -> list[str]:
    return [type(op).__name__ for op in log]


def slept(log: list[Any]) -> float:
    """Seconds of pause the flow asked for (its own arguments, not a measured time)."""
    return sum(op.seconds for op in log if isinstance(op, _flow.Sleep))


# -- the common case costs what the racy pattern costs ------------------------------------


def test_uncontended_start_makes_one_read_one_schedule_and_one_release() -> None:
    world, log = World(), []
    result = run(world, config(), "A", log=log)
    assert result.result.outcome is StartOutcome.STARTED
    assert kinds(log) == ["Acquire", "Read", "Schedule", "ReleaseRecording"]
    assert (world.backend.reads, world.backend.schedules) == (1, 1)  # what naive makes: one read, one schedule
    assert world.store.holder(IID) is None
    record = world.store.last_start(IID)
    assert record is not None and record.fencing_token == result.result.fencing_token
    assert record.previous_created_us is None


def test_a_read_that_shows_the_recorded_start_is_answered_at_once() -> None:
    world = World()
    run(world, config(), "A")
    log: list[Any] = []
    result = run(world, config(), "B", log=log)
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING
    assert kinds(log) == ["Acquire", "Read", "Release"]  # no wait, no extra read
    assert world.backend.created(IID) == 1


def test_replacing_a_terminal_instance_records_it_and_the_next_read_counts() -> None:
    world = World()
    run(world, config(), "A")
    world.backend.finish(IID)
    world.clock.advance(0.5)
    second = run(world, config(), "B")
    assert second.result.outcome is StartOutcome.STARTED and world.backend.created(IID) == 2
    record = world.store.last_start(IID)
    assert record is not None and record.previous_created_us is not None
    assert run(world, config(), "C").result.outcome is StartOutcome.ALREADY_RUNNING


# -- a caller inside the lag window waits for the recorded start ----------------------------


def test_next_holder_waits_for_a_lagging_start_and_never_starts_twice() -> None:
    """The scenario the visibility hold existed for: reads lag 3 s behind creates."""
    world = World(profile="overwrite", visibility_lag=3.0)
    cfg = config()
    assert run(world, cfg, "A").result.outcome is StartOutcome.STARTED
    holders: list[str | None] = []

    def watch(op: Any) -> Any:
        if isinstance(op, _flow.Read):
            holders.append(world.store.holder(IID))
        return DEFAULT

    log: list[Any] = []
    result = run(world, cfg, "B", watch, log)
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 1 and world.backend.overwritten(IID) == 0
    assert set(holders) == {"B"}  # every read under B's lease
    assert "Extend" in kinds(log)  # the 1 s lease was kept through a 3 s lag
    assert result.result.existing is not None and kinds(log).count("Read") > 1  # read again until it showed
    assert world.store.holder(IID) is None


def test_without_the_record_the_lagging_read_would_start_twice() -> None:
    """The same world with a store that keeps no records and no hold: the failure the wait prevents."""
    world = World(profile="overwrite", visibility_lag=3.0, records=False)
    cfg = config(start_records=False, confirm_visible=False)
    run(world, cfg, "A")
    run(world, cfg, "B")
    assert world.backend.overwritten(IID) == 1


def test_an_expired_record_is_ignored() -> None:
    world = World()
    cfg = config(visibility_timeout=2.0, clock_skew=1.0)
    stale = StartRecord(fencing_token=7, sent_at_us=0, previous_created_us=None, expires_at_us=0)

    def old_record(op: Any) -> Any:
        if isinstance(op, _flow.Acquire):
            grant = world.store.acquire(op.instance_id, op.token, op.ttl)
            return dataclasses.replace(grant, last_start=stale) if grant else None
        return DEFAULT

    log: list[Any] = []
    result = run(world, cfg, "A", old_record, log)
    assert result.result.outcome is StartOutcome.STARTED
    assert "Sleep" not in kinds(log)


def test_a_start_that_never_shows_is_waited_for_at_most_visibility_timeout(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    cfg = config(visibility_timeout=4.0)
    run(world, cfg, "A")
    world.backend.instances.pop(IID)  # purged: reads will never show it
    log: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="strict_singleton"):
        result = run(world, cfg, "B", log=log)
    assert result.result.outcome is StartOutcome.STARTED  # then it goes on with the latest read
    assert 0 < slept(log) <= 4.0  # the pauses it asked for stay inside visibility_timeout
    assert "still not visible" in caplog.text  # and it gave up because the window closed


def test_the_wait_never_outlives_the_record() -> None:
    """A record written 3 s ago with a 4 s TTL leaves at most 1 s (+ clock_skew) to wait."""
    world = World()
    cfg = config(visibility_timeout=4.0, clock_skew=0.0)
    run(world, cfg, "A")
    world.backend.instances.pop(IID)
    world.clock.advance(3.0)
    log: list[Any] = []
    run(world, cfg, "B", log=log)
    assert 0 < slept(log) <= 1.0  # the pauses it asked for stay inside what is left of the record


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("lease-refused", LeaseLostError),
        ("store-down", LeaseLostError),
        ("read-fails", StatusReadError),
    ],
)
def test_a_failure_while_waiting_schedules_nothing_and_lets_go(fault: str, error: type[Exception]) -> None:
    world = World(profile="overwrite", visibility_lag=3.0)
    cfg = config()
    run(world, cfg, "A")
    reads = [0]

    def inject(op: Any) -> Any:
        if fault == "lease-refused" and isinstance(op, _flow.Extend):
            return False
        if fault == "store-down" and isinstance(op, _flow.Extend):
            raise LockUnavailableError("down", instance_id=IID, backend="sim")
        if fault == "read-fails" and isinstance(op, _flow.Read):
            reads[0] += 1
            if reads[0] > 1:
                raise RuntimeError("backend unavailable")
        return DEFAULT

    with pytest.raises(error):
        run(world, cfg, "B", inject)
    assert world.backend.created(IID) == 1
    assert world.store.holder(IID) is None


def test_abandoned_while_waiting_releases_the_lease() -> None:
    world = World(profile="overwrite", visibility_lag=3.0)
    cfg = config()
    run(world, cfg, "A")
    flow = _flow.start_flow(call(), cfg, token="B", backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    op = next(flow)
    ops: list[Any] = []
    while not isinstance(op, _flow.Sleep):
        ops.append(op)
        op = flow.send(world.answer(op))
    assert world.store.holder(IID) == "B"
    with pytest.raises(_flow.Abandoned):
        drive(_throw_first(flow, _flow.Abandoned()), world)
    assert world.store.holder(IID) is None and world.backend.created(IID) == 1


def _throw_first(flow: Any, exc: BaseException) -> Any:
    """A generator that throws ``exc`` into ``flow`` first, then passes everything through."""
    op = flow.throw(exc)
    while True:
        reply = yield op
        op = flow.send(reply)


# -- the recording release itself ---------------------------------------------------------


def test_record_store_unavailable_falls_back_to_holding_until_visible(caplog: pytest.LogCaptureFixture) -> None:
    world = World(profile="overwrite", visibility_lag=0.5)
    cfg = config()
    log: list[Any] = []
    first = [True]

    def down_once(op: Any) -> Any:
        if isinstance(op, _flow.ReleaseRecording) and first[0]:
            first[0] = False
            raise LockUnavailableError("down", instance_id=IID, backend="sim")
        return DEFAULT

    with caplog.at_level(logging.WARNING, logger="strict_singleton"):
        run(world, cfg, "A", down_once, log)
    tail = kinds(log)[kinds(log).index("ReleaseRecording") + 1 :]
    assert "Read" in tail and tail[-1] == "Release"  # the old visibility hold, then a release
    assert "holding the lease until visible" in caplog.text
    assert run(world, cfg, "B").result.outcome is StartOutcome.ALREADY_RUNNING


def test_record_refused_because_the_lease_was_lost_ends_the_finish(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    cfg = config()
    log: list[Any] = []

    def lost(op: Any) -> Any:
        return False if isinstance(op, _flow.ReleaseRecording) else DEFAULT

    with caplog.at_level(logging.WARNING, logger="strict_singleton"):
        run(world, cfg, "A", lost, log)
    assert kinds(log)[-1] == "ReleaseRecording"
    assert "lost the lease" in caplog.text


def test_abandoned_recording_release_is_tried_once_more() -> None:
    world = World()
    cfg = config()
    result = drive(
        _flow.start_flow(call(), cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall), world
    )
    finish = _flow.finish_flow(call(), cfg, result.hold, clock=world.clock, wall_clock=world.clock.wall)
    op = next(finish)
    assert isinstance(op, _flow.ReleaseRecording)
    again = finish.throw(_flow.Abandoned())
    assert again == op
    with pytest.raises(StopIteration):
        finish.send(world.answer(again))
    assert world.store.holder(IID) is None and world.store.last_start(IID) is not None


def test_record_times_and_expiry() -> None:
    world = World()
    cfg = config(visibility_timeout=6.0)
    run(world, cfg, "A")
    record = world.store.last_start(IID)
    assert record is not None
    created = world.backend.read(IID)
    assert created is not None and created.created_at is not None
    assert _flow.epoch_us(created.created_at) >= record.sent_at_us
    assert record.expires_at_us - record.sent_at_us == pytest.approx(6_000_000, abs=50_000)
    world.clock.advance(6.1)
    assert world.store.last_start(IID) is None  # the store's TTL


# -- created_by_send: a replacement must be newer than what it replaced -----------------------


def test_an_older_instance_than_the_replaced_one_does_not_show_the_start() -> None:
    world = World()
    world.backend.schedule(IID, {})
    older = world.backend.read(IID)
    world.clock.advance(1.0)
    world.backend.finish(IID)
    world.backend.schedule(IID, {})
    replaced = world.backend.read(IID)
    assert older is not None and replaced is not None
    sent = world.clock.wall() + timedelta(seconds=0.5)
    assert _flow.created_us(replaced) is not None
    # within clock_skew of the send, but older than the instance read before scheduling
    assert not evidence.created_by_send(older, _flow.created_us(replaced), _flow.epoch_us(sent), 5.0)
    assert not evidence.created_by_send(replaced, _flow.created_us(replaced), _flow.epoch_us(sent), 5.0)
    world.clock.advance(1.0)
    world.backend.finish(IID)
    world.backend.schedule(IID, {})
    assert evidence.created_by_send(world.backend.read(IID), _flow.created_us(replaced), _flow.epoch_us(sent), 5.0)


def test_records_decode_defensively() -> None:
    record = StartRecord(fencing_token=3, sent_at_us=10, previous_created_us=None, expires_at_us=20)
    assert StartRecord.decode(record.encode()) == record
    assert StartRecord.decode(record.encode().encode()) == record
    for junk in (None, "", "garbage", "ssr1:x:1::2", "ssr0:1:2::3", "ssr1:1:2:3"):
        assert StartRecord.decode(junk) is None


# -- the drivers: records are used when the lock keeps them -------------------------------


class _NoRecords:
    """A lease backend from before start records (only the base protocol)."""

    def __init__(self, inner: FileLease) -> None:
        self._inner = inner
        self.name = "no-records"

    def validate_ttl(self, ttl: float) -> None:
        self._inner.validate_ttl(ttl)

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        return self._inner.acquire(instance_id, token, ttl)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        return self._inner.extend(instance_id, token, ttl)

    def release(self, instance_id: str, token: str) -> bool:
        return self._inner.release(instance_id, token)

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        self._inner.wait_for_release(instance_id, timeout)

    def close(self) -> None:
        self._inner.close()


class _Client:
    """Just enough of a Durable client for the constructor's checks (nothing is started)."""

    def schedule_new_orchestration(self, *a: Any, **k: Any) -> str:
        raise AssertionError("not called")

    def get_orchestration_state(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("not called")


class _AsyncClient:
    async def schedule_new_orchestration(self, *a: Any, **k: Any) -> str:
        raise AssertionError("not called")

    async def get_orchestration_state(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("not called")


def test_starters_use_records_when_the_lock_keeps_them(tmp_path: Any) -> None:
    lease = FileLease(tmp_path)
    assert SingletonStarter(_Client(), lock=lease)._config.start_records  # type: ignore[arg-type]
    assert not SingletonStarter(_Client(), lock=_NoRecords(lease))._config.start_records  # type: ignore[arg-type]


def test_an_async_lock_whose_record_release_is_sync_is_refused(tmp_path: Any) -> None:
    class Mixed:
        name = "mixed"

        def validate_ttl(self, ttl: float) -> None: ...

        async def acquire(self, *a: Any) -> Any: ...

        async def extend(self, *a: Any) -> Any: ...

        async def release(self, *a: Any) -> Any: ...

        async def wait_for_release(self, *a: Any) -> Any: ...

        async def close(self) -> None: ...

        def release_with_record(self, *a: Any) -> Any: ...

        async def record_start(self, *a: Any) -> Any: ...

    with pytest.raises(InvalidArgumentError, match="release_with_record"):
        AsyncSingletonStarter(_AsyncClient(), lock=Mixed())  # type: ignore[arg-type]


def test_terminal_status_names_stay_replaceable() -> None:
    # the record path must not change which statuses a start may replace
    world = World()
    run(world, config(), "A")
    world.backend.finish(IID, OrchestrationStatus.FAILED)
    assert run(world, config(), "B").result.outcome is StartOutcome.STARTED


# -- when a record counts: store TTLs, clock skew, coarse creation times, a lease lost while watching ---


def _grant_with(world: World, record: StartRecord, left: float | None) -> Any:
    def intercept(op: Any) -> Any:
        if isinstance(op, _flow.Acquire):
            grant = world.store.acquire(op.instance_id, op.token, op.ttl)
            return dataclasses.replace(grant, last_start=record, last_start_left=left) if grant else None
        return DEFAULT

    return intercept


def _lagging_start(world: World) -> StartRecord:
    """A starts on a host whose reads lag 3 s; returns the record A left."""
    assert run(world, config(), "A").result.outcome is StartOutcome.STARTED
    record = world.store.last_start(IID)
    assert record is not None
    return record


def test_the_stores_own_ttl_wins_over_wall_clocks() -> None:
    """The reader's wall clock says the record expired; Redis says 2 s are left: wait."""
    world = World(profile="overwrite", visibility_lag=3.0)
    record = _lagging_start(world)
    expired = dataclasses.replace(record, expires_at_us=record.sent_at_us - 60_000_000)  # a writer far behind
    result = run(world, config(clock_skew=0.0), "B", _grant_with(world, expired, 3.5))
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING and world.backend.created(IID) == 1


def test_a_wall_clock_expiry_counts_clock_skew() -> None:
    """Without a store TTL (file, Blob): a record expired by less than clock_skew still counts."""
    world = World(profile="overwrite", visibility_lag=3.0)
    record = _lagging_start(world)
    now_us = _flow.epoch_us(world.clock.wall())
    just_expired = dataclasses.replace(record, expires_at_us=now_us - 500_000)  # 0.5 s ago
    result = run(world, config(clock_skew=5.0), "B", _grant_with(world, just_expired, None))
    assert result.result.outcome is StartOutcome.ALREADY_RUNNING and world.backend.created(IID) == 1


def test_a_record_expires_visibility_timeout_after_the_release_not_the_send() -> None:
    """The record's window starts when it is written: a finish that runs late still covers the lag."""
    world = World()
    cfg = config(visibility_timeout=6.0)
    result = drive(
        _flow.start_flow(call(), cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall), world
    )
    world.clock.advance(0.5)  # the background finish starts late
    released_at = _flow.epoch_us(world.clock.wall())
    finish = _flow.finish_flow(call(), cfg, result.hold, clock=world.clock, wall_clock=world.clock.wall)
    drive(finish, world)
    record = world.store.last_start(IID)
    assert record is not None and record.expires_at_us - released_at >= 6_000_000


def test_a_lagging_read_of_the_replaced_terminal_instance_is_not_taken_for_the_start() -> None:
    """shows_start_record must not ignore the replaced instance: a lagging read of it, terminal,
    is not the start the record names, so C waits instead of starting a third instance."""
    world = World(profile="overwrite")
    assert run(world, config(), "A").result.outcome is StartOutcome.STARTED
    world.backend.finish(IID)
    world.backend.visibility_lag = 3.0
    world.clock.advance(0.5)  # within clock_skew of the first instance's creation
    assert run(world, config(), "B").result.outcome is StartOutcome.STARTED
    assert run(world, config(), "C").result.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 2 and world.backend.overwritten(IID) == 0


def test_one_second_creation_times_an_active_replacement_shows_the_start() -> None:
    """On a host whose creation times have one-second resolution, the replacement has
    the replaced instance's creation time; active, it shows the start (no 30 s wait)."""
    world = World()
    world.backend.schedule(IID, {})
    world.backend.finish(IID)
    previous = world.backend.read(IID)
    assert previous is not None
    world.clock.advance(0.2)
    world.backend.schedule(IID, {})
    world.backend.instances[IID].created_at = previous.created_at.replace(tzinfo=timezone.utc)  # same second
    record = StartRecord(
        fencing_token=2,
        sent_at_us=_flow.epoch_us(world.clock.wall()),
        previous_created_us=_flow.created_us(previous),
        expires_at_us=_flow.epoch_us(world.clock.wall()) + 30_000_000,
    )
    assert evidence.shows_start_record(world.backend.read(IID), record, 5.0)
    world.backend.finish(IID)  # the same instance seen terminal: that is the replaced one, stale
    assert not evidence.shows_start_record(world.backend.read(IID), record, 5.0)


def test_an_ambiguous_failure_records_the_start_before_watching() -> None:
    """The record is left while the lease is surely ours, so a lease lost during the
    watch (a read slower than the lease) does not let the next holder act on a stale read."""
    world = World(profile="overwrite", visibility_lag=3.0)
    cfg = config(ambiguity_timeout=1.0, visibility_timeout=5.0)
    log: list[Any] = []
    state = {"sent": False}

    def deliver_then_drop(op: Any) -> Any:
        if isinstance(op, _flow.Schedule) and not state["sent"]:
            state["sent"] = True
            world.backend.schedule(op.call.instance_id, op.tags)  # executed, the answer lost
            from strict_singleton.testing.world import RpcError

            raise RpcError("DEADLINE_EXCEEDED")
        if isinstance(op, _flow.Read) and state["sent"] and world.store.holder(IID) == "A":
            world.clock.advance(1.2)  # a watch read slower than the 1 s lease: it expires
            world.store.holder(IID)
            outcome["B"] = run(world, cfg, "B")  # B comes in meanwhile
        return DEFAULT

    outcome: dict[str, Any] = {}
    flow = _flow.start_flow(call(), cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    with contextlib.suppress(ScheduleError):  # A's lease was lost during the watch: maybe_scheduled
        drive(flow, world, deliver_then_drop, log=log)
    assert kinds(log).index("RecordStart") < kinds(log).index("Read", kinds(log).index("Schedule"))
    assert outcome["B"].result.outcome is StartOutcome.ALREADY_RUNNING
    assert world.backend.created(IID) == 1 and world.backend.overwritten(IID) == 0
