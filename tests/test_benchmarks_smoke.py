"""The benchmark runner works end to end (a --quick run of every suite, both regimes). Not a
timed test: it checks that every suite produced results in both regimes, that the round trips
were really counted, and that strict never violated exactly-once.

About 40 s on 2 idle cores: marked ``slow``, so it is left out of the default run; ``python -m
pytest -m slow`` runs it, with its own budget (a guard against a hang, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from strict_singleton.testing._process import GuardedPopen, kill_group

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmark_run(tmp_path: Path) -> None:
    # Guarded: however this test ends (failure, timeout, a killed pytest), the run and
    # everything it started (servers, spawn workers) is killed with it.
    proc = GuardedPopen(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _out, err = proc.communicate(timeout=540)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    for suite in ("floors", "uncontended", "throughput", "contention", "sweep", "memory", "telemetry", "targets"):
        assert results[suite], suite
    assert set(results["telemetry"]["median_ratio"]) == {"metrics", "metrics+tracing"}
    for suite in ("uncontended", "throughput", "contention"):
        assert set(results[suite]) == {"a", "b"}, suite
        for regime in ("a", "b"):
            assert {"naive", "strict(file)", "strict(redis)", "strict(redlock)", "strict(blob)"} <= set(
                results[suite][regime]["counts"]
            ), (suite, regime)
    for regime in ("a", "b"):
        counts = results["uncontended"][regime]["counts"]
        # Counted on the server: an uncontended naive start is one status read and one schedule.
        assert counts["naive"]["per_start"]["backend"] == {"GetInstance": 1.0, "StartInstance": 1.0}
        for lock in ("file", "redis", "redlock", "blob"):
            strict = counts[f"strict({lock})"]["per_start"]
            assert strict["backend"].get("StartInstance") == 1.0, (regime, lock, strict)
            assert strict["lock_caller"] >= 1.0, (regime, lock, strict)  # counted through the proxy
    assert results["throughput"]["a"]["violations"] == results["throughput"]["b"]["violations"] == 0
    strict = [c for c in results["sweep"]["cells"] if c["strategy"] == "strict"]
    assert strict and all(c["violating_rounds"] == c["lost_starts"] == c["failed_closed_rounds"] == 0 for c in strict)
    naive_overwrite = [c for c in results["sweep"]["cells"] if c["strategy"] == "naive" and c["profile"] == "overwrite"]
    assert sum(c["violating_rounds"] for c in naive_overwrite) > 0
    targets = (tmp_path / "quick.md").read_text()
    assert "### Targets" in targets and "### Round trips per start" in targets and "### Telemetry" in targets
