"""What a start does about an existing instance: conflict and reuse policies.

Every decision is taken under the lease, so the same rules hold on every Durable
backend, and the schedule request carries the matching reuse policy, so a backend that
dedupes atomically enforces the same rule as a second line of defence.

* :class:`ConflictPolicy`: what an *active* instance means for this call.
* :class:`ReusePolicy`: which *finished* instances a new start may replace.

Names follow Temporal's ``WorkflowIdConflictPolicy`` and ``WorkflowIdReusePolicy``.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from durabletask.client import OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb


class ConflictPolicy(enum.Enum):
    """What a start does when an active (not finished) instance exists.

    * ``USE_EXISTING`` (default): the answer is ``ALREADY_RUNNING`` with ``existing``.
    * ``FAIL``: raise :class:`~strict_singleton.errors.AlreadyRunningError` (it carries
      ``existing``); nothing is scheduled.
    * ``TERMINATE_EXISTING``: under the lease, terminate the active instance, wait
      (bounded by ``terminate_timeout``, renewing the lease) until a status read shows
      it finished, then start; ``StartResult.replaced`` holds the state read before
      the termination. A call replaces the instance that was active when it began (its
      first status read, before any lease), however young; any other active instance (one
      created after it began: its wave's replacement, or another start's) is its answer
      (ALREADY_RUNNING). So the calls that began before a replacement share it, and
      callers never terminate each other's fresh instances in a chain. Decided by the
      instance's identity, not by comparing clocks.
    """

    USE_EXISTING = "use_existing"
    FAIL = "fail"
    TERMINATE_EXISTING = "terminate_existing"


class ReusePolicy(enum.Enum):
    """Which finished instances a new start may replace.

    * ``ALLOW_DUPLICATE`` (default): Completed, Failed, Terminated, Canceled.
    * ``ALLOW_DUPLICATE_FAILED_ONLY``: Failed, Terminated, Canceled (not Completed).
    * ``REJECT_DUPLICATE``: none.

    A finished instance the policy does not allow replacing gives
    ``StartOutcome.ALREADY_COMPLETED`` with ``existing``; nothing is scheduled.
    """

    ALLOW_DUPLICATE = "allow_duplicate"
    ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
    REJECT_DUPLICATE = "reject_duplicate"

    @property
    def replaceable(self) -> tuple[int, ...]:
        """The statuses (protobuf values) listed in the schedule request's reuse policy."""
        return _REPLACEABLE[self]

    def allows(self, status: OrchestrationStatus) -> bool:
        """Whether a finished instance in ``status`` may be replaced under this policy."""
        return int(status.value) in _REPLACEABLE[self]

    def request_policy(self) -> pb.OrchestrationIdReusePolicy:
        statuses: Any = list(self.replaceable)  # the generated stubs type enum fields loosely
        return pb.OrchestrationIdReusePolicy(replaceableStatus=statuses)


_FAILED_ONLY = (pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED, pb.ORCHESTRATION_STATUS_CANCELED)
_REPLACEABLE: dict[ReusePolicy, tuple[int, ...]] = {
    ReusePolicy.ALLOW_DUPLICATE: (pb.ORCHESTRATION_STATUS_COMPLETED, *_FAILED_ONLY),
    ReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY: _FAILED_ONLY,
    ReusePolicy.REJECT_DUPLICATE: (),
}

E = TypeVar("E", bound=enum.Enum)


def coerce(value: object, kind: type[E]) -> E | None:
    """``value`` as a member of ``kind`` (a member or its string value), else ``None``."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return None
    return None


__all__ = ["ConflictPolicy", "ReusePolicy"]
