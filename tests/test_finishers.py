"""Background finishes (issue 12): off the caller's path, never queued behind a busy one,
and without starting a thread for every start."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from strict_singleton import _finishers
from strict_singleton._finishers import Finishers
from suite_helpers import finishes, poll_until


def test_an_item_never_waits_behind_a_busy_one() -> None:
    """Item 1 blocks until item 2 has run: a single queue behind one worker would deadlock."""
    second_ran = threading.Event()

    def run(item: str) -> None:
        if item == "first":
            assert second_ran.wait(30), "the second finish was queued behind the first"
        else:
            second_ran.set()

    finishers = Finishers(run, name="test-finish")
    finishers.submit("first")
    finishers.submit("second")
    finishes(finishers.wait, within=60, what="both finishes")


def test_a_stream_of_finishes_reuses_an_idle_worker() -> None:
    threads: list[int] = []
    finishers = Finishers(lambda _item: threads.append(threading.get_ident()), name="test-finish")
    for i in range(20):
        finishers.submit(i)
        finishers.wait()  # the worker is idle again before the next start
    assert len(threads) == 20 and len(set(threads)) == 1


def test_wait_returns_once_every_item_ran() -> None:
    gate = threading.Event()
    done: list[int] = []

    def run(item: int) -> None:
        gate.wait(30)
        done.append(item)

    finishers = Finishers(run, name="test-finish")
    for i in range(5):
        finishers.submit(i)
    waiter = threading.Thread(target=finishers.wait)
    waiter.start()
    assert waiter.is_alive()  # blocked on the gate
    gate.set()
    waiter.join(60)
    assert not waiter.is_alive() and sorted(done) == [0, 1, 2, 3, 4]


def test_a_failing_item_does_not_lose_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[Any] = []

    def run(item: Any) -> None:
        if item == "boom":
            raise RuntimeError("boom")
        ran.append(item)

    finishers = Finishers(run, name="test-finish")
    finishers.submit("boom")
    finishers.wait()
    finishers.submit("after")  # claims the worker that survived the failure
    finishes(finishers.wait, within=60, what="the finish after a failure")
    assert ran == ["after"] and "background finish failed" in caplog.text


def test_idle_workers_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_finishers, "IDLE_EXIT", 0.01)
    finishers = Finishers(lambda _item: None, name="test-finish-idle")
    finishers.submit(1)
    finishers.wait()
    poll_until(lambda: finishers._workers == 0, 30, "the idle worker to exit")
    finishers.submit(2)  # a new worker is started for the next one
    finishes(finishers.wait, within=60, what="a finish after the workers exited")


def test_stop_lets_idle_workers_go_and_later_items_still_run() -> None:
    finishers = Finishers(lambda _item: None, name="test-finish-stop")
    finishers.submit(1)
    finishers.wait()
    finishers.stop()
    poll_until(lambda: finishers._workers == 0, 30, "the worker to take its stop")
    finishers.submit(2)
    finishes(finishers.wait, within=60, what="a finish after stop")
