"""Starters in separate OS processes, lined up per round by a multiprocessing barrier."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

from strict_singleton.testing.swarm import fire_tasks, fire_threads


@dataclass(frozen=True)
class WorkerSpec:
    address: str  # Durable backend host:port
    lock_url: str
    api: str  # "threads" or "asyncio"
    starters: int  # per process
    rounds: int
    id_prefix: str
    lease_ttl: float = 15.0
    key_prefix: str = "strict-singleton:"
    orchestrator: str = "orch"
    input: Any = None
    event_name: str | None = None  # set: start_or_signal, each call's event data "p<process>-<caller>"


def _call(spec: WorkerSpec, starter: Any, iid: str, proc_index: int, i: int) -> Any:
    """One caller's start (or start_or_signal) for round instance ``iid``: a result, or a coroutine."""
    if spec.event_name is None:
        return starter.start(spec.orchestrator, instance_id=iid, input=spec.input)
    return starter.start_or_signal(
        spec.orchestrator,
        instance_id=iid,
        event_name=spec.event_name,
        event_data=f"p{proc_index}-{i}",
        input=spec.input,
    )


def run_worker(spec: WorkerSpec, proc_index: int, barrier: Any, results: Any) -> None:
    """Body of one swarm process: for each round, wait on the barrier, then fire."""
    if spec.api == "asyncio":
        asyncio.run(_run_async(spec, proc_index, barrier, results))
    else:
        _run_sync(spec, proc_index, barrier, results)


def _run_sync(spec: WorkerSpec, proc_index: int, barrier: Any, results: Any) -> None:
    from durabletask.client import TaskHubGrpcClient

    from strict_singleton import SingletonStarter
    from strict_singleton.lock_backends import from_url

    client = TaskHubGrpcClient(host_address=spec.address)
    lock = from_url(spec.lock_url, prefix=spec.key_prefix)
    with SingletonStarter(client, lock=lock, lease_ttl=spec.lease_ttl) as starter:
        for r in range(spec.rounds):
            iid = f"{spec.id_prefix}-{r}"
            barrier.wait()

            def call(i: int, iid: str = iid) -> Any:
                return _call(spec, starter, iid, proc_index, i)

            recs = fire_threads(spec.starters, call)
            results.put(
                (os.getpid(), proc_index, r, [_summarize(rec.value) for rec in recs], [rec.began for rec in recs])
            )
    lock.close()
    client.close()


async def _run_async(spec: WorkerSpec, proc_index: int, barrier: Any, results: Any) -> None:
    from durabletask.client import AsyncTaskHubGrpcClient

    from strict_singleton import AsyncSingletonStarter
    from strict_singleton.lock_backends import from_url

    client = AsyncTaskHubGrpcClient(host_address=spec.address)
    lock = from_url(spec.lock_url, asynchronous=True, prefix=spec.key_prefix)
    loop = asyncio.get_running_loop()
    async with AsyncSingletonStarter(client, lock=lock, lease_ttl=spec.lease_ttl) as starter:
        for r in range(spec.rounds):
            iid = f"{spec.id_prefix}-{r}"
            await loop.run_in_executor(None, barrier.wait)

            def acall(i: int, iid: str = iid) -> Any:
                return _call(spec, starter, iid, proc_index, i)

            recs = await fire_tasks(spec.starters, acall)
            results.put(
                (os.getpid(), proc_index, r, [_summarize(rec.value) for rec in recs], [rec.began for rec in recs])
            )
    await lock.close()
    await client.close()


def _summarize(value: Any) -> str:
    outcome = getattr(value, "outcome", None)
    return outcome.value if outcome is not None else f"error:{type(value).__name__}"


def run_process_swarm(spec: WorkerSpec, processes: int, *, timeout: float = 120.0) -> list[tuple[Any, ...]]:
    """Run ``processes`` spawned worker processes; return every (pid, proc, round, outcomes, began) row."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [ctx.Process(target=run_worker, args=(spec, i, barrier, results), daemon=True) for i in range(processes)]
    for p in procs:
        p.start()
    rows: list[tuple[Any, ...]] = []
    expected = processes * spec.rounds
    try:
        while len(rows) < expected:
            rows.append(results.get(timeout=timeout))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"swarm processes failed with exit codes {bad}")
    return rows
