"""Status reads of one ID shared by a starter's concurrent callers.

When a start wave's holder releases, every caller of this process that waited for it
wakes at once and reads the instance's status: a wave of 128 threads sent 127 reads of
the same ID to the Durable backend at the same moment. Here they share: a caller that
asks while a read of that ID is in flight does not join it (it may have been answered
before the caller asked); it waits for the next read, which is sent once the one in
flight returns, and which every caller that asked meanwhile shares. A wave's burst of
reads costs the backend two, and each caller at most one read's extra latency.

Guarantee: every caller's answer comes from a read sent after that caller asked, as if
it had sent its own; an error of that read is every sharer's error (each raises its own
copy, where the exception can be copied). Only reads without a send-by time are shared
(reads under a lease with a deadline keep their own RPC and deadline). A caller whose
shared read was abandoned (an interrupt in its sender's thread, while sending or while
waiting its turn; an asyncio read task cancelled, by a shutdown say, while the caller was
not) sends its own, and nothing abandoned stays in the way of later reads. A queued read
waits for the one in flight at most :data:`QUEUE_WAIT` seconds, so a stalled RPC delays the
others by that much at most.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

QUEUE_WAIT = 1.0  # seconds a queued read waits for the read in flight before it is sent anyway

Key = tuple[str, bool]  # (instance ID, payloads)


@dataclass(slots=True)
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    value: Any = None
    error: BaseException | None = None  # an Exception: every sharer's; else abandoned (sharers read alone)


@dataclass(slots=True)
class _Slot:
    running: _Flight | None = None  # sent, not yet returned
    queued: _Flight | None = None  # not sent yet: callers that ask now share it


class SharedReads:
    """Shares ``read(instance_id, payloads, timeout=None)`` between threads (see the module)."""

    def __init__(self, read: Callable[..., Any]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._slots: dict[Key, _Slot] = {}

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None = None) -> Any:
        key = (instance_id, payloads)
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if slot.queued is not None:  # not sent yet: share it
                flight, send, after = slot.queued, False, None
            elif slot.running is None:
                flight = slot.running = _Flight()
                send, after = True, None
            else:  # one is in flight: this caller sends the next one, once it returns
                flight = slot.queued = _Flight()
                send, after = True, slot.running
        if not send:
            flight.done.wait()
            return self._answer(flight, instance_id, payloads, timeout)
        try:
            if after is not None:
                after.done.wait(QUEUE_WAIT)
                with self._lock:
                    if slot.queued is flight:
                        slot.queued = None
                    slot.running = flight
            flight.value, flight.ok = self._read(instance_id, payloads, timeout=timeout), True
        except BaseException as exc:  # an interrupt while queued too: the sharers read alone
            flight.error = exc
            raise
        finally:
            with self._lock:
                if slot.queued is flight:
                    slot.queued = None
                if slot.running is flight:
                    slot.running = None
                if slot.running is None and slot.queued is None and self._slots.get(key) is slot:
                    del self._slots[key]
            flight.done.set()
        return flight.value

    def _answer(self, flight: _Flight, instance_id: str, payloads: bool, timeout: float | None) -> Any:
        if flight.ok:
            return flight.value
        if isinstance(flight.error, Exception):
            raise _own_copy(flight.error) from flight.error
        return self._read(instance_id, payloads, timeout=timeout)  # abandoned by its sender: read alone


def _own_copy(error: Exception) -> Exception:
    """A copy of ``error`` for one sharer to raise: raising the one object in many threads
    would grow its traceback with every sharer's frames. Falls back to ``error`` itself for an
    exception that cannot be copied (one whose constructor takes other arguments)."""
    try:
        copied = copy.copy(error)
    except Exception:
        return error
    return copied if type(copied) is type(error) else error


@dataclass(slots=True)
class _AsyncSlot:
    running: asyncio.Future[Any] | None = None
    queued: asyncio.Future[Any] | None = None


class AsyncSharedReads:
    """The asyncio twin of :class:`SharedReads`, for tasks of one event loop.

    The RPC runs in a task of its own, so a sharer (its sender included) that is cancelled
    leaves the others their answer.
    """

    def __init__(self, read: Callable[..., Awaitable[Any]]) -> None:
        self._read = read
        self._slots: dict[Key, _AsyncSlot] = {}

    async def read(self, instance_id: str, payloads: bool, *, timeout: float | None = None) -> Any:
        key = (instance_id, payloads)
        slot = self._slots.setdefault(key, _AsyncSlot())
        if slot.queued is not None:
            flight = slot.queued
        else:
            after = slot.running
            flight = asyncio.ensure_future(self._send(key, slot, after, instance_id, payloads, timeout))
            if after is None:
                slot.running = flight
            else:
                slot.queued = flight
            # Forgotten however it ends (also cancelled before it ever ran, when its own clean-up
            # never runs); its error retrieved, as every sharer may have been cancelled.
            flight.add_done_callback(lambda done: self._forget(key, slot, done))
        try:
            return await asyncio.shield(flight)
        except asyncio.CancelledError:
            if flight.cancelled() and not _cancelling():  # the read was cancelled (a shutdown), not this caller
                return await self._read(instance_id, payloads, timeout=timeout)
            raise

    async def _send(
        self,
        key: Key,
        slot: _AsyncSlot,
        after: asyncio.Future[Any] | None,
        instance_id: str,
        payloads: bool,
        timeout: float | None,
    ) -> Any:
        me = asyncio.current_task()
        try:
            if after is not None:
                await asyncio.wait([after], timeout=QUEUE_WAIT)
                if slot.queued is me:
                    slot.queued = None
                slot.running = me
            return await self._read(instance_id, payloads, timeout=timeout)
        finally:
            if slot.queued is me:
                slot.queued = None
            if slot.running is me:
                slot.running = None
            if slot.running is None and slot.queued is None and self._slots.get(key) is slot:
                del self._slots[key]

    def _forget(self, key: Key, slot: _AsyncSlot, flight: asyncio.Future[Any]) -> None:
        if not flight.cancelled():
            flight.exception()
        if slot.queued is flight:
            slot.queued = None
        if slot.running is flight:
            slot.running = None
        if slot.running is None and slot.queued is None and self._slots.get(key) is slot:
            del self._slots[key]


def _cancelling() -> bool:
    """Whether the current task has a cancellation pending (Python 3.11+; before, assume so)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return True if cancelling is None else bool(cancelling())
