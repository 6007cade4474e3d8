"""The defaults that are not fields of :class:`~strict_singleton.options.StarterOptions`, in one
place (a leaf module: everything may import it)."""

from __future__ import annotations

# Seconds a lease lives unless renewed, when the starter is not given ``lease_ttl``.
DEFAULT_LEASE_TTL = 30.0

# The floor of the derived ``visibility_timeout`` and ``ambiguity_timeout``: a host's status
# lag and a lost request's late execution do not shrink with a short lease.
MIN_WINDOW = 30.0

# How long a TERMINATE_EXISTING call waits for the terminated instance to end, by default.
DEFAULT_TERMINATE_TIMEOUT = 30.0
