"""Waiting: BUSY when a holder outlasts `wait`; woken promptly on release; per-ID locks."""

from __future__ import annotations

import asyncio
import threading

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.locks import lock_from_url
from suite_helpers import LOCK_KINDS, token

KINDS = LOCK_KINDS


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_busy_when_holder_outlasts_wait_sync(
    durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    holder = lock_from_url(lock_url)
    assert holder.acquire("held", token("someone-else"), 30.0) is not None
    starter = SingletonStarter(client, lock=lock_from_url(lock_url), lease_ttl=30, wait=0.3)
    result = starter.start("orch", instance_id="held")
    assert result.outcome is StartOutcome.BUSY and not result.started
    assert result.existing is None and result.waited >= 0.25
    assert durable_backend.instance_count() == 0
    # Different IDs never wait on each other: another ID starts at once.
    other = starter.start("orch", instance_id="free")
    assert other.outcome is StartOutcome.STARTED and other.waited == 0.0
    starter.close()
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_busy_when_holder_outlasts_wait_async(durable_backend: DurableTestBackend, lock_url: str) -> None:
    holder = lock_from_url(lock_url)
    assert holder.acquire("held", token("someone-else"), 30.0) is not None

    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=durable_backend.address)
        lock = lock_from_url(lock_url, asynchronous=True)
        async with AsyncSingletonStarter(client, lock=lock, lease_ttl=30, wait=0.3) as starter:
            result = await starter.start("orch", instance_id="held")
            assert result.outcome is StartOutcome.BUSY and result.waited >= 0.25
            other = await starter.start("orch", instance_id="free")
            assert other.outcome is StartOutcome.STARTED and other.waited == 0.0
        await lock.close()
        await client.close()

    asyncio.run(main())
    assert durable_backend.ledger.snapshot().created == {"free": 1}
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_waiter_admitted_when_holder_releases(
    durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    """A holder that gives up without starting anything: the waiter then starts it."""
    holder = lock_from_url(lock_url)
    assert holder.acquire("handover", token("holder"), 30.0) is not None
    starter = SingletonStarter(client, lock=lock_from_url(lock_url), lease_ttl=30, wait=20)
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(starter.start("orch", instance_id="handover")))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # waiting on the held lease
    holder.release("handover", token("holder"))
    t.join(10)
    assert not t.is_alive()
    (result,) = results
    assert result.outcome is StartOutcome.STARTED  # type: ignore[attr-defined]
    assert 0.25 <= result.waited < 10  # type: ignore[attr-defined]
    starter.close()
    holder.close()


@pytest.mark.parametrize("lock_url", KINDS, indirect=True)
def test_stuck_holder_does_not_delay_already_running(
    durable_backend: DurableTestBackend, client: TaskHubGrpcClient, lock_url: str
) -> None:
    """The instance is active and a holder sits on the lease (e.g. crashed mid-check): callers
    still answer ALREADY_RUNNING after a brief wait, not after the holder's whole lease."""
    starter = SingletonStarter(client, lock=lock_from_url(lock_url), lease_ttl=30, wait=20, background_finish=False)
    assert starter.start("orch", instance_id="active").started
    holder = lock_from_url(lock_url)
    assert holder.acquire("active", token("stuck"), 30.0) is not None
    result = starter.start("orch", instance_id="active")
    assert result.outcome is StartOutcome.ALREADY_RUNNING and result.existing is not None
    assert result.waited < 2.0  # FIRST_WAIT (50 ms) plus scheduling noise, never the 30 s lease
    holder.close()
