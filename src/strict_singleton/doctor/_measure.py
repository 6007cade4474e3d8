"""Pure arithmetic for the probes: round-trip medians and clock skew with its uncertainty."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

# The probes read clocks through these names so tests can pin them.
monotonic = time.monotonic
wall = time.time

PINGS = 5  # round trips per median: enough to shrug off one slow answer, cheap on any store


def timed(call: Callable[[], object]) -> float:
    """Seconds one call took (monotonic clock)."""
    start = monotonic()
    call()
    return monotonic() - start


def median_rtt(call: Callable[[], object], *, samples: int = PINGS) -> float:
    """The median of ``samples`` timed calls, in seconds."""
    return statistics.median(timed(call) for _ in range(samples))


def format_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@dataclass(frozen=True, slots=True)
class Skew:
    """How far a server's clock is from ours: somewhere in ``[low, high]`` seconds
    (positive: the server is ahead). The width comes from the round trip and from the
    server's clock resolution (one second for an HTTP ``Date`` header)."""

    low: float
    high: float

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2

    @property
    def plus_minus(self) -> float:
        return (self.high - self.low) / 2

    @property
    def least(self) -> float:
        """The smallest skew consistent with the measurement (0 if it may be none at all)."""
        if self.low <= 0 <= self.high:
            return 0.0
        return min(abs(self.low), abs(self.high))

    def describe(self) -> str:
        if abs(self.middle) + self.plus_minus < 1:
            return f"{self.middle * 1000:+.2f} ms (±{self.plus_minus * 1000:.2f} ms)"
        return f"{self.middle:+.3f} s (±{self.plus_minus:.3f} s)"


def skew_of(server_low: float, server_high: float, sent: float, answered: float) -> Skew:
    """The skew when the server's clock read something in ``[server_low, server_high]``
    at a moment between our wall-clock readings ``sent`` and ``answered``."""
    return Skew(low=server_low - answered, high=server_high - sent)
