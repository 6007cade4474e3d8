"""Status reads of one ID shared by a starter's concurrent callers (``_shared_reads``).

The property that makes sharing invisible to the flow: every caller's answer comes from a
read *sent after it asked*. A read function that numbers its sends shows it: a caller
that asked when ``n`` reads had been sent must get a number above ``n``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome, _shared_reads
from strict_singleton._shared_reads import AsyncSharedReads, SharedReads
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from suite_helpers import poll_until


class NumberedReads:
    """A read that returns its send's number; the first send (or every send) can be held."""

    def __init__(self, *, hold_first: bool = True) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.gate = threading.Event()
        self.hold_first = hold_first
        self.first_in_flight = threading.Event()
        self.fail_with: BaseException | None = None

    def __call__(self, instance_id: str, payloads: bool, *, timeout: float | None = None) -> int:
        with self.lock:
            self.sent += 1
            number = self.sent
        if number == 1 and self.hold_first:
            self.first_in_flight.set()
            assert self.gate.wait(30)
        if self.fail_with is not None and number > 1:
            raise self.fail_with
        return number


def ask_many(shared: SharedReads, reads: NumberedReads, n: int) -> tuple[list[tuple[int, Any]], int]:
    """The first caller's read held in flight, ``n`` more ask meanwhile; then it returns."""
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()
    entered = threading.Semaphore(0)

    def one(first: bool) -> None:
        asked_after = reads.sent
        entered.release()
        try:
            value: Any = shared.read("id", True)
        except BaseException as exc:  # recorded, compared below
            value = exc
        with lock:
            results.append((asked_after, value))

    first = threading.Thread(target=one, args=(True,))
    first.start()
    assert reads.first_in_flight.wait(30)
    others = [threading.Thread(target=one, args=(False,)) for _ in range(n)]
    for t in others:
        t.start()
    for _ in range(n + 1):
        assert entered.acquire(timeout=30)
    poll_until(lambda: shared._slots[("id", True)].queued is not None, 30, "a queued read")
    reads.gate.set()
    for t in [first, *others]:
        t.join(30)
    return results, reads.sent


def test_callers_asking_during_a_read_share_the_next_one() -> None:
    reads = NumberedReads()
    shared = SharedReads(reads)
    results, sent = ask_many(shared, reads, 20)
    assert len(results) == 21
    for asked_after, value in results:
        assert value > asked_after, "a caller got a read sent before it asked"
    assert sent <= 3, f"{sent} reads for 21 callers"  # 2, or 3 if one asked as the first returned
    assert shared._slots == {}  # nothing kept once idle


def test_an_error_of_the_shared_read_is_every_sharers_error() -> None:
    reads = NumberedReads()
    reads.fail_with = ConnectionError("backend down")
    shared = SharedReads(reads)
    results, _sent = ask_many(shared, reads, 8)
    values = [v for _a, v in results]
    assert values.count(1) == 1  # the first read's own answer
    assert all(isinstance(v, ConnectionError) for v in values if v != 1)


class Interrupted(BaseException):
    pass


def test_sharers_read_alone_when_the_sender_is_interrupted() -> None:
    class InterruptSecond(NumberedReads):
        def __call__(self, instance_id: str, payloads: bool, *, timeout: float | None = None) -> int:
            number = super().__call__(instance_id, payloads, timeout=timeout)
            if number == 2:
                raise Interrupted()
            return number

    reads = InterruptSecond()
    shared = SharedReads(reads)
    results, _sent = ask_many(shared, reads, 6)
    interrupted = [v for _a, v in results if isinstance(v, Interrupted)]
    assert len(interrupted) == 1  # only the sender's own thread sees its interrupt
    for asked_after, value in results:
        if not isinstance(value, Interrupted):
            assert isinstance(value, int) and value > asked_after


def test_a_stalled_read_delays_the_next_by_queue_wait_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shared_reads, "QUEUE_WAIT", 0.05)
    reads = NumberedReads()
    shared = SharedReads(reads)
    stuck = threading.Thread(target=lambda: shared.read("id", True))
    stuck.start()
    assert reads.first_in_flight.wait(30)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(shared.read("id", True)))
    t.start()
    t.join(30)
    assert got == [2]  # answered while the first read is still stuck
    reads.gate.set()
    stuck.join(30)


def test_reads_of_other_ids_and_payload_choices_are_not_shared() -> None:
    reads = NumberedReads()
    shared = SharedReads(reads)
    stuck = threading.Thread(target=lambda: shared.read("id", True))
    stuck.start()
    assert reads.first_in_flight.wait(30)
    assert shared.read("other", True) == 2  # not queued behind "id"
    assert shared.read("id", False) == 3
    reads.gate.set()
    stuck.join(30)


