"""Status reads of one ID shared by a starter's concurrent callers.

When a start wave's holder releases, every caller of this process that waited for it
wakes at once and reads the instance's status: a wave of 128 threads sent 127 reads of
the same ID to the Durable backend at the same moment. Here they share: a caller that
asks while a read of that ID is in flight does not join it (it may have been answered
before the caller asked); it waits for the next read, which is sent once the one in
flight returns, and which every caller that asked meanwhile shares. A wave's burst of
reads costs the backend two, and each caller at most one read's extra latency.

Guarantee: every caller's answer comes from a read sent after that caller asked, as if
it had sent its own; an error of that read is every sharer's error. Only reads without a
send-by time are shared (reads under a lease with a deadline keep their own RPC and
deadline). A caller whose shared read was abandoned by its sender (an interrupt in that
thread) sends its own. A queued read waits for the one in flight at most
:data:`QUEUE_WAIT` seconds, so a stalled RPC delays the others by that much at most.
"""

from __future__ import annotations

import asyncio
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
        if after is not None:
            after.done.wait(QUEUE_WAIT)
            with self._lock:
                slot.queued = None
                slot.running = flight
        try:
            flight.value, flight.ok = self._read(instance_id, payloads, timeout=timeout), True
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
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
            raise flight.error
        return self._read(instance_id, payloads, timeout=timeout)  # abandoned by its sender: read alone


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
            return await asyncio.shield(slot.queued)
        if slot.running is None:
            flight = slot.running = asyncio.ensure_future(self._send(key, slot, None, instance_id, payloads, timeout))
        else:
            flight = slot.queued = asyncio.ensure_future(
                self._send(key, slot, slot.running, instance_id, payloads, timeout)
            )
        flight.add_done_callback(_retrieved)  # every sharer may have been cancelled: no "never retrieved" log
        return await asyncio.shield(flight)

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
        if after is not None:
            await asyncio.wait([after], timeout=QUEUE_WAIT)
            slot.queued = None
            slot.running = me
        try:
            return await self._read(instance_id, payloads, timeout=timeout)
        finally:
            if slot.running is me:
                slot.running = None
            if slot.running is None and slot.queued is None and self._slots.get(key) is slot:
                del self._slots[key]


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
