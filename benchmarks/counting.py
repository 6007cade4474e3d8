"""Counting the lock-store round trips a strict start makes, in the starter processes.

:class:`LockCounter` is the race harness's instrument (``RaceConfig(instrument=LockCounter)``):
one per strategy per starter process. It wraps the lease backend the strict starter is
built with in a :class:`CountingLease`, a proxy with the same protocol (sync or async, as
the backend it wraps) that counts and times every call to the store, and it marks each
call as made on the caller's path (by the ``start()`` call itself, in its own thread or
task, before it returned) or in the background (the starter's finishing thread or task,
or after ``start()`` returned).

Cost per lock call: one context-variable read, two ``perf_counter`` reads and a counter
update under a lock (a few microseconds; a Redis round trip is ~70 us of client CPU).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# Protocol methods that are no store round trip.
LOCAL = frozenset({"validate_ttl", "close"})
# Short names for the table; any other method the store gains is counted under its own name.
SHORT = {"wait_for_release": "wait"}
CALLER, BACKGROUND = "caller", "background"


class _Call:
    """One ``start()`` call in progress: where it runs, and whether it has returned."""

    __slots__ = ("open", "task", "thread")

    def __init__(self) -> None:
        self.open = True
        self.thread = threading.get_ident()
        self.task = _current_task()


_CURRENT: ContextVar[_Call | None] = ContextVar("strict_singleton_bench_call", default=None)


def _current_task() -> object | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a thread
        return None


def _path() -> str:
    """Whether a lock call now is on the caller's path.

    A background thread starts with an empty context; a background task inherits the
    caller's context but runs as another task (and usually after the call returned).
    """
    call = _CURRENT.get()
    if call is None or not call.open or call.thread != threading.get_ident() or call.task is not _current_task():
        return BACKGROUND
    return CALLER


class LockCounter:
    """The instrument: counts starts, and lock calls per (method, path) with their time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.starts = 0
        self.calls: Counter[str] = Counter()  # "acquire/caller" -> calls
        self.seconds: Counter[str] = Counter()  # "acquire/caller" -> seconds spent in those calls

    def wrap_lock(self, lock: Any) -> CountingLease:
        return CountingLease(lock, self)

    @contextmanager
    def calling(self) -> Iterator[None]:
        call = _Call()
        token = _CURRENT.set(call)
        with self._lock:
            self.starts += 1
        try:
            yield
        finally:
            call.open = False
            _CURRENT.reset(token)

    def record(self, op: str, path: str, seconds: float) -> None:
        key = f"{op}/{path}"
        with self._lock:
            self.calls[key] += 1
            self.seconds[key] += seconds

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"starts": self.starts, "calls": dict(self.calls), "seconds": dict(self.seconds)}


class CountingLease:
    """A lease backend proxy (sync or async, as the one it wraps) that reports each store call.

    Every public method of the wrapped backend is forwarded; the ones that reach the
    store (all but ``validate_ttl`` and ``close``) are counted, including methods the
    protocol may gain later.
    """

    def __init__(self, inner: Any, counter: LockCounter) -> None:
        self._inner = inner
        self._counter = counter

    def __repr__(self) -> str:
        return f"CountingLease({self._inner!r})"

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr.startswith("_") or attr in LOCAL or not callable(value):
            return value
        wrapped = _counted(value, SHORT.get(attr, attr), self._counter)
        setattr(self, attr, wrapped)  # built once per method: later lookups skip __getattr__
        return wrapped


def _counted(fn: Callable[..., Any], op: str, counter: LockCounter) -> Callable[..., Any]:
    """``fn`` counted as ``op``; an acquire that returns no grant counts as ``acquire-refused``."""
    clock = time.perf_counter
    refused = f"{op}-refused" if op == "acquire" else op
    if inspect.iscoroutinefunction(fn):

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            path, began, result = _path(), clock(), None
            try:
                result = await fn(*args, **kwargs)
                return result
            finally:
                counter.record(op if result is not None else refused, path, clock() - began)

        return counted_async

    def counted(*args: Any, **kwargs: Any) -> Any:
        path, began, result = _path(), clock(), None
        try:
            result = fn(*args, **kwargs)
            return result
        finally:
            counter.record(op if result is not None else refused, path, clock() - began)

    return counted
