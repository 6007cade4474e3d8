"""The benchmark runner works end to end (a --quick run of every suite). Not a timed test:
it checks that every suite produced results and that strict never violated exactly-once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    for suite in ("floors", "uncontended", "throughput", "contention", "sweep", "memory"):
        assert results[suite], suite
    strict = [c for c in results["sweep"]["cells"] if c["strategy"] == "strict"]
    assert strict and all(c["violating_rounds"] == 0 and c["lost_starts"] == 0 for c in strict)
    naive_overwrite = [c for c in results["sweep"]["cells"] if c["strategy"] == "naive" and c["profile"] == "overwrite"]
    assert sum(c["violating_rounds"] for c in naive_overwrite) > 0
    assert (tmp_path / "quick.md").exists()
