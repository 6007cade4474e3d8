"""What ``doctor`` reports: one frozen :class:`Check` per fact measured, gathered in a
:class:`DoctorReport`. No I/O here; the probes build checks, the renderers print them."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """How a check came out, from best to worst (``skipped`` counts as fine: nothing to check)."""

    OK = "ok"
    SKIPPED = "skipped"
    WARNING = "warning"
    FAILURE = "failure"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.OK: 0, Status.SKIPPED: 0, Status.WARNING: 1, Status.FAILURE: 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One assumption of docs/guarantees.md, measured on a live deployment.

    Attributes:
        target: the store, node or client checked, as printable text (lock URLs redacted).
        name: what was checked, e.g. ``maxmemory-policy``.
        status: ok, warning (the guarantee holds, with a documented window or a
            degradation), failure (an assumption does not hold, or the store cannot
            serve leases) or skipped (not applicable, or not measurable here).
        detail: what was found, in one sentence.
        fix: what to change; empty when nothing needs to.
        guarantee: the row of docs/guarantees.md (or the assumption) this protects.
        measured: the value read or measured (a policy, a skew, a round-trip time).
    """

    target: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    guarantee: str = ""
    measured: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "check": self.name,
            "status": self.status.value,
            "measured": self.measured,
            "detail": self.detail,
            "fix": self.fix,
            "guarantee": self.guarantee,
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check of one ``doctor`` run, in the order they ran.

    ``status`` is the worst status among them (``ok`` for an empty report); ``ok`` is
    true when nothing warned or failed.
    """

    checks: tuple[Check, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, checks: Iterable[Check]) -> DoctorReport:
        return cls(tuple(checks))

    @property
    def status(self) -> Status:
        worst = Status.OK
        for check in self.checks:
            if check.status.rank > worst.rank:
                worst = check.status
        return worst

    @property
    def ok(self) -> bool:
        return self.status.rank == 0

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status is status)

    def to_json(self) -> dict[str, Any]:
        """``{"status": ..., "counts": {...}, "checks": [...]}``, ready for ``json.dumps``."""
        return {
            "status": self.status.value,
            "counts": {s.value: self.count(s) for s in Status},
            "checks": [c.to_json() for c in self.checks],
        }
