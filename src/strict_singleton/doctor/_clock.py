"""Judging a measured clock skew against the starters' ``clock_skew``.

The assumption is pairwise: every two starters within ``clock_skew`` of each other
(readers treat a record as expired once ``expires_at + clock_skew < now`` by their own
clock). The doctor sees one host and a store's clock, the only reference every starter
shares; two hosts each up to ``clock_skew`` from it may be ``2 x clock_skew`` apart. So a
host passes only if its skew, at the worst the measurement allows (the round trip, and a
``Date`` header's one-second resolution), is within ``clock_skew / 2``.
"""

from __future__ import annotations

from strict_singleton.doctor._measure import Skew
from strict_singleton.doctor._model import Status


def worst(skew: Skew) -> float:
    """The largest skew consistent with the measurement."""
    return max(abs(skew.low), abs(skew.high))


def clock_verdict(skew: Skew, clock_skew: float, *, fail_beyond: bool) -> tuple[Status, str]:
    """(status, detail): ok within ``clock_skew / 2`` at worst; a warning beyond it; beyond
    ``clock_skew`` for certain, a failure if ``fail_beyond`` (the store's records expire
    by the starters' clocks), else a warning."""
    half = clock_skew / 2
    if skew.least > clock_skew:
        return (
            Status.FAILURE if fail_beyond else Status.WARNING,
            f"{skew.middle:+.3f} s from ours, more than clock_skew {clock_skew:g} s for certain: this host and one "
            "synchronised with the store disagree by more than the starters allow",
        )
    if worst(skew) > half:
        return (
            Status.WARNING,
            f"up to {worst(skew):.3f} s from ours (measured {skew.describe()}), more than clock_skew / 2 = "
            f"{half:g} s: two hosts each this far from the store, on opposite sides, are more than clock_skew "
            "apart",
        )
    return Status.OK, f"within clock_skew / 2 = {half:g} s of ours at worst: any two such hosts are within clock_skew"
