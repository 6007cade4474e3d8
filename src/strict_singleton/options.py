"""The starters' options: one frozen value that holds every option's default.

``lock``, ``lease_ttl`` and ``wait`` are the starters' own keyword arguments; everything
else a starter can be tuned by is a field of :class:`StarterOptions`::

    starter = SingletonStarter(client, lock=lease, options=StarterOptions.LAGGING_HOST)
    starter = SingletonStarter(client, lock=lease, options=StarterOptions(clock_skew=2.0))

Fields left ``None`` are derived from the starter's ``lease_ttl``; ``starter.options`` is
the value with every default filled in. The defaults of the starters' own arguments (the lease
TTL, ``terminate_timeout``) are in :mod:`strict_singleton._defaults`; the renewal rules derived
from the lease are :class:`strict_singleton._validation.StarterConfig`'s properties.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from strict_singleton._defaults import DEFAULT_LEASE_TTL, MIN_WINDOW
from strict_singleton._validation import MAX_SECONDS, check_options

__all__ = ["DEFAULT_LEASE_TTL", "StarterOptions"]


@dataclass(frozen=True, kw_only=True, slots=True)
class StarterOptions:
    """How a starter keeps its promise on your deployment. Every time is in seconds, finite and
    at most one day; a bad value raises ``InvalidArgumentError`` here (``schedule_margin``'s
    bound, below 90 % of the lease, when the starter is built).

    Attributes:
        schedule_margin: validity that must be left before scheduling (default
            ``lease_ttl / 3``). The schedule RPC's deadline is the lease's deadline minus
            ``max(schedule_margin / 2, lease_ttl / 20)``, kept back to renew the lease after
            a timeout.
        visibility_timeout: the longest a new instance may take to show in status reads
            (default ``max(lease_ttl, 30)``): how long a start record is kept, and the longest
            a later caller waits for the recorded start to show (or, without records, the
            lease is held after scheduling). Set it above your host's status-index lag.
        ambiguity_timeout: after an ambiguous schedule failure (deadline exceeded, connection
            lost), how long to keep the lease and watch for the instance before raising
            ``ScheduleError(maybe_scheduled=True)`` (default ``max(lease_ttl, 30)``); with
            ``confirm_visible`` the watch lasts ``visibility_timeout`` longer, for a late
            execution on a lagging host.
        confirm_after: confirm the lease with the store (a token-checked extend) before
            scheduling when more than this many seconds passed since the store last confirmed
            it (default 0.1; 0 confirms always, one more round trip).
        clock_skew: how far the backend's clock (and, with Blob leases, other starters'
            clocks) may be from ours when telling our instance by its creation time (default 5).
        request_ttl: how long the lock store remembers a call's ``request_id`` for retries
            (default one day, the maximum).
        confirm_visible: make sure no later caller acts on a status read that does not show
            our new instance yet (default on; turn off only for backends whose reads are
            strongly consistent). With a lock that keeps start records (every shipped
            backend) this costs nothing in the common case: only a caller whose read does not
            show the start waits for it. Other locks hold the lease until the instance is
            visible (at most ``visibility_timeout``).
        background_finish: release the lease (with its start record) after the caller has its
            answer, on a background worker that is free at once, so the caller gets its answer
            as soon as the schedule call returns; ``close()`` waits for pending finishes.
        max_instance_id_length: longest accepted instance ID (default 256).
        fetch_payloads: fetch inputs and outputs in status reads (for ``result.existing``).
        namespace: the task hub this starter's leases and records are kept under, so task
            hubs sharing a lock store and instance IDs never wait on each other. Default: the
            client's task hub where it tells (Durable Task Scheduler clients, the Functions
            binding), else ``''``. Every starter of one task hub must use the same namespace.

    Presets: :attr:`STRONGLY_CONSISTENT`, :attr:`LAGGING_HOST`, :attr:`AZURE_FUNCTIONS`.
    """

    schedule_margin: float | None = None
    visibility_timeout: float | None = None
    ambiguity_timeout: float | None = None
    confirm_after: float = 0.1
    clock_skew: float = 5.0
    request_ttl: float = MAX_SECONDS
    confirm_visible: bool = True
    background_finish: bool = True
    max_instance_id_length: int = 256
    fetch_payloads: bool = True
    namespace: str | None = None

    #: A host whose status reads are strongly consistent (a new instance shows in the very next
    #: read): no visibility waits at all. Wrong on a lagging host: two callers could both start.
    STRONGLY_CONSISTENT: ClassVar[StarterOptions]
    #: A host whose status index may lag by up to two minutes (a loaded Azure Storage task hub):
    #: later callers wait that long for a recorded start to show, and a lost request is watched
    #: that long.
    LAGGING_HOST: ClassVar[StarterOptions]
    #: What :class:`~strict_singleton.functions.DurableFunctionsStarter` uses unless given
    #: options: the defaults, whose evidence checks already allow for the host's one-second
    #: creation times.
    AZURE_FUNCTIONS: ClassVar[StarterOptions]

    def __post_init__(self) -> None:
        check_options(self)

    def replace(self, **changes: Any) -> StarterOptions:
        """A copy with ``changes`` (validated like a new value)."""
        return dataclasses.replace(self, **changes)

    def resolved(self, lease_ttl: float) -> StarterOptions:
        """These options with every derived default filled in for a lease of ``lease_ttl``."""
        return dataclasses.replace(
            self,
            schedule_margin=lease_ttl / 3.0 if self.schedule_margin is None else float(self.schedule_margin),
            visibility_timeout=(
                max(lease_ttl, MIN_WINDOW) if self.visibility_timeout is None else float(self.visibility_timeout)
            ),
            ambiguity_timeout=(
                max(lease_ttl, MIN_WINDOW) if self.ambiguity_timeout is None else float(self.ambiguity_timeout)
            ),
        )


StarterOptions.STRONGLY_CONSISTENT = StarterOptions(confirm_visible=False)
StarterOptions.LAGGING_HOST = StarterOptions(visibility_timeout=120.0, ambiguity_timeout=120.0)
StarterOptions.AZURE_FUNCTIONS = StarterOptions()
