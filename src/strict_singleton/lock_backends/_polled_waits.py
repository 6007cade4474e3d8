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
* **No acquire that is known to fail.** For :data:`HELD_TRUST` after the store refused an
  acquire or a probe saw the lease held, and while another caller's acquire of it is in flight
  (at most one of them can win it), an acquire is answered "held" without a request. A lease this
  object's own caller holds is not remembered: a lease broken or forgotten by the store is
  acquirable again at once, as the store says.

Every answer this module gives is "wait" or "held": it never grants a lease, so it can delay a
caller (a waiter by at most one probe interval, :data:`MAX_PROBE`; a caller that does not wait
by at most :data:`HELD_TRUST`) but never let two in. The flags that stand for work in flight are
trusted for a bounded time only, so an exception that skipped their clean-up costs efficiency
for that long, never the key. Idle keys are forgotten. Thread-safe; the asyncio lease uses it
from its event loop (nothing here blocks).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FIRST_PROBE = 0.05  # seconds: the first pause before a probe
MAX_PROBE = 1.0  # seconds: the longest pause between two probes of one key by one lease object
HELD_TRUST = 2 * FIRST_PROBE  # seconds a refusal or a probe that saw the lease held is believed
# Work in flight (an acquire, a probe) is believed for this long at most: longer than any store
# call should take, short enough that a flag an exception left set does not hold a key up for long.
IN_FLIGHT_TRUST = 30.0
_SWEEP_EVERY = 64  # look for idle keys to forget after this many key look-ups
_IDLE_FOR = 2 * MAX_PROBE  # a key idle this long, with nothing believed about it, is forgotten


@dataclass
class _Key:
    probing_since: float | None = None  # a waiter of this object is probing this key (monotonic)
    acquiring_since: float | None = None  # an acquire of this key is in flight (monotonic)
    interval: float = FIRST_PROBE  # the current probe interval (doubles while the lease stays held)
    held_until: float = 0.0  # monotonic: refused or seen held, believed until then
    used: float = 0.0  # monotonic: last looked up


class PolledWaits:
    """Per-lease-object coordination of waits on one polled store (see the module docstring)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random
    ) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._clock = clock
        self._rand = rand
        self._lookups = 0

    def _key(self, key: str, now: float) -> _Key:
        self._lookups += 1
        if self._lookups % _SWEEP_EVERY == 0:
            self._sweep(now)
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = _Key()
        found.used = now
        return found

    @staticmethod
    def _busy(since: float | None, now: float) -> bool:
        return since is not None and now - since < IN_FLIGHT_TRUST

    def _sweep(self, now: float) -> None:
        for key, state in list(self._keys.items()):
            idle = not self._busy(state.probing_since, now) and not self._busy(state.acquiring_since, now)
            if idle and state.held_until <= now and now - state.used >= _IDLE_FOR:
                del self._keys[key]

    def __len__(self) -> int:
        """Keys remembered (for tests: they must not grow with every ID ever waited for)."""
        with self._lock:
            return len(self._keys)

    # -- acquiring ----------------------------------------------------------------

    def begin_acquire(self, key: str) -> bool:
        """Whether an acquire of ``key`` should be sent now: False while it is believed held, or
        another caller's acquire of it is in flight (at most one of the two can win it, and the
        other learns which from :meth:`acquired` or :meth:`refused`). True obliges the caller to
        :meth:`end_acquire`."""
        with self._lock:
            now = self._clock()
            state = self._key(key, now)
            if self._busy(state.acquiring_since, now) or state.held_until > now:
                return False
            state.acquiring_since = now
            return True

    def end_acquire(self, key: str) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.acquiring_since = None

    def acquired(self, key: str) -> None:
        """A caller of this object was granted ``key``: nothing believed about it any more."""
        with self._lock:
            state = self._key(key, self._clock())
            state.held_until = 0.0

    def released(self, key: str) -> None:
        """A caller of this object released ``key``: free now, as far as this object knows."""
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.held_until = 0.0
                state.interval = FIRST_PROBE

    def refused(self, key: str) -> None:
        """An acquire of ``key`` was refused: held (by another process, or a caller here).

        Believed for :data:`HELD_TRUST`, so the acquire a refused caller makes after its first
        short wait (as long as :data:`FIRST_PROBE`) is not sent either: a probe finds it free."""
        with self._lock:
            now = self._clock()
            self._key(key, now).held_until = now + HELD_TRUST

    # -- probing --------------------------------------------------------------------

    def claim_probe(self, key: str) -> bool:
        """Become the one waiter of this object that probes ``key``; False if another already is.
        True obliges the caller to :meth:`end_probe`."""
        with self._lock:
            now = self._clock()
            state = self._key(key, now)
            if self._busy(state.probing_since, now):
                return False
            state.probing_since = now
            return True

    def end_probe(self, key: str) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.probing_since = None

    def pause(self, key: str) -> float:
        """How long the prober of ``key`` waits before its next probe: the upper half of the interval."""
        with self._lock:
            interval = self._key(key, self._clock()).interval
        return interval * (0.5 + 0.5 * self._rand())

    def probed(self, key: str, *, free: bool) -> None:
        """What a probe of ``key`` found: free (back to the first interval) or held (the interval doubles)."""
        with self._lock:
            now = self._clock()
            state = self._key(key, now)
            if free:
                state.interval = FIRST_PROBE
                state.held_until = 0.0
            else:
                state.held_until = now + HELD_TRUST
                state.interval = min(state.interval * 2, MAX_PROBE)
