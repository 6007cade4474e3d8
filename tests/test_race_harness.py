"""The race harness and the `strict-singleton race` CLI, tested so that they can fail."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from durabletask.client import TaskHubGrpcClient

from strict_singleton import SingletonStarter
from strict_singleton._harness.race import RaceConfig, StrategySummary, run_race
from strict_singleton._harness.strategies import naive_start
from strict_singleton.cli import exit_status, main
from strict_singleton.lock_backends import FileLease
from strict_singleton.testing import RedisServer
from strict_singleton.testing._process import GuardedPopen, kill_group
from strict_singleton.testing.azurite import Azurite
from strict_singleton.testing.plugin import StarterSwarm


def by_strategy(summaries: list[StrategySummary]) -> dict[str, StrategySummary]:
    return {s.strategy: s for s in summaries}


def test_a_broken_starter_is_caught_by_the_ledger(tmp_path: Path) -> None:
    cfg = RaceConfig(
        profile="overwrite",
        lock_url=f"file:{tmp_path}",
        processes=2,
        starters=4,
        rounds=10,
        strategies=("unlocked", "naive", "strict"),
    )
    report = run_race(cfg)
    s = by_strategy(report.summaries())
    assert s["unlocked"].violating_rounds > 0 and s["unlocked"].lost_starts > 0
    assert s["naive"].violating_rounds > 0
    assert s["strict"].violating_rounds == 0 and s["strict"].lost_starts == 0 and s["strict"].errors == 0
    assert s["strict"].created == cfg.rounds
    assert exit_status(report.summaries()) == 0


def test_processes_are_separate_and_lined_up(tmp_path: Path) -> None:
    cfg = RaceConfig(lock_url=f"file:{tmp_path}", processes=3, starters=2, rounds=5, strategies=("strict",))
    report = run_race(cfg)
    data = report.to_json()
    assert len(data["starter_pids"]) == 3 and os.getpid() not in data["starter_pids"]
    for row in data["rounds"]:
        assert len(row["pids"]) == 3 and len(row["began"]) == 6
    # Lined up per round (one monotonic clock for all processes on Linux): no call of a round
    # begins before every call of the round before it has returned.
    for before, after in zip(report.rounds, report.rounds[1:], strict=False):
        assert min(after.began) >= max(before.ended), (before.round, after.round)


def test_reuse_with_a_real_worker_counts_executions(tmp_path: Path) -> None:
    cfg = RaceConfig(
        profile="atomic", lock_url=f"file:{tmp_path}", processes=1, starters=6, rounds=4, ids="reuse",
        strategies=("strict",), execute=True, api="asyncio",
    )  # fmt: skip
    report = run_race(cfg)
    (strict,) = report.summaries()
    assert (strict.violating_rounds, strict.created, strict.executions) == (0, 4, 4)
    assert len({r.instance_id for r in report.rounds}) == 1
    assert report.rounds[0].instance_id.startswith("race") and report.rounds[0].instance_id.endswith("-strict")


def test_exit_status_fails_when_strict_violates() -> None:
    ok = StrategySummary("strict", 10, 10, 10, 0, 0, 0, 0, 1.0, 2.0, 0.5, None)
    bad = StrategySummary("strict", 10, 11, 11, 1, 1, 1, 0, 1.0, 2.0, 0.5, None)
    naive_bad = StrategySummary("naive", 10, 30, 30, 20, 10, 10, 0, 1.0, 2.0, 0.5, None)
    assert exit_status([naive_bad, ok]) == 0
    assert exit_status([naive_bad, bad]) == 1


def test_cli_with_no_arguments() -> None:
    """The README's main-job command, exactly as written: no flags, no servers."""
    # Guarded: its starter processes die with it whatever happens to this test.
    proc = GuardedPopen(
        [sys.executable, "-m", "strict_singleton.cli", "race"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=100)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, stdout + stderr
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith(("naive ", "strict "))}
    violating = 6  # column: rounds violating exactly-once
    assert int(rows["naive"][violating]) > 0
    assert int(rows["strict"][violating]) == 0


def test_cli_with_redis_json_and_plot(strict_singleton_redis: RedisServer, tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["race", "--lock", strict_singleton_redis.url, "--rounds", "8", "--starters", "4", "--no-progress"]
    args += ["--json", str(tmp_path / "race.json"), "--plot", str(tmp_path / "race.png")]
    assert main(args, stdout=out, stderr=io.StringIO()) == 0, out.getvalue()
    data = json.loads((tmp_path / "race.json").read_text())
    summary = {s["strategy"]: s for s in data["summary"]}
    assert set(summary) == {"naive", "redis-lock", "strict"}
    assert summary["strict"]["violating_rounds"] == 0 and summary["strict"]["created"] == 8
    assert summary["naive"]["violating_rounds"] > 0
    assert (tmp_path / "race.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--processes", "0"], "must be at least 1"),
        (["--rounds", "many"], "whole number"),
        (["--lock", "redis://localhost:notaport/0"], "bad port"),
        (["--lock", "ftp://example/x"], "unsupported lock URL"),
        (["--strategies", "naive,bogus"], "unknown strategies"),
        (["--latency", "-1"], "seconds >= 0"),
        (["--profile", "sloppy"], "invalid choice"),
    ],
)
def test_cli_bad_flags(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["race", *flags])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_redis_lock_strategy_needs_redis() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["race", "--strategies", "redis-lock", "--no-progress"], stdout=out, stderr=err) == 2
    assert "needs a Redis server" in err.getvalue()
    assert out.getvalue() == ""  # refused before any work


@pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)
def test_starter_swarm_fixture(strict_singleton_starter_swarm: StarterSwarm, tmp_path: Path) -> None:
    client = TaskHubGrpcClient(host_address=strict_singleton_starter_swarm.backend.address)
    with SingletonStarter(client, lock=FileLease(tmp_path)) as starter:
        result = strict_singleton_starter_swarm(
            lambda iid: starter.start("orch", instance_id=iid), instance_id="fixture", n=16
        )
    assert result.exactly_once and result.outcomes["started"] == 1
    strict_singleton_starter_swarm.backend.latency = 0.002
    naive = [
        strict_singleton_starter_swarm(lambda iid: naive_start(client, "orch", instance_id=iid), instance_id=f"n{i}")
        for i in range(5)
    ]
    assert not all(r.exactly_once for r in naive)
    client.close()


def test_cli_with_azurite_lock(strict_singleton_azurite: Azurite) -> None:
    out = io.StringIO()
    args = [
        "race",
        "--lock",
        f"{strict_singleton_azurite.url}/locks",
        "--rounds",
        "6",
        "--starters",
        "4",
        "--no-progress",
    ]
    assert main(args, stdout=out, stderr=io.StringIO()) == 0, out.getvalue()
    strict = next(line.split() for line in out.getvalue().splitlines() if line.startswith("strict "))
    assert strict[1:4] == ["6", "6", "6"]  # rounds, STARTED reports, instances created
