"""The explorer (``strict_singleton.testing.explore``) in CI, at bounds that fit in seconds.

The full default bounds run as ``strict-singleton explore --mutants tests/explorer_mutants.py``
(a step of .ci/run, about 40 s on 2 cores). Here every safe configuration is searched with one
preemption and one fault, and sampled with 3 starters; every documented residual window must
produce its counterexample, and every mutant of the registry (``explorer_mutants.py``, beside
this file) must be killed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from explorer_mutants import MUTANTS
from strict_singleton import cli
from strict_singleton.testing.explore import (
    CONFIGS,
    Violation,
    describe,
    explore,
    load_mutants,
    random_walks,
    replay,
)

MUTANTS_FILE = str(Path(__file__).with_name("explorer_mutants.py"))
SAFE = [name for name, cfg in CONFIGS.items() if cfg.safe]
RESIDUAL = [name for name, cfg in CONFIGS.items() if not cfg.safe]


@pytest.mark.parametrize("name", SAFE)
def test_safe_configuration_has_no_violation(name: str) -> None:
    report = explore(replace(CONFIGS[name], preemptions=1, max_faults=1))
    assert report.ok, "\n".join(report.steps)
    assert not report.truncated and report.schedules > 10


@pytest.mark.parametrize("name", SAFE)
def test_safe_configuration_random_three_starters(name: str) -> None:
    report = random_walks(replace(CONFIGS[name], starters=3), seed=7, walks=30)
    assert report.ok, "\n".join(report.steps)


@pytest.mark.parametrize("name", RESIDUAL)
def test_documented_residual_window_is_found(name: str) -> None:
    report = explore(CONFIGS[name])
    assert not report.ok, f"{name}: the documented window was not reproduced"
    with pytest.raises(Violation):  # the printed schedule replays to the same violation
        replay(name, report.schedule or "")


# Bugs of the lease's timing, each re-created by a mutant that must stay in the registry.
LEASE_TIMING_BUGS = {
    "release-on-ambiguous-failure": "a delayed request lands after the lease",
    "no-validity-check": "a pause after the last check",
    "no-confirmation": "the lease lost during a slow read",
    "queued-finish": "backlogged finishes",
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_killed(name: str) -> None:
    mutant = MUTANTS[name]
    report = explore(mutant.config, mutant=mutant)
    assert not report.ok, f"mutant {name} survived {report.schedules} schedules"
    lines = describe(CONFIGS[mutant.config], mutant, (report.schedule or "").split())
    assert any("VIOLATION" in line for line in lines)


# Bugs of the newer features (docs/guarantees.md), each re-created by a mutant that must stay
# in the registry. Bugs outside the flow (a forked child's file descriptors, URL characters in
# Functions names, lock keys per task hub) are properties of one component, tested on the
# real component instead.
FEATURE_BUGS = {
    "record-drops-newest": "a signal entry silently dropped from a full request record",
    "plain-release-on-cancel": "a cancelled start_or_signal leaves no start record",
    "event-before-record": "the event raised under the lease before the recording release",
    "one-second-unchecked": "a retry on one-second creation times runs its request twice",
    "terminate-by-clock": "TERMINATE_EXISTING ignores an instance younger than clock_skew",
}


def test_every_known_bug_is_a_mutant() -> None:
    assert set(LEASE_TIMING_BUGS) <= set(MUTANTS)
    assert set(FEATURE_BUGS) <= set(MUTANTS)


def test_every_feature_has_a_configuration() -> None:
    """start_or_signal, request IDs (retried after a replacement, on one-second times, with full
    records), TERMINATE_EXISTING over a young instance, and cancellation, event, outage and
    failing-read faults are explored, not only sampled."""
    safe = [cfg for cfg in CONFIGS.values() if cfg.safe]
    assert any(cfg.signals and not cfg.request_ids for cfg in safe)
    assert any(cfg.request_ids and cfg.completions and cfg.whole_seconds for cfg in safe)
    assert any(cfg.request_ids and cfg.completions and not cfg.whole_seconds for cfg in safe)
    assert any(cfg.seed_signals for cfg in safe)
    assert any(cfg.on_conflict == "terminate_existing" and cfg.preexisting is not None for cfg in safe)
    explored = set().union(*(cfg.faults for cfg in safe))
    assert {"cancel", "event", "outage", "failread"} <= explored


def test_cli_explore_lists_replays_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["explore", "--list", "--mutants", MUTANTS_FILE]) == 0
    listed = capsys.readouterr().out
    assert "residual-store-loss" in listed and "mutant no-lease" in listed
    out = io.StringIO()
    status = cli.main(
        [
            "explore",
            *("--config", "residual-stall-after-check"),
            *("--mutants", MUTANTS_FILE, "--mutant", "no-lease"),
            *("--walks", "5"),
        ],
        stdout=out,
    )
    text = out.getvalue()
    assert status == 0 and "counterexample found, as documented" in text and "killed" in text
    assert "replay: strict-singleton explore --config residual-stall-after-check" in text
    schedule = text.split("--replay '")[1].split("'")[0]
    replayed = io.StringIO()
    assert cli.main(["explore", "--config", "residual-stall-after-check", "--replay", schedule], stdout=replayed) == 1
    assert "VIOLATION" in replayed.getvalue()
    assert cli.main(["explore", "--config", "nope"], stderr=io.StringIO()) == 2


def test_cli_explore_runs_mutants_only_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["explore", "--list"]) == 0
    assert "mutant " not in capsys.readouterr().out  # no --mutants: none loaded
    err = io.StringIO()
    assert cli.main(["explore", "--mutant", "no-lease"], stderr=err) == 2
    assert "--mutant needs --mutants" in err.getvalue()
    err = io.StringIO()
    assert cli.main(["explore", "--mutants", MUTANTS_FILE, "--mutant", "nope"], stderr=err) == 2
    assert "unknown mutant 'nope'" in err.getvalue()
    err = io.StringIO()
    assert cli.main(["explore", "--mutants", str(tmp_path / "missing.py")], stderr=err) == 2
    assert "--mutants" in err.getvalue()
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    err = io.StringIO()
    assert cli.main(["explore", "--mutants", str(empty), "--list"], stderr=err) == 2
    assert "defines no MUTANTS" in err.getvalue()


def test_load_mutants_reads_the_registry_and_checks_it(tmp_path: Path) -> None:
    assert list(load_mutants(MUTANTS_FILE)) == list(MUTANTS)
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import contextlib\n"
        "from strict_singleton.testing.explore import Mutant\n"
        "MUTANTS = {'m': Mutant('m', 'd', 'no-such-config', contextlib.nullcontext)}\n"
    )
    with pytest.raises(ValueError, match="unknown configuration"):
        load_mutants(wrong)
    misnamed = tmp_path / "misnamed.py"
    misnamed.write_text(
        "import contextlib\n"
        "from strict_singleton.testing.explore import Mutant\n"
        "MUTANTS = {'other': Mutant('m', 'd', 'overwrite', contextlib.nullcontext)}\n"
    )
    with pytest.raises(ValueError, match="defines no MUTANTS"):
        load_mutants(misnamed)


def test_forked_searches_take_mutants_that_do_not_pickle() -> None:
    """The pool's workers get their tasks by the fork: a mutant's patch may be a closure. Run in
    a fresh interpreter, where no other thread is running (this one may have some), so it forks."""
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from dataclasses import replace
        sys.path.insert(0, sys.argv[1])
        from explorer_mutants import MUTANTS
        from strict_singleton.testing.explore import run_all, search
        assert search._can_fork(), "a fresh interpreter must be able to fork"

        @contextlib.contextmanager
        def patch():
            yield  # a closure: pickling it would fail

        mutant = replace(MUTANTS["no-lease"], patch=patch)
        out = io.StringIO()
        status = run_all(out, configs=["residual-stall-after-check"], mutants=[mutant], walks=5, jobs=2)
        print(out.getvalue())
        sys.exit(status)
        """
    )
    tests_dir = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", code, tests_dir], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mutant   no-lease" in done.stdout and "killed" in done.stdout
