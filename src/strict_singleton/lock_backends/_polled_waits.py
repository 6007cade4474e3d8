"""Waiting for a lease another process holds, on a store that cannot notify (Azure Blob).

A release in this process wakes its waiters at once (:data:`~._wakeups.RELEASES`). A release
in another process can only be found by asking the store. Asked naively, every waiting caller
asks on its own every few tens of milliseconds: a wave of callers on many hosts multiplies the
requests to one blob (Azure targets 500 per second per blob) and, since every wake-up is
followed by a status read, the reads to the Durable backend too. :class:`PolledWaits` keeps that
to about one question per host (per lease object, which a host's starters normally share),
backing off:

* **One prober per key.** Of the callers waiting for one lease through one lease object, one
  at a time probes the store (a cheap read of the lease state); the others wait for its word
  or for a release here. When the prober sees the lease free it wakes them all.
* **Backoff with jitter.** The probe interval starts at :data:`FIRST_PROBE` and doubles up to
  :data:`MAX_PROBE`, each pause drawn from its upper half ("equal jitter"), so the hosts of
  one wave spread out instead of asking in step. It starts again when the lease is seen free.
* **No acquire that is known to fail.** While a caller of the same object holds the lease (until
  its own validity ends), or the lease was seen held elsewhere within the current probe interval,
  or another caller's acquire of it is in flight (one of them at most can win it), an acquire
  under another token is answered "held" without a request. A store that forgot a
  held lease (Azurite restarted) is then found free only when that validity ends: a wait, never
  a second holder.

Every answer this module gives is "wait" or "held": it never grants a lease, so it can delay a
caller (by at most one probe interval, :data:`MAX_PROBE` at worst) but never let two in.
Thread-safe; the asyncio lease uses it from its event loop (nothing here blocks).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FIRST_PROBE = 0.05  # seconds: the first pause before a probe
MAX_PROBE = 1.0  # seconds: the longest pause between two probes of one key by one process


@dataclass
class _Key:
    prober: bool = False  # a waiter of this process is probing this key
    interval: float = FIRST_PROBE  # the current probe interval (doubles while the lease stays held)
    held_here_until: float = 0.0  # monotonic: a lease this process holds, valid until then
    held_here_by: str | None = None  # ... under this owner token (which may acquire it again)
    held_elsewhere_until: float = 0.0  # monotonic: seen held by another process, trusted until then
    acquiring: bool = False  # an acquire of this key is in flight from a caller of this object


class PolledWaits:
    """Per-process coordination of waits on one kind of polled store (see the module docstring)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random
    ) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._clock = clock
        self._rand = rand

    def _key(self, key: str) -> _Key:
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = _Key()
        return found

    def _forget_if_idle(self, key: str, state: _Key) -> None:
        now = self._clock()
        idle = not state.prober and not state.acquiring
        if idle and state.held_here_until <= now and state.held_elsewhere_until <= now:
            self._keys.pop(key, None)

    # -- acquiring ----------------------------------------------------------------

    def known_held(self, key: str, token: str) -> bool:
        """True when an acquire of ``key`` under ``token`` would certainly be refused now: skip its
        request. (The store lets a lease's own owner token acquire it again.)"""
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                return False
            now = self._clock()
            if state.held_here_until > now:
                return state.held_here_by != token
            return state.held_elsewhere_until > now

    def begin_acquire(self, key: str, token: str) -> bool:
        """Whether an acquire of ``key`` under ``token`` should be sent now: False while it is known
        held (:meth:`known_held`) or another caller's acquire of it is in flight (at most one of the
        two can win it, and the other learns which from :meth:`acquired` or :meth:`refused`). True
        obliges the caller to :meth:`end_acquire`."""
        with self._lock:
            state = self._key(key)
            now = self._clock()
            if state.acquiring or (state.held_here_until > now and state.held_here_by != token):
                return False
            if state.held_here_until <= now and state.held_elsewhere_until > now:
                return False
            state.acquiring = True
            return True

    def end_acquire(self, key: str) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.acquiring = False
                self._forget_if_idle(key, state)

    def acquired(self, key: str, token: str, valid_for: float) -> None:
        """This process was granted (or renewed) ``key`` under ``token`` for ``valid_for`` seconds."""
        with self._lock:
            state = self._key(key)
            state.held_here_until = self._clock() + valid_for
            state.held_here_by = token
            state.held_elsewhere_until = 0.0

    def released(self, key: str) -> None:
        """This process let ``key`` go (released, or found the lease no longer its own)."""
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.held_here_until = state.held_elsewhere_until = 0.0
                state.held_here_by = None
                state.interval = FIRST_PROBE
                self._forget_if_idle(key, state)

    def refused(self, key: str) -> None:
        """An acquire of ``key`` was refused: held by another process (or a caller here not yet known).

        Trusted for the current interval plus the first one, so the acquire a refused caller makes
        after its first short wait (as long as the first interval) is not sent either: the lease is
        found free by a probe instead."""
        with self._lock:
            state = self._key(key)
            state.held_elsewhere_until = self._clock() + state.interval + FIRST_PROBE

    # -- probing --------------------------------------------------------------------

    def claim_probe(self, key: str) -> bool:
        """Become the one waiter of this process that probes ``key``; False if another already is."""
        with self._lock:
            state = self._key(key)
            if state.prober:
                return False
            state.prober = True
            return True

    def end_probe(self, key: str) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.prober = False
                self._forget_if_idle(key, state)

    def pause(self, key: str) -> float:
        """How long the prober of ``key`` waits before its next probe: the upper half of the interval."""
        with self._lock:
            interval = self._key(key).interval
        return interval * (0.5 + 0.5 * self._rand())

    def probed(self, key: str, *, free: bool) -> None:
        """What a probe of ``key`` found: free (back to the first interval) or held (the interval doubles)."""
        with self._lock:
            state = self._key(key)
            if free:
                state.interval = FIRST_PROBE
                state.held_elsewhere_until = 0.0
            else:
                state.held_elsewhere_until = self._clock() + state.interval
                state.interval = min(state.interval * 2, MAX_PROBE)
