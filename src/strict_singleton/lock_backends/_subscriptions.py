"""Which release channels a Redis lease's listener is subscribed to: exactly those of the
instance IDs some caller in this process is waiting for.

A host therefore receives the release of an ID only while it waits for that ID, and the
server delivers each release to those hosts only (a pattern subscription would deliver
every ID's release to every host that ever waited, and costs the server a glob match per
subscriber per release).

Bookkeeping only, shared by the sync and async leases; the lease sends the commands.
The first waiter for a channel subscribes, the last one to leave unsubscribes, and each
``SUBSCRIBE`` sent gets an event that its confirmation sets. Confirmations come back on
the one pub/sub connection in the order the commands were sent, so the k-th
confirmation for a channel belongs to the k-th ``SUBSCRIBE`` sent for it: a waiter is
told its subscription is live only after the server has processed it, which is what
lets it check the lease afterwards without missing a release published in between.

Guarantee: a waiter whose event is set was subscribed at the server from that moment
until it leaves. Assumption: the connection was not silently re-established in between
(redis-py re-subscribes after a reconnect, and those confirmations are not ours); a
mismatch can only make a wake-up late, never grant a lease, and every wait is bounded by
the lease's remaining TTL and ``MAX_QUIET_WAIT``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

E = TypeVar("E")  # threading.Event or asyncio.Event: anything with set()


@dataclass(slots=True)
class _Channel(Generic[E]):
    waiters: int
    live: E  # set when the server confirms the SUBSCRIBE sent for these waiters
    pending: bool = True  # that confirmation has not come yet


class ChannelInterest(Generic[E]):
    """Waiters per release channel on one pub/sub connection (generation ``generation``).

    Not thread-safe: the sync lease calls it, and sends the command it asks for, under
    one lock, so the commands reach the connection in the order decided here.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._channels: dict[str, _Channel[E]] = {}
        # Confirmations still owed for SUBSCRIBEs whose waiters all left (an UNSUBSCRIBE
        # followed): they arrive first, and must not be taken for a later SUBSCRIBE's.
        self._owed: dict[str, deque[E]] = {}

    def join(self, channel: str, new_event: E) -> tuple[E, bool]:
        """A waiter arrives: (the event that says its subscription is live, whether to send
        ``SUBSCRIBE`` now). ``new_event`` is used when a command must be sent."""
        entry = self._channels.get(channel)
        if entry is not None:
            entry.waiters += 1
            return entry.live, False
        self._channels[channel] = _Channel(waiters=1, live=new_event)
        return new_event, True

    def leave(self, channel: str, generation: int) -> bool:
        """A waiter of ``generation`` leaves: whether to send ``UNSUBSCRIBE`` now."""
        if generation != self.generation:
            return False  # its connection is gone, and the bookkeeping with it
        entry = self._channels.get(channel)
        if entry is None:
            return False
        entry.waiters -= 1
        if entry.waiters > 0:
            return False
        del self._channels[channel]
        if entry.pending:
            self._owed.setdefault(channel, deque()).append(entry.live)
        return True

    def confirmed(self, channel: str) -> E | None:
        """The server confirmed a ``SUBSCRIBE`` of ``channel``: the event to set, if any."""
        owed = self._owed.get(channel)
        if owed:
            event = owed.popleft()
            if not owed:
                del self._owed[channel]
            return event
        entry = self._channels.get(channel)
        if entry is None or not entry.pending:
            return None  # a re-subscription after a reconnect: not one of ours
        entry.pending = False
        return entry.live

    def reset(self) -> list[E]:
        """The connection is gone: forget every channel, and return the events of waiters
        still owed a confirmation (set them: they stop waiting and poll instead)."""
        self.generation += 1
        owed = [e.live for e in self._channels.values() if e.pending]
        owed += [e for q in self._owed.values() for e in q]
        self._channels.clear()
        self._owed.clear()
        return owed

    def channels(self, *, confirmed: bool = False) -> list[str]:
        """Channels with waiters now; ``confirmed``: only those whose subscription is live."""
        return sorted(c for c, e in self._channels.items() if not (confirmed and e.pending))