def test_async_sharers_get_a_read_sent_after_they_asked_and_survive_a_cancelled_sender() -> None:
    async def main() -> None:
        sent = 0
        gate = asyncio.Event()
        first = asyncio.Event()

        async def read(instance_id: str, payloads: bool, *, timeout: float | None = None) -> int:
            nonlocal sent
            sent += 1
            number = sent
            if number <= 2:
                first.set()
                await gate.wait()
            return number

        shared = AsyncSharedReads(read)
        leader = asyncio.create_task(shared.read("id", True))
        await asyncio.wait_for(first.wait(), 10)
        asked = sent
        queued_sender = asyncio.create_task(shared.read("id", True))
        await asyncio.sleep(0)
        sharers = [asyncio.create_task(shared.read("id", True)) for _ in range(10)]
        await asyncio.sleep(0)
        queued_sender.cancel()  # its read goes on for the others
        gate.set()
        assert await asyncio.wait_for(leader, 10) == 1
        values = await asyncio.wait_for(asyncio.gather(*sharers), 10)
        assert all(v > asked for v in values), values
        assert sent == 2
        with pytest.raises(asyncio.CancelledError):
            await queued_sender
        assert shared._slots == {}

    asyncio.run(main())


CALLERS = 32


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_wave_reads_the_status_far_fewer_times_than_it_has_callers(tmp_path: Path, api: str) -> None:
    """A real wave on the gRPC backend: one STARTED, one instance, and the woken callers' reads
    shared (each caller used to send its own after the release)."""
    with DurableTestBackend(latency=0.001) as backend:
        if api == "sync":
            client = TaskHubGrpcClient(host_address=backend.address)
            try:
                with SingletonStarter(client, lock=FileLease(tmp_path), lease_ttl=15, wait=60) as starter:
                    records = fire_threads(CALLERS, lambda _i: starter.start("orch", instance_id="hot"))
            finally:
                client.close()
        else:

            async def main() -> list[Any]:
                aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
                try:
                    lock = AsyncFileLease(tmp_path)
                    async with AsyncSingletonStarter(aclient, lock=lock, lease_ttl=15, wait=60) as s:
                        return await fire_tasks(CALLERS, lambda _i: s.start("orch", instance_id="hot"))
                finally:
                    await aclient.close()

            records = asyncio.run(main())
        outcomes = Counter(r.value.outcome for r in records)
        assert outcomes == {StartOutcome.STARTED: 1, StartOutcome.ALREADY_RUNNING: CALLERS - 1}, outcomes
        assert backend.ledger.snapshot().created["hot"] == 1
        reads = backend.calls.snapshot().by_method(lambda iid: iid == "hot")["GetInstance"]
        assert reads < CALLERS // 2, reads


class InterruptOnWait:
    """Stands in for the in-flight read's done event: the queued sender's wait on it is interrupted."""

    def __init__(self, real: threading.Event) -> None:
        self.real = real
        self.interrupted = False

    def wait(self, timeout: float | None = None) -> bool:
        if not self.interrupted:
            self.interrupted = True
            raise Interrupted()
        return self.real.wait(timeout)

    def set(self) -> None:
        self.real.set()

    def is_set(self) -> bool:
        return self.real.is_set()


def test_a_sender_interrupted_while_queued_strands_no_one() -> None:
    reads = NumberedReads()
    shared = SharedReads(reads)
    first = threading.Thread(target=lambda: shared.read("id", True))
    first.start()
    assert reads.first_in_flight.wait(30)
    slot = shared._slots[("id", True)]
    assert slot.running is not None
    slot.running.done = InterruptOnWait(slot.running.done)  # type: ignore[assignment]
    with pytest.raises(Interrupted):
        shared.read("id", True)  # becomes the queued sender, interrupted while it waits its turn
    got: list[int] = []
    later = threading.Thread(target=lambda: got.append(shared.read("id", True)))
    later.start()
    later.join(10)
    assert not later.is_alive(), "a later read of the ID hangs on the abandoned queued read"
    assert got and got[0] >= 2
    reads.gate.set()
    first.join(30)
    poll_until(lambda: shared._slots == {}, 10, "nothing kept once idle")


def test_async_sharers_read_alone_when_the_queued_read_is_cancelled() -> None:
    async def main() -> None:
        sent = 0
        gate = asyncio.Event()

        async def read(instance_id: str, payloads: bool, *, timeout: float | None = None) -> int:
            nonlocal sent
            sent += 1
            number = sent
            if number == 1:
                await gate.wait()
            return number

        shared = AsyncSharedReads(read)
        leader = asyncio.create_task(shared.read("id", True))
        await asyncio.sleep(0)
        sharers = [asyncio.create_task(shared.read("id", True)) for _ in range(3)]
        await asyncio.sleep(0)
        queued = shared._slots[("id", True)].queued
        assert queued is not None
        queued.cancel()  # what a shutdown cancelling every task does
        values = await asyncio.wait_for(asyncio.gather(*sharers), 10)
        assert all(v >= 2 for v in values), values  # not a false CancelledError: each read alone
        assert await asyncio.wait_for(shared.read("id", True), 10) >= 2  # the ID is not stuck
        gate.set()
        assert await asyncio.wait_for(leader, 10) == 1
        assert shared._slots == {}

    asyncio.run(main())


def test_each_sharer_raises_its_own_copy_of_the_error() -> None:
    reads = NumberedReads()
    reads.fail_with = LookupError("no such hub")
    shared = SharedReads(reads)
    results, _sent = ask_many(shared, reads, 6)
    errors = [v for _a, v in results if isinstance(v, LookupError)]
    assert len(errors) == 6
    assert len({id(e) for e in errors}) == len(errors)  # tracebacks do not pile up on one object
    assert all(e.args == ("no such hub",) for e in errors)
