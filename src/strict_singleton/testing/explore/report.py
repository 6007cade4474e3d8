"""The explorer's findings as text: a search's :class:`Report`, a schedule told step by step."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from strict_singleton import _flow
from strict_singleton._validation import FENCING_TAG
from strict_singleton.testing.explore.configs import Config, Mutant
from strict_singleton.testing.explore.engine import Violation, _quiet, _Run


@dataclass
class Report:
    """A search's result: its counts and, if a schedule failed, the violation and the schedule."""

    config: str
    mutant: str | None
    schedules: int = 0
    states: int = 0
    violation: str | None = None
    schedule: str | None = None
    steps: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.violation is None


def describe(cfg: Config, mutant: Mutant | None, choices: list[str]) -> list[str]:
    """The schedule step by step: virtual time, the choice, and what each starter did."""
    lines: list[str] = []
    with _quiet(), mutant.patch() if mutant else contextlib.nullcontext():
        run = _Run(cfg, mutant=mutant)
        for choice in choices:
            before = {s.name: s.op for s in run.starters}
            t = run.world.clock() - 1000.0
            try:
                run.step(choice)
            except Violation as exc:
                lines.append(f"t={t:7.3f}  {choice:<4} {_what(choice, before)}")
                lines.append(f"           VIOLATION: {exc}")
                return lines
            lines.append(f"t={t:7.3f}  {choice:<4} {_what(choice, before)}")
        if run.finished():
            try:
                run.finish()
            except Violation as exc:
                lines.append(f"           at the end: VIOLATION: {exc}")
    return lines


_FAULT_WORDS = {
    "s": "slow read: executes now, answer withheld",
    "k": "slow read during which the lock store loses the key",
    "d": "schedule request held in the backend; caller gets DEADLINE_EXCEEDED",
    "x": "schedule executes, its answer is lost (UNAVAILABLE)",
    "u": "schedule never reaches the backend; caller gets UNAVAILABLE",
    "c": "the process dies, its request queued in the backend",
    "g": "paused after the send-by check, request leaves past the lease",
    "r": "the withheld answer arrives",
    "l": "the held request lands in the backend",
    "z": "the caller goes away (cancelled) before this operation ran",
    "y": "this operation runs, then the caller goes away (cancelled)",
    "o": "the lock store is unreachable for this operation",
    "f": "this status read fails",
}


def _what(choice: str, before: dict[str, Any]) -> str:
    if choice == "p":
        return "pause: the clock jumps past the lease TTL"
    if choice == "L":
        return "the lock store forgets every key"
    if choice == "t":
        return "time passes"
    if choice == "e":
        return "the active instance completes"
    if choice in before:
        return f"{choice}: {_op_text(before[choice])}"
    name = choice[1:]
    return f"{name}: {_FAULT_WORDS[choice[0]]} ({_op_text(before.get(name))})"


def _op_text(op: Any) -> str:
    if op is None:
        return "-"
    if isinstance(op, _flow.Schedule):
        return f"Schedule(fencing={op.tags.get(FENCING_TAG)})"
    return type(op).__name__


def _print_counterexample(out: Any, config: str, report: Report) -> None:
    """A configuration's counterexample, step by step, and the command that replays it."""
    for line in report.steps:
        print(f"         {line}", file=out)
    print(f"         replay: strict-singleton explore --config {config} --replay '{report.schedule}'", file=out)


__all__ = [
    "Report",
    "describe",
]
