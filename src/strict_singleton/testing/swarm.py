"""Fire many concurrent calls behind a barrier and collect what each returned.

``fire_threads`` and ``fire_tasks`` line callers up on a barrier so they call at
once; each result is the callable's return value or the exception it raised.
``describe`` names what one call did as an outcome string, so swarms can be counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CallRecord:
    index: int
    value: Any  # the return value, or the exception raised
    raised: bool
    began: float  # time.monotonic() (one clock for all processes on Linux) when the call was made (after the barrier)
    ended: float


def fire_threads(n: int, fn: Callable[[int], Any], *, timeout: float = 60.0) -> list[CallRecord]:
    """Run ``fn(i)`` for i in range(n) on n threads released together by a barrier."""
    barrier = threading.Barrier(n)
    records: list[CallRecord | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait(timeout)
        began = time.monotonic()
        try:
            value, raised = fn(i), False
        except Exception as exc:
            value, raised = exc, True
        records[i] = CallRecord(i, value, raised, began, time.monotonic())

    threads = [threading.Thread(target=run, args=(i,), name=f"swarm-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise TimeoutError(f"swarm callers still running after {timeout}s")
    return [r for r in records if r is not None]


async def fire_tasks(n: int, fn: Callable[[int], Awaitable[Any]]) -> list[CallRecord]:
    """Run ``await fn(i)`` for i in range(n) as tasks released together by an event."""
    go = asyncio.Event()
    ready = 0
    all_ready = asyncio.Event()

    async def run(i: int) -> CallRecord:
        nonlocal ready
        ready += 1
        if ready == n:
            all_ready.set()
        await go.wait()
        began = time.monotonic()
        try:
            value, raised = await fn(i), False
        except Exception as exc:
            value, raised = exc, True
        return CallRecord(i, value, raised, began, time.monotonic())

    tasks = [asyncio.ensure_future(run(i)) for i in range(n)]
    await all_ready.wait()
    go.set()
    return list(await asyncio.gather(*tasks))


def describe(value: Any) -> str:
    """One call's return value or exception as an outcome string.

    ``started`` (True), ``already_running`` (False), ``rejected`` (an error whose gRPC
    code is ALREADY_EXISTS), ``error:<Type>``, a start result's ``outcome`` value, or
    ``str(value)`` for anything else (a strategy's own ``busy``).
    """
    if isinstance(value, BaseException):
        code = getattr(value, "code", None)
        if callable(code):
            try:
                name = code().name
            except Exception:
                name = None
            if name == "ALREADY_EXISTS":
                return "rejected"
        return f"error:{type(value).__name__}"
    if value is True:
        return "started"
    if value is False:
        return "already_running"
    outcome = getattr(value, "outcome", None)
    return str(outcome.value) if outcome is not None else str(value)


__all__ = [
    "CallRecord",
    "describe",
    "fire_tasks",
    "fire_threads",
]
