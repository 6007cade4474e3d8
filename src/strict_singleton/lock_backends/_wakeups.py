"""Waking callers that wait for a lease release, per key.

One :class:`ReleaseBoard` serves every backend. The process-wide :data:`RELEASES`
board wakes this process's waiters when a lease is released here, for stores that
cannot notify (file locks, Blob, Redlock's quorum); waiters in other processes fall
back to short polling. The Redis lease keeps a board of its own, keyed by instance ID,
which its pub/sub listener notifies. Keys are opaque strings chosen by each backend.

A waiter registers *before* it checks whether the lease is still held, so a release
notified after that check always finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator


class ReleaseBoard:
    """Callbacks of callers waiting for a release, per key; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, set[Callable[[], None]]] = {}

    def register(self, key: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.setdefault(key, set()).add(callback)

    def unregister(self, key: str, callback: Callable[[], None]) -> None:
        with self._lock:
            callbacks = self._callbacks.get(key)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._callbacks[key]

    @contextlib.contextmanager
    def waiting(self, key: str, callback: Callable[[], None]) -> Iterator[None]:
        """``callback`` is registered for ``key`` inside the ``with`` block."""
        self.register(key, callback)
        try:
            yield
        finally:
            self.unregister(key, callback)

    def notify(self, key: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(key, ()))
        for callback in callbacks:
            callback()

    def notify_all(self) -> None:
        """Wake every waiter (e.g. when a listener stops and waiters must re-check)."""
        with self._lock:
            callbacks = [c for cs in self._callbacks.values() for c in cs]
        for callback in callbacks:
            callback()


RELEASES = ReleaseBoard()


def wait_sync(key: str, timeout: float) -> bool:
    """Block until ``key`` is released in this process (True), or ``timeout`` seconds (False)."""
    event = threading.Event()
    with RELEASES.waiting(key, event.set):
        return event.wait(max(0.0, timeout))


async def wait_async(key: str, timeout: float) -> bool:
    """The asyncio twin of :func:`wait_sync` (wake-ups may come from any thread)."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(event.set)

    with RELEASES.waiting(key, wake):
        return await wait_event(event, timeout)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds.

    Not ``asyncio.wait_for``: before Python 3.12 it can return normally when the waiting task
    is cancelled just as the event is set, and the caller's cancellation (or its
    ``asyncio.timeout`` deadline) is lost.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()
    return event.is_set()
