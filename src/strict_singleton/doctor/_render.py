"""The report as text (a table per target) and as JSON."""

from __future__ import annotations

import json

from strict_singleton.doctor._model import DoctorReport, Status

_MARK = {Status.OK: "ok", Status.SKIPPED: "skipped", Status.WARNING: "WARNING", Status.FAILURE: "FAILURE"}
_HEAD = ("status", "check", "measured", "guarantee")


def format_report(report: DoctorReport) -> str:
    """Checks grouped by target: status, check, measured value and the guarantees row,
    then, under every warning or failure, what was found and what to change."""
    rows = [(_MARK[c.status], c.name, c.measured, c.guarantee) for c in report.checks]
    widths = [max(len(r[i]) for r in [_HEAD, *rows]) for i in range(3)]
    lines: list[str] = []
    target = None
    for check, row in zip(report.checks, rows, strict=True):
        if check.target != target:
            target = check.target
            lines += ["", target] if lines else [target]
            lines.append("  " + "  ".join(h.ljust(widths[i]) if i < 3 else h for i, h in enumerate(_HEAD)))
        lines.append("  " + "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip())
        if check.status.rank > 0:
            lines.append(f"      {check.detail}")
            if check.fix:
                lines.append(f"      fix: {check.fix}")
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in Status if report.count(s))
    lines += ["", f"doctor: {report.status.value.upper()} ({counts or 'nothing checked'})"]
    return "\n".join(lines)


def report_json(report: DoctorReport) -> str:
    """The report as indented JSON (``DoctorReport.to_json``): what ``doctor --json`` prints."""
    return json.dumps(report.to_json(), indent=2)
