"""What a start reports back: one of its truthful outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from durabletask.client import OrchestrationState


class StartOutcome(enum.Enum):
    """The answers a start can give.

    * ``STARTED``: this call's schedule request succeeded; a new instance was created.
      Within one start wave on one instance ID at most one caller gets it. With
      ``StartResult.deduplicated`` an earlier call with the same ``request_id`` did.
    * ``ALREADY_RUNNING``: an active (non-terminal) instance with this ID exists;
      ``StartResult.existing`` holds the state that was seen.
    * ``BUSY``: another caller held the lease for longer than this call's ``wait``
      and no active instance was visible; nothing was scheduled by this call.
    * ``SIGNALED`` (``start_or_signal`` only): an active instance existed and this
      call's event was raised to it; ``StartResult.existing`` holds the state seen.
    * ``ALREADY_COMPLETED``: a finished instance with this ID exists and the call's
      :class:`~strict_singleton.policies.ReusePolicy` does not allow replacing it;
      ``StartResult.existing`` holds the state that was seen; nothing was scheduled.
    """

    STARTED = "started"
    ALREADY_RUNNING = "already_running"
    BUSY = "busy"
    ALREADY_COMPLETED = "already_completed"
    SIGNALED = "signaled"


@dataclass(frozen=True, slots=True)
class StartResult:
    """The result of one start.

    Attributes:
        outcome: see :class:`StartOutcome`.
        instance_id: the fixed instance ID the call was about.
        existing: the orchestration state seen when not started (``None`` for
            STARTED, and for BUSY when no instance was visible).
        waited: seconds this call spent waiting for another holder's lease.
        elapsed: seconds the whole call took, as seen by the caller.
        fencing_token: the lease's fencing token when this call held the lease
            (always set for STARTED; it only grows per instance ID and is also
            written to the orchestration's tags as ``strict_singleton.fencing_token``).
        backend: the lock backend's display name.
        replaced: for STARTED under ``ConflictPolicy.TERMINATE_EXISTING``, the state of
            the instance this call terminated (as read before terminating it).
        deduplicated: ``True`` when a retry with a ``request_id`` found what an earlier
            call with the same request ID did, and did nothing new: STARTED means that
            earlier call's schedule request created the instance (``existing`` holds
            it, ``fencing_token`` is that call's); SIGNALED means that earlier call
            raised the event. Count one request ID as one caller: within a start wave
            at most one *request* gets STARTED.
    """

    outcome: StartOutcome
    instance_id: str
    existing: OrchestrationState | None = None
    waited: float = 0.0
    elapsed: float = 0.0
    fencing_token: int | None = None
    backend: str = ""
    replaced: OrchestrationState | None = None
    deduplicated: bool = False

    @property
    def started(self) -> bool:
        """``True`` only when this call's schedule request (``deduplicated``: this request's) created the instance."""
        return self.outcome is StartOutcome.STARTED


__all__ = ["StartOutcome", "StartResult"]
