"""The clock-drift allowance subtracted from every lease's validity.

As in antirez's Redlock description and pottery: 1 % of the lease's time to live plus
2 ms, for clocks that run at slightly different rates and for timer granularity. One
place, used by the starter's lease clock and by Redlock's validity.
"""

from __future__ import annotations

DRIFT_FACTOR = 0.01
DRIFT_FLOOR = 0.002


def drift(valid_for: float) -> float:
    """Seconds of ``valid_for`` not to count on: ``valid_for * DRIFT_FACTOR + DRIFT_FLOOR``."""
    return valid_for * DRIFT_FACTOR + DRIFT_FLOOR


__all__ = ["DRIFT_FACTOR", "DRIFT_FLOOR", "drift"]
