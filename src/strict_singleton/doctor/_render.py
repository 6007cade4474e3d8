"""The report as text (a table per target) and as JSON.

The table stays readable in a terminal or a CI log: a measured value longer than
:data:`MEASURED_WIDTH` is cut (the full value follows on a ``measured:`` line, and JSON
always has it), the guarantee column wraps under itself past :data:`TABLE_WIDTH`
columns, and details and fixes wrap at :data:`WIDTH` columns.
"""

from __future__ import annotations

import json
import textwrap

from strict_singleton.doctor._model import Check, DoctorReport, Status

WIDTH = 100  # details and fixes
TABLE_WIDTH = 120  # table rows: a guarantee wraps under itself past this
MEASURED_WIDTH = 40
_MIN_GUARANTEE_WIDTH = 30
_MARK = {Status.OK: "ok", Status.SKIPPED: "skipped", Status.WARNING: "WARNING", Status.FAILURE: "FAILURE"}
_HEAD = ("status", "check", "measured", "guarantee")
_DETAIL_INDENT = " " * 6
# The exit status of ``strict-singleton doctor`` per report status (the CLI's EXIT_*).
_EXIT = {Status.FAILURE: 1, Status.WARNING: 5}


def _cut(value: str) -> str:
    return value if len(value) <= MEASURED_WIDTH else value[: MEASURED_WIDTH - 3] + "..."


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        f"{label}{text}",
        width=WIDTH,
        initial_indent=_DETAIL_INDENT,
        subsequent_indent=_DETAIL_INDENT + "  ",
        break_long_words=True,
        break_on_hyphens=False,
    ) or [_DETAIL_INDENT + label.rstrip()]


def _explanation(check: Check) -> list[str]:
    lines: list[str] = []
    if len(check.measured) > MEASURED_WIDTH:
        lines += _wrapped("measured: ", check.measured)
    if check.status.rank > 0:
        lines += _wrapped("", check.detail)
        if check.fix:
            lines += _wrapped("fix: ", check.fix)
    return lines


def format_report(report: DoctorReport) -> str:
    """Checks grouped by target: status, check, measured value and the guarantees row,
    then, under every warning or failure, what was found and what to change."""
    rows = [(_MARK[c.status], c.name, _cut(c.measured), c.guarantee) for c in report.checks]
    widths = [max(len(r[i]) for r in [_HEAD, *rows]) for i in range(3)]
    column = 2 + sum(w + 2 for w in widths)
    guarantee_width = max(_MIN_GUARANTEE_WIDTH, TABLE_WIDTH - column)
    lines: list[str] = []
    target = None
    for check, row in zip(report.checks, rows, strict=True):
        if check.target != target:
            target = check.target
            lines += ["", target] if lines else [target]
            lines.append("  " + "  ".join(h.ljust(widths[i]) if i < 3 else h for i, h in enumerate(_HEAD)))
        guarantee = textwrap.wrap(row[3], width=guarantee_width, break_on_hyphens=False) or [""]
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:3])]
        lines.append(("  " + "  ".join([*cells, guarantee[0]])).rstrip())
        lines += [" " * column + more for more in guarantee[1:]]
        lines += _explanation(check)
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in Status if report.count(s))
    lines += ["", f"doctor: {report.status.value.upper()} ({counts or 'nothing checked'})"]
    return "\n".join(lines)


def exit_status_of(report: DoctorReport) -> int:
    """``strict-singleton doctor``'s exit status for ``report``: 1 on a failure, 5 on a
    warning (and no failure), else 0."""
    return _EXIT.get(report.status, 0)


def report_json(report: DoctorReport) -> str:
    """The report as indented JSON (``DoctorReport.to_json`` and ``"exit"``, the exit
    status, as a usage error's document has it): what ``doctor --json`` prints."""
    document = report.to_json()
    return json.dumps({"status": document["status"], "exit": exit_status_of(report), **document}, indent=2)
