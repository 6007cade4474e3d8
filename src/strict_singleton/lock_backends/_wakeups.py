"""In-process wake-ups for lease backends whose store cannot notify waiters.

A release made in this process wakes this process's waiters at once; waiters in other
processes fall back to short polling. Keys are opaque strings chosen by each backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class ReleaseBoard:
    """Wakes waiters in this process when a lease on a path is released here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, set[Callable[[], None]]] = {}

    def register(self, path: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.setdefault(path, set()).add(callback)

    def unregister(self, path: str, callback: Callable[[], None]) -> None:
        with self._lock:
            callbacks = self._callbacks.get(path)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._callbacks[path]

    def notify(self, path: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(path, ()))
        for callback in callbacks:
            callback()


RELEASES = ReleaseBoard()


def wait_sync(key: str, timeout: float) -> None:
    """Block until ``key`` is released in this process, or ``timeout`` seconds."""
    event = threading.Event()
    RELEASES.register(key, event.set)
    try:
        event.wait(max(0.0, timeout))
    finally:
        RELEASES.unregister(key, event.set)


async def wait_async(key: str, timeout: float) -> None:
    """The asyncio twin of :func:`wait_sync` (wake-ups may come from any thread)."""
    import asyncio
    import contextlib

    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(event.set)

    RELEASES.register(key, wake)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
    finally:
        RELEASES.unregister(key, wake)
