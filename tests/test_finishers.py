"""Background finishes: off the caller's path, never queued behind a busy one,
and without starting a thread for every start."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from strict_singleton import _finishers
from strict_singleton._finishers import Finishers
from suite_helpers import finishes, poll_until


def test_an_item_never_waits_behind_a_busy_one() -> None:
    """The first item blocks until the second has run: a single queue behind one worker would deadlock."""
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


def test_a_stop_during_a_submit_cannot_strand_the_item() -> None:
    """stop() (interpreter shutdown) between submit's claim of an idle worker and its hand-over
    must not queue the workers' stops ahead of the item, or the item never runs."""
    ran: list[str] = []
    finishers = Finishers(ran.append, name="test-finish-race")
    finishers.submit("warm-up")
    finishers.wait()  # one idle worker now
    real = finishers._queue

    class StopsJustBeforeThePut:
        armed = True

        def get(self, *a: Any, **k: Any) -> Any:
            return real.get(*a, **k)

        def put(self, item: Any) -> None:
            if self.armed and item == "finish":
                self.armed = False
                threading.Thread(target=finishers.stop).start()  # blocks on the lock submit holds
            real.put(item)

    finishers._queue = StopsJustBeforeThePut()  # type: ignore[assignment]
    finishers.submit("finish")
    finishes(finishers.wait, within=60, what="the item submitted as stop() came")
    assert ran == ["warm-up", "finish"]


def test_a_forked_child_starts_its_own_workers(tmp_path: Any) -> None:
    """The parent's idle worker does not exist in a forked child: the child starts its own."""
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    ran: list[str] = []
    finishers = Finishers(ran.append, name="test-finish-fork")
    finishers.submit("parent")
    finishers.wait()  # an idle worker in the parent
    marker = tmp_path / "child-ran"
    pid = os.fork()
    if pid == 0:  # the child: its finish must run, and wait() must return
        code = 1
        try:
            finishers.submit("child")
            done = threading.Event()
            threading.Thread(target=lambda: (finishers.wait(), done.set()), daemon=True).start()
            if done.wait(30) and ran[-1] == "child":
                marker.write_text("ok")
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and marker.read_text() == "ok"


def test_a_worker_whose_wait_timed_out_still_takes_the_item_claimed_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker must not exit on its idle timeout once an item is claimed for it: with a tiny idle
    timeout, many hand-overs race the timeouts; every item must still run."""
    monkeypatch.setattr(_finishers, "IDLE_EXIT", 0.0005)
    count = [0]
    lock = threading.Lock()

    def run(_item: Any) -> None:
        with lock:
            count[0] += 1

    finishers = Finishers(run, name="test-finish-claims")
    for i in range(3000):
        finishers.submit(i)
        if i % 3 == 0:
            finishes(finishers.wait, within=60, what=f"item {i}")
    finishes(finishers.wait, within=60, what="every item")
    assert count[0] == 3000
