"""Background finishes for the sync starter: never queued behind another, no thread per start.

A finish (releasing the lease with its start record, or the rarer visibility hold or
clean-up after an interruption) runs after the caller has its answer. Each one goes
to an idle worker if one is waiting, else to a worker started for it at once, so no
finish ever waits behind a busy one (a visibility hold queued behind another finish
could outlive its lease) and, in a stream of starts, the caller does not pay for
starting a thread each time. Workers idle for ``IDLE_EXIT`` seconds exit.

Workers are not daemon threads: a program that returns from ``main`` still completes
its pending releases. At interpreter shutdown idle workers are told to exit at once,
after the finishes already handed over.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("strict_singleton")
IDLE_EXIT = 2.0  # seconds a worker waits for more work before exiting
_STOP = object()
_ALL: weakref.WeakSet[Finishers] = weakref.WeakSet()
_registered = False
_registered_lock = threading.Lock()


def _shutdown_all() -> None:
    for finishers in list(_ALL):
        finishers.stop()


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in a forked child: start from none, or an item would
    # be handed to an "idle" worker that is not there, and the copied condition may be held
    # by a thread that did not survive the fork.
    for finishers in list(_ALL):
        finishers._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _register_shutdown() -> None:
    global _registered
    with _registered_lock:
        if _registered:
            return
        register = getattr(threading, "_register_atexit", None)  # runs before non-daemon threads are joined
        if register is not None:
            try:
                register(_shutdown_all)
            except RuntimeError:  # the interpreter is already shutting down
                return
        _registered = True


class Finishers:
    """Runs ``run(item)`` for each submitted item on a worker that is free at once.

    Guarantee: an item starts running as soon as a worker thread can be scheduled; it
    never waits for another item to finish. :meth:`wait` blocks until every submitted
    item has run.
    """

    def __init__(self, run: Callable[[Any], None], *, name: str) -> None:
        self._run = run
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._idle = 0  # workers waiting for an item that no submitted item has claimed
        self._workers = 0
        self._pending = 0  # submitted items not yet run to their end
        self._stopping = False
        _ALL.add(self)
        _register_shutdown()

    def _reset(self) -> None:
        self._queue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._idle = self._workers = self._pending = 0
        self._stopping = False

    def submit(self, item: Any) -> None:
        """Hand ``item`` to a free worker; raises ``RuntimeError`` if no thread can be started
        (then nothing was handed over: the caller runs it itself)."""
        with self._cond:
            self._pending += 1
            if self._idle > 0 and not self._stopping:
                self._idle -= 1  # that worker is now this item's
                self._queue.put(item)  # under the lock: a stop() cannot slip in between
                return
            self._workers += 1
        thread = threading.Thread(target=self._work, args=(item,), name=self._name)
        try:
            thread.start()
        except BaseException:
            with self._cond:
                self._workers -= 1
                self._pending -= 1
                self._cond.notify_all()
            raise

    @property
    def pending(self) -> int:
        """Items submitted and not yet run to their end (read without the lock: a metric's snapshot)."""
        return self._pending

    def wait(self) -> None:
        """Block until every submitted item has run."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0)

    def stop(self) -> None:
        """Let idle workers exit now (items already submitted still run)."""
        with self._cond:
            self._stopping = True
            for _ in range(self._workers):
                self._queue.put(_STOP)  # after every item already claimed (FIFO)

    def _work(self, item: Any) -> None:
        while True:
            try:
                self._run(item)
            except BaseException:  # a worker must outlive any item, or it would be counted idle while dead
                _log.exception("background finish failed")
            finally:
                with self._cond:
                    self._pending -= 1
                    self._idle += 1
                    self._cond.notify_all()
            item = self._next()
            if item is _STOP:
                return

    def _next(self) -> Any:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                item = None
            with self._cond:
                if item is _STOP or (item is None and self._idle > 0):
                    self._idle = max(0, self._idle - 1)
                    self._workers -= 1
                    return _STOP
            if item is not None:
                return item
            # Timed out, but every idle worker is claimed by an item on its way: stay for it.
