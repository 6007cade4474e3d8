"""start_or_signal: one instance per wave, and each call's event raised exactly
once to it, with a real TaskHubGrpcWorker running an orchestrator that collects them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from strict_singleton import (
    AsyncSingletonStarter,
    InvalidArgumentError,
    SignalError,
    SingletonStarter,
    StartOutcome,
)
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from suite_helpers import poll_until, running_worker

WAVE = 16


def collect(ctx: task.OrchestrationContext, n: int) -> Any:
    got: list[Any] = []
    while len(got) < n:
        item = yield ctx.wait_for_external_event("item")
        got.append(item)
    return got


@pytest.fixture
def worker(strict_singleton_durable_backend: DurableTestBackend) -> Iterator[TaskHubGrpcWorker]:
    with running_worker(strict_singleton_durable_backend.address, collect) as w:
        yield w


def collected(client: TaskHubGrpcClient, iid: str) -> list[str]:
    poll_until(
        lambda: (
            (s := client.get_orchestration_state(iid)) is not None and s.runtime_status is OrchestrationStatus.COMPLETED
        ),
        60,
        f"{iid} to collect {WAVE} events",
    )
    state = client.get_orchestration_state(iid)
    assert state is not None and state.serialized_output is not None
    import json

    return sorted(json.loads(state.serialized_output))


def check_round(results: list[Any], client: TaskHubGrpcClient, backend: DurableTestBackend, iid: str) -> None:
    counts = Counter(r.outcome for r in results)
    assert counts == {StartOutcome.STARTED: 1, StartOutcome.SIGNALED: WAVE - 1}, (iid, counts)
    assert backend.ledger.snapshot().created[iid] == 1
    assert collected(client, iid) == sorted(f"p{i}" for i in range(WAVE))  # each payload exactly once


def threads_rounds(backend: DurableTestBackend, tmp_path: Path, rounds: int) -> None:
    client = TaskHubGrpcClient(host_address=backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    for r in range(rounds):
        iid = f"sig-{r}"
        recs = fire_threads(
            WAVE,
            lambda i, iid=iid: starter.start_or_signal(
                collect, instance_id=iid, event_name="item", event_data=f"p{i}", input=WAVE
            ),
        )
        assert not [rec.value for rec in recs if rec.raised]
        check_round([rec.value for rec in recs], client, backend, iid)
    starter.close()
    client.close()


@pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)
def test_a_wave_of_threads_one_instance_every_event_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    threads_rounds(strict_singleton_durable_backend, tmp_path, rounds=3)


@pytest.mark.slow  # a wave of 16 callers x 20 rounds
@pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)
def test_a_wave_of_threads_20_rounds(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    threads_rounds(strict_singleton_durable_backend, tmp_path, rounds=20)


@pytest.mark.parametrize("strict_singleton_durable_backend", ["atomic", "overwrite"], indirect=True)
def test_a_wave_of_tasks_one_instance_every_event_once(
    strict_singleton_durable_backend: DurableTestBackend, worker: TaskHubGrpcWorker, tmp_path: Path
) -> None:
    backend = strict_singleton_durable_backend
    sync_client = TaskHubGrpcClient(host_address=backend.address)

    async def rounds() -> None:
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        async with AsyncSingletonStarter(client, lock=AsyncFileLease(tmp_path)) as starter:
            for r in range(3):
                iid = f"asig-{r}"
                recs = await fire_tasks(
                    WAVE,
                    lambda i, iid=iid: starter.start_or_signal(
                        collect, instance_id=iid, event_name="item", event_data=f"p{i}", input=WAVE
                    ),
                )
                assert not [rec.value for rec in recs if rec.raised]
                check_round([rec.value for rec in recs], sync_client, backend, iid)
        await client.close()

    asyncio.run(rounds())
    sync_client.close()


@pytest.mark.parametrize(
    "kw",
    [{"event_name": ""}, {"event_name": " item"}, {"event_name": 3}, {"event_data": object()}],
    ids=repr,
)
def test_bad_events_are_refused_before_any_lease(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, kw: dict[str, Any]
) -> None:
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    starter = SingletonStarter(client, lock=FileLease(tmp_path))
    args: dict[str, Any] = {"event_name": "item", **kw}
    with pytest.raises(InvalidArgumentError):
        starter.start_or_signal("collect", instance_id="bad-signal", **args)
    assert list(tmp_path.iterdir()) == []
    assert strict_singleton_durable_backend.ledger.snapshot().created["bad-signal"] == 0
    client.close()


# -- a failed event, in memory ---------------------------------------------------------------


def _run(world: Any, fail: str, *, existing: bool) -> Any:
    from strict_singleton import _flow
    from strict_singleton._validation import StartCall, config_of
    from strict_singleton.testing.world import DEFAULT, RpcError, drive

    if existing:
        world.backend.schedule("s", {})
    cfg = config_of(
        lease_ttl=10.0, confirm_visible=True, background_finish=False, max_instance_id_length=256,
        fetch_payloads=True, backend="sim",
    )  # fmt: skip
    import dataclasses

    cfg = dataclasses.replace(cfg, start_records=True)
    call = StartCall("s", "collect", None, {}, None, None, signal=("item", "x"))

    def failing_event(op: Any) -> Any:
        if isinstance(op, _flow.RaiseEvent):
            raise RpcError(fail)
        return DEFAULT

    flow = _flow.start_flow(call, cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall)
    return drive(flow, world, failing_event)


@pytest.mark.parametrize(("code", "maybe"), [("UNAVAILABLE", True), ("DEADLINE_EXCEEDED", True), ("NOT_FOUND", False)])
def test_a_failed_event_on_an_active_instance_says_whether_it_may_have_arrived(code: str, maybe: bool) -> None:
    from strict_singleton.testing.world import World

    world = World(profile="atomic")
    with pytest.raises(SignalError) as raised:
        _run(world, code, existing=True)
    assert raised.value.maybe_delivered is maybe and not raised.value.started and not raised.value.maybe_scheduled
    assert world.store.holder("s") is None and world.backend.created("s") == 1


def test_a_failed_event_after_starting_still_hands_back_the_lease_with_its_record() -> None:
    from strict_singleton.testing.world import World

    world = World(profile="atomic")
    result = _run(world, "UNAVAILABLE", existing=False)
    assert result.error is not None and isinstance(result.error, SignalError)
    assert result.error.started and result.error.maybe_scheduled and result.error.maybe_delivered
    assert result.hold is not None  # the driver runs the finish (release with record), then raises
    assert result.result.outcome is StartOutcome.STARTED and world.backend.created("s") == 1


@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_starters_release_the_lease_then_raise_a_failed_event(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """A fault injected into the client's event call (not into the starter): the instance
    this call created stays, the lease is handed back, the caller gets SignalError."""
    from strict_singleton.testing.world import RpcError

    backend = strict_singleton_durable_backend

    def unavailable(*_a: Any, **_k: Any) -> None:
        raise RpcError("UNAVAILABLE")

    async def unavailable_async(*_a: Any, **_k: Any) -> None:
        raise RpcError("UNAVAILABLE")

    if api == "sync":
        client = TaskHubGrpcClient(host_address=backend.address)
        monkeypatch.setattr(client, "raise_orchestration_event", unavailable)
        with SingletonStarter(client, lock=FileLease(tmp_path)) as starter:
            with pytest.raises(SignalError) as raised:
                starter.start_or_signal("collect", instance_id="lost-event", event_name="item")
            after = starter.start("collect", instance_id="lost-event").outcome
        client.close()
    else:

        async def go() -> tuple[Any, Any]:
            aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
            monkeypatch.setattr(aclient, "raise_orchestration_event", unavailable_async)
            async with AsyncSingletonStarter(aclient, lock=AsyncFileLease(tmp_path)) as starter:
                with pytest.raises(SignalError) as caught:
                    await starter.start_or_signal("collect", instance_id="lost-event", event_name="item")
                out = (await starter.start("collect", instance_id="lost-event")).outcome
            await aclient.close()
            return caught, out

        raised, after = asyncio.run(go())
    assert raised.value.started and raised.value.maybe_delivered
    assert after is StartOutcome.ALREADY_RUNNING  # the lease was released: not BUSY
    assert backend.ledger.snapshot().created["lost-event"] == 1
