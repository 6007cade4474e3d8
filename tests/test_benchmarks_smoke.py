"""The benchmark runner works end to end (a --quick run of every suite). Not a timed test:
it checks that every suite produced results and that strict never violated exactly-once.

About three minutes: marked ``slow``, so it is left out of the default run; ``python -m
pytest -m slow`` runs it, with its own 900 s budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from strict_singleton.testing._process import GuardedPopen, kill_group

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark_run(tmp_path: Path) -> None:
    # Guarded: however this test ends (failure, timeout, a killed pytest), the run and
    # everything it started (servers, spawn workers) is killed with it.
    proc = GuardedPopen(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _out, err = proc.communicate(timeout=800)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    for suite in ("floors", "uncontended", "throughput", "contention", "sweep", "memory"):
        assert results[suite], suite
    strict = [c for c in results["sweep"]["cells"] if c["strategy"] == "strict"]
    assert strict and all(c["violating_rounds"] == 0 and c["lost_starts"] == 0 for c in strict)
    naive_overwrite = [c for c in results["sweep"]["cells"] if c["strategy"] == "naive" and c["profile"] == "overwrite"]
    assert sum(c["violating_rounds"] for c in naive_overwrite) > 0
    assert (tmp_path / "quick.md").exists()
