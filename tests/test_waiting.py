"""Waiting: BUSY when a holder outlasts `wait`; woken promptly on release; per-ID locks.

Time spent waiting is counted on an injected clock that each real ``wait_for_release``
call advances by its timeout (``WatchedLock``), so ``waited`` is exact, never measured."""

from __future__ import annotations

import asyncio
import threading

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome
from strict_singleton._flow import FIRST_WAIT
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend
from suite_helpers import LOCK_KINDS, FakeClock, WatchedLock, token

KINDS = LOCK_KINDS


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_busy_when_holder_outlasts_wait_sync(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    holder = lock_from_url(lock_url)
    assert holder.acquire("held", token("someone-else"), 30.0) is not None
    clock = FakeClock()
    lock = WatchedLock(lock_from_url(lock_url), clock)
    starter = SingletonStarter(
        client, lock=lock, lease_ttl=30, wait=0.3, _clock=clock, options=StarterOptions(background_finish=False)
    )
    result = starter.start("orch", instance_id="held")
    assert result.outcome is StartOutcome.BUSY and not result.started
    assert result.existing is None
    assert result.waited == pytest.approx(0.3) == sum(lock.waits)  # the whole budget, waiting for a release
    assert strict_singleton_durable_backend.instance_count() == 0
    # Different IDs never wait on each other: another ID starts at once.
    other = starter.start("orch", instance_id="free")
    assert other.outcome is StartOutcome.STARTED and other.waited == 0.0
    starter.close()
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_busy_when_holder_outlasts_wait_async(
    strict_singleton_durable_backend: DurableTestBackend, lock_url: str
) -> None:
    holder = lock_from_url(lock_url)
    assert holder.acquire("held", token("someone-else"), 30.0) is not None

    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        clock = FakeClock()
        lock = WatchedLock(lock_from_url(lock_url, asynchronous=True), clock)
        async with AsyncSingletonStarter(
            client, lock=lock, lease_ttl=30, wait=0.3, _clock=clock, options=StarterOptions(background_finish=False)
        ) as starter:
            result = await starter.start("orch", instance_id="held")
            assert result.outcome is StartOutcome.BUSY
            assert result.waited == pytest.approx(0.3) == sum(lock.waits)
            other = await starter.start("orch", instance_id="free")
            assert other.outcome is StartOutcome.STARTED and other.waited == 0.0
        await lock.close()
        await client.close()

    asyncio.run(main())
    assert strict_singleton_durable_backend.ledger.snapshot().created == {"free": 1}
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_waiter_admitted_when_holder_releases(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    """A holder that gives up without starting anything: the waiter, woken by the release
    (its own budget is 600 s and a missed wake-up would cost the holder's 30 s lease),
    then starts it."""
    holder = lock_from_url(lock_url)
    assert holder.acquire("handover", token("holder"), 30.0) is not None
    lock = WatchedLock(lock_from_url(lock_url))
    starter = SingletonStarter(client, lock=lock, lease_ttl=30, wait=600)
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(starter.start("orch", instance_id="handover")))
    t.start()
    assert lock.waiting.wait(20), "the starter never waited for the held lease"
    assert not results  # still waiting: the lease is held
    holder.release("handover", token("holder"))
    t.join(20)
    assert not t.is_alive(), "the waiter was not woken by the release"
    (result,) = results
    assert result.outcome is StartOutcome.STARTED  # type: ignore[attr-defined]
    assert strict_singleton_durable_backend.ledger.snapshot().created == {"handover": 1}
    starter.close()
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_stuck_holder_does_not_delay_already_running(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    """The instance is active and a holder sits on the lease (e.g. crashed mid-check): callers
    still answer ALREADY_RUNNING after a brief wait, not after the holder's whole lease."""
    clock = FakeClock()
    lock = WatchedLock(lock_from_url(lock_url), clock)
    starter = SingletonStarter(
        client, lock=lock, lease_ttl=30, wait=20, _clock=clock, options=StarterOptions(background_finish=False)
    )
    assert starter.start("orch", instance_id="active").started
    holder = lock_from_url(lock_url)
    assert holder.acquire("active", token("stuck"), 30.0) is not None
    result = starter.start("orch", instance_id="active")
    assert result.outcome is StartOutcome.ALREADY_RUNNING and result.existing is not None
    assert lock.waits == [FIRST_WAIT]  # one brief wait, then the answer from a status read
    assert result.waited == pytest.approx(FIRST_WAIT)
    holder.close()
