"""Waiting for a Blob lease another process holds: one probe at a time per lease object, backing
off with jitter, acquires known to fail skipped, status reads once per wake-up rather than once
per poll. The coordination itself on an injected clock; the lease on a real Azurite, its requests
counted by an azure-core policy, the status reads by the real in-memory Durable backend."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest
from azure.storage.blob import BlobLeaseClient
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome
from strict_singleton.lock_backends import AsyncBlobLease, BlobLease
from strict_singleton.lock_backends._polled_waits import (
    FIRST_PROBE,
    HELD_TRUST,
    IN_FLIGHT_TRUST,
    MAX_PROBE,
    PolledWaits,
)
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.azurite import Azurite
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from suite_helpers import FakeClock, token


def waits(rand: float = 1.0) -> tuple[PolledWaits, FakeClock]:
    clock = FakeClock()
    return PolledWaits(clock=clock, rand=lambda: rand), clock


def test_one_prober_per_key_and_keys_are_independent() -> None:
    w, _clock = waits()
    assert w.claim_probe("a") and not w.claim_probe("a")
    assert w.claim_probe("b")  # another ID never waits on this one's prober
    w.end_probe("a")
    assert w.claim_probe("a")


def test_the_probe_interval_doubles_while_held_and_restarts_when_free() -> None:
    w, _clock = waits(rand=1.0)  # the top of each jittered range
    seen = []
    for _ in range(8):
        seen.append(w.pause("k"))
        w.probed("k", free=False)
    assert seen == [min(FIRST_PROBE * 2**i, MAX_PROBE) for i in range(8)]
    w.probed("k", free=True)
    assert w.pause("k") == FIRST_PROBE


@pytest.mark.parametrize("rand", [0.0, 0.37, 0.999])
def test_each_pause_is_drawn_from_the_upper_half_of_the_interval(rand: float) -> None:
    w, _clock = waits(rand=rand)
    w.probed("k", free=False)  # interval: 2 x FIRST_PROBE
    assert FIRST_PROBE <= w.pause("k") <= 2 * FIRST_PROBE


def test_an_acquire_known_to_fail_is_skipped_only_while_that_is_believed() -> None:
    w, clock = waits()
    w.refused("k")  # held, seen now
    assert not w.begin_acquire("k")
    clock.advance(FIRST_PROBE)
    assert not w.begin_acquire("k")  # the acquire after a caller's first short wait is not sent either
    clock.advance(HELD_TRUST - FIRST_PROBE + 1e-9)  # then the store is asked again
    assert w.begin_acquire("k")
    w.end_acquire("k")


def test_a_lease_held_here_is_not_remembered() -> None:
    """A lease a caller of this object holds may be broken or forgotten by the store: the next
    acquire asks the store, which may grant it at once."""
    w, _clock = waits()
    assert w.begin_acquire("k")
    w.acquired("k")
    w.end_acquire("k")
    assert w.begin_acquire("k")
    w.end_acquire("k")


def test_a_release_here_ends_what_was_believed_and_the_backoff() -> None:
    w, _clock = waits(rand=1.0)
    w.probed("k", free=False)
    w.probed("k", free=False)
    assert not w.begin_acquire("k")
    w.released("k")
    assert w.begin_acquire("k") and w.pause("k") == FIRST_PROBE


def test_flags_left_set_by_an_exception_are_believed_for_a_bounded_time_only() -> None:
    """An exception between taking a flag and the clean-up that clears it (a signal handler's)
    costs efficiency for IN_FLIGHT_TRUST, never the key."""
    w, clock = waits()
    assert w.begin_acquire("k") and w.claim_probe("k")  # never ended
    assert not w.begin_acquire("k") and not w.claim_probe("k")
    clock.advance(IN_FLIGHT_TRUST)
    assert w.begin_acquire("k") and w.claim_probe("k")


def test_idle_keys_are_forgotten() -> None:
    w, clock = waits()
    for i in range(10_000):
        key = f"id-{i}"
        assert w.begin_acquire(key)
        w.refused(key)
        w.end_acquire(key)
        assert w.claim_probe(key)
        w.probed(key, free=False)
        w.end_probe(key)
    assert len(w) == 10_000
    clock.advance(MAX_PROBE * 3)
    for i in range(100):  # later look-ups sweep
        w.begin_acquire(f"new-{i}")
        w.end_acquire(f"new-{i}")
    assert len(w) <= 100


class Requests:
    """Counts the lease-acquire and properties requests a client sends, and the most in flight, through
    the storage SDK's public per-request hooks (``raw_request_hook``, ``raw_response_hook``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        self.changed = threading.Condition(self.lock)

    def hooks(self) -> dict[str, Any]:
        return {"raw_request_hook": self.sent, "raw_response_hook": self.answered}

    @staticmethod
    def kind(http: Any) -> str:
        if http.method == "HEAD":
            return "probe"
        if http.headers.get("x-ms-lease-action") == "acquire":
            return "acquire"
        return "other"

    def sent(self, request: Any) -> None:
        kind = self.kind(request.http_request)
        with self.lock:
            self.counts[kind] += 1
            self.in_flight[kind] += 1
            self.most_in_flight[kind] = max(self.most_in_flight[kind], self.in_flight[kind])
            self.changed.notify_all()

    def answered(self, response: Any) -> None:
        with self.lock:
            self.in_flight[self.kind(response.http_request)] -= 1


CALLERS = 16


@pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)
@pytest.mark.parametrize("api", ["sync", "async"])
def test_callers_waiting_for_another_process_probe_once_at_a_time_and_read_once_per_wake_up(
    api: str,
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    strict_singleton_azurite: Azurite,
) -> None:
    """16 callers on one ID (threads, or asyncio tasks) while "another process" (a raw lease, unknown
    to this lease object and to this process's release board) holds it through at least 5 probes,
    starts the instance and lets go: the probes were made one at a time, backing off; once the
    first refusals were in, no acquire was sent while the lease was known held; and each caller
    read the status at most twice (after its first short wait, and after the release was seen),
    not once per probe; all answered ALREADY_RUNNING."""
    backend = strict_singleton_durable_backend
    counted = Requests()
    foreign = strict_singleton_azurite.container_client("locks")
    with SingletonStarter(client, lock=BlobLease(foreign), lease_ttl=15) as creator:
        assert creator.start("orch", instance_id="warm").outcome is StartOutcome.STARTED  # container made
    probe_lease = BlobLease(foreign)
    blob = foreign.get_blob_client(probe_lease.blob_name("hot"))
    blob.upload_blob(b"", overwrite=True)
    holder = BlobLeaseClient(blob, lease_id=token("another-process"))
    holder.acquire(lease_duration=15)
    backend.calls.reset()

    waits = PolledWaits(rand=lambda: 1.0)  # no jitter: the pauses are the intervals themselves
    pauses: list[float] = []
    pause = waits.pause
    waits.pause = lambda key: pauses.append(pause(key)) or pauses[-1]  # type: ignore[method-assign]
    acquires_while_held: list[int] = []

    def let_go_after_probes() -> None:
        with counted.changed:
            counted.changed.wait_for(lambda: counted.counts["probe"] >= 5, timeout=60)
            acquires_while_held.append(counted.counts["acquire"])
        client.schedule_new_orchestration("orch", instance_id="hot")  # the other process's start
        holder.release()

    releaser = threading.Thread(target=let_go_after_probes)
    releaser.start()
    try:
        if api == "sync":
            lease = BlobLease(strict_singleton_azurite.container_client("locks", **counted.hooks()))
            lease._waits = waits
            with SingletonStarter(client, lock=lease, lease_ttl=15, wait=60) as starter:
                records = fire_threads(CALLERS, lambda _i: starter.start("orch", instance_id="hot"))
        else:

            async def main() -> list[Any]:
                container = strict_singleton_azurite.container_client("locks", asynchronous=True, **counted.hooks())
                lease = AsyncBlobLease(container)
                lease._waits = waits
                aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
                try:
                    async with AsyncSingletonStarter(aclient, lock=lease, lease_ttl=15, wait=60) as starter:
                        return await fire_tasks(CALLERS, lambda _i: starter.start("orch", instance_id="hot"))
                finally:
                    await aclient.close()
                    await container.close()

            records = asyncio.run(main())
    finally:
        releaser.join(60)
    assert acquires_while_held, "the lease was never let go"
    outcomes = Counter(r.value.outcome for r in records)
    assert outcomes == {StartOutcome.ALREADY_RUNNING: CALLERS}, outcomes
    assert backend.ledger.snapshot().created["hot"] == 1

    assert counted.most_in_flight["probe"] == 1  # one prober at a time
    # Backing off: the 5th probe of a held lease came after a pause 2**4 times the first.
    assert max(pauses) >= min(FIRST_PROBE * 2**4, MAX_PROBE), sorted(set(pauses))
    # While held: each caller's first acquire, perhaps a second one (the first refusal was not in yet
    # when it tried again), and none after that however many probes were made.
    assert acquires_while_held[0] <= 2 * CALLERS
    reads = backend.calls.snapshot().by_method(lambda iid: iid == "hot")["GetInstance"]
    assert reads <= 2 * CALLERS, reads


def test_one_acquire_of_a_key_is_in_flight_at_a_time() -> None:
    w, _clock = waits()
    assert w.begin_acquire("k")
    assert not w.begin_acquire("k")  # a peer's acquire is in flight: at most one of them wins
    assert w.begin_acquire("other")  # other IDs are not held up
    w.refused("k")
    w.end_acquire("k")
    assert not w.begin_acquire("k")  # refused a moment ago
    w.released("k")
    assert w.begin_acquire("k")
