"""Reuse after completion, with a real TaskHubGrpcWorker executing the orchestration.

Wave 1 starts exactly one instance; wave 2, while it is still running, starts none;
after it completes, wave 3 starts exactly one new instance. Through the core gRPC
clients and the Durable Task Scheduler clients, sync and async, file and Redis leases.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from suite_helpers import LOCK_KINDS, running_worker, wait_for_finish

WAVE = 16
IID = "nightly-report"


@pytest.fixture
def worker(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcWorker]:
    with running_worker(strict_singleton_durable_backend.address, wait_for_finish) as w:
        yield w


def make_sync_client(kind: str, address: str) -> TaskHubGrpcClient:
    if kind == "dts":
        return DurableTaskSchedulerClient(
            host_address=address, secure_channel=False, token_credential=None, taskhub="default"
        )
    return TaskHubGrpcClient(host_address=address)


def make_async_client(kind: str, address: str) -> AsyncTaskHubGrpcClient:
    if kind == "dts":
        return AsyncDurableTaskSchedulerClient(
            host_address=address, secure_channel=False, token_credential=None, taskhub="default"
        )
    return AsyncTaskHubGrpcClient(host_address=address)


def counts(values: list[Any]) -> Counter[StartOutcome]:
    errors = [v for v in values if isinstance(v, Exception)]
    assert not errors, errors[:3]
    return Counter(v.outcome for v in values)


@pytest.mark.parametrize("lock_url", LOCK_KINDS, indirect=True)
@pytest.mark.parametrize("client_kind", ["grpc", "dts"])
def test_reuse_after_completion_sync(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, lock_url: str, client_kind: str
) -> None:
    client = make_sync_client(client_kind, strict_singleton_durable_backend.address)
    lock = lock_from_url(lock_url)
    with SingletonStarter(client, lock=lock, lease_ttl=15) as starter:

        def wave() -> Counter[StartOutcome]:
            recs = fire_threads(WAVE, lambda _i: starter.start(wait_for_finish, instance_id=IID, input="x"))
            return counts([r.value for r in recs])

        first = wave()
        assert first[StartOutcome.STARTED] == 1
        client.wait_for_orchestration_start(IID, timeout=10)
        while_running = wave()
        assert while_running[StartOutcome.STARTED] == 0
        assert while_running[StartOutcome.ALREADY_RUNNING] == WAVE
        assert strict_singleton_durable_backend.ledger.snapshot().created[IID] == 1

        client.raise_orchestration_event(IID, "finish", data="ok")
        state = client.wait_for_orchestration_completion(IID, timeout=10)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED

        again = wave()
        assert again[StartOutcome.STARTED] == 1
        assert strict_singleton_durable_backend.ledger.snapshot().created[IID] == 2
        new_state = client.get_orchestration_state(IID)
        assert new_state is not None and new_state.runtime_status != OrchestrationStatus.COMPLETED
    lock.close()
    client.close()


@pytest.mark.parametrize("lock_url", LOCK_KINDS, indirect=True)
@pytest.mark.parametrize("client_kind", ["grpc", "dts"])
def test_reuse_after_completion_async(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, lock_url: str, client_kind: str
) -> None:
    async def main() -> None:
        client = make_async_client(client_kind, strict_singleton_durable_backend.address)
        lock = lock_from_url(lock_url, asynchronous=True)
        async with AsyncSingletonStarter(client, lock=lock, lease_ttl=15) as starter:

            async def wave() -> Counter[StartOutcome]:
                recs = await fire_tasks(WAVE, lambda _i: starter.start(wait_for_finish, instance_id=IID, input="x"))
                return counts([r.value for r in recs])

            assert (await wave())[StartOutcome.STARTED] == 1
            await client.wait_for_orchestration_start(IID, timeout=10)
            while_running = await wave()
            assert while_running[StartOutcome.STARTED] == 0
            assert while_running[StartOutcome.ALREADY_RUNNING] == WAVE
            await client.raise_orchestration_event(IID, "finish", data="ok")
            state = await client.wait_for_orchestration_completion(IID, timeout=10)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            assert (await wave())[StartOutcome.STARTED] == 1
            assert strict_singleton_durable_backend.ledger.snapshot().created[IID] == 2
        await lock.close()
        await client.close()

    asyncio.run(main())
