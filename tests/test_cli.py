"""`strict-singleton race` as a new user meets it: secrets, outages, missing extras, output.

Real components only: real redis-server processes (with ``requirepass``), the in-memory
Durable backend over gRPC, spawned starter processes.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strict_singleton._harness.race import StrategySummary
from strict_singleton.cli import (
    EXIT_OK,
    EXIT_RACE_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VIOLATION,
    main,
    verdict,
)
from strict_singleton.lock_backends._url import redact_url, scrub
from strict_singleton.testing import RedisServer, free_port
from strict_singleton.testing.azurite import Azurite

# -- secrets never printed --------------------------------------------------------------


@pytest.fixture
def password() -> str:
    return f"pw-{uuid.uuid4().hex}"  # unique: it cannot appear anywhere by chance


@pytest.fixture
def auth_redis(password: str) -> Iterator[RedisServer]:
    with RedisServer(password=password) as server:
        yield server


@pytest.fixture
def figure_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text drawn on a figure the CLI saves (titles, labels, annotations).

    A spy, not a stand-in: it records the figure's text artists, then saves as usual.
    """
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    texts: list[str] = []
    save = Figure.savefig

    def spy(self: Figure, *args: Any, **kwargs: Any) -> Any:
        texts.extend(t.get_text() for t in self.findobj(Text))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return texts


def _lock_urls(kind: str, password: str, servers: list[RedisServer]) -> str:
    first = servers[0]
    if kind == "redis-userinfo":
        return f"redis://:{password}@127.0.0.1:{first.port}/0"
    if kind == "redis-user-and-password":
        return f"redis://default:{password}@127.0.0.1:{first.port}/0"
    if kind == "redis-query":
        return f"redis://127.0.0.1:{first.port}/0?password={password}"
    assert kind == "redlock"
    return "redlock://" + ",".join(f":{password}@127.0.0.1:{s.port}" for s in servers) + "/0"


@pytest.mark.parametrize("kind", ["redis-userinfo", "redis-user-and-password", "redis-query", "redlock"])
def test_race_never_prints_the_lock_password(kind: str, password: str, tmp_path: Path, figure_texts: list[str]) -> None:
    servers = [RedisServer(password=password).start() for _ in range(3 if kind == "redlock" else 1)]
    try:
        url = _lock_urls(kind, password, servers)
        out, err = io.StringIO(), io.StringIO()
        json_path, plot_path = tmp_path / "race.json", tmp_path / "race.png"
        args = ["race", "--lock", url, "--processes", "1", "--starters", "3", "--rounds", "3"]
        args += ["--strategies", "strict", "--json", str(json_path), "--plot", str(plot_path)]
        status = main(args, stdout=out, stderr=err)
    finally:
        for s in servers:
            s.stop()
    report = json.loads(json_path.read_text())
    # The password was used for real: the authenticated store served every strict start.
    assert status == 0, out.getvalue() + err.getvalue()
    assert report["summary"][0]["created"] == 3 and report["summary"][0]["errors"] == 0
    assert figure_texts, "the plot was not drawn"
    outputs = {
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "--json file": json_path.read_text(),
        "--plot texts": "\n".join(figure_texts),
    }
    assert [where for where, text in outputs.items() if password in text] == []
    assert "***" in out.getvalue() and "***" in report["config"]["lock_url"]
    assert f"127.0.0.1:{servers[0].port}" in report["config"]["lock_url"]  # still says where it raced


# -- an outage is not a violation -----------------------------------------------------


def _race(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["race", "--processes", "1", "--starters", "2", "--rounds", "2", *args], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_redis_down_is_reported_as_unavailable_before_any_race() -> None:
    port = free_port()  # nothing listens there
    status, out, err = _race(["--lock", f"redis://127.0.0.1:{port}/0"])
    assert status == EXIT_UNAVAILABLE, out + err
    assert "lock store unavailable" in err and f"127.0.0.1:{port}" in err
    assert "violated" not in out and "FAIL" not in out
    assert "strategy" not in out  # no table: nothing was raced


def test_azurite_down_is_reported_as_unavailable_before_any_race() -> None:
    port = free_port()
    status, out, err = _race(["--lock", f"azurite://127.0.0.1:{port}/locks"])
    assert status == EXIT_UNAVAILABLE, out + err
    assert "lock store unavailable" in err and f"127.0.0.1:{port}" in err
    assert "violated" not in out and "strategy" not in out


@pytest.mark.parametrize("up", [1, 2])
def test_redlock_preflight_needs_a_majority(up: int) -> None:
    servers = [RedisServer().start() for _ in range(up)]
    try:
        nodes = [f"127.0.0.1:{s.port}" for s in servers] + [f"127.0.0.1:{free_port()}" for _ in range(3 - up)]
        status, out, err = _race(["--lock", "redlock://" + ",".join(nodes) + "/0", "--strategies", "strict"])
    finally:
        for s in servers:
            s.stop()
    if up == 1:  # no majority: no lease can be granted, so nothing is raced
        assert status == EXIT_UNAVAILABLE, out + err
        assert "2 of 3 Redlock nodes unreachable (a lease needs 2)" in err and "strategy" not in out
    else:  # a majority answers: the race runs, and the user is told about the node that is down
        assert status == EXIT_OK, out + err
        assert "warning: Redlock node down (a majority still answers)" in err and nodes[2] in err


class StrictAzurite(Azurite):
    """Azurite as it ships: it refuses storage API versions newer than it knows."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--skipApiVersionCheck"]


def test_azurite_refusing_the_sdk_api_version_is_reported_with_its_message() -> None:
    with StrictAzurite() as emulator:
        status, out, err = _race(["--lock", f"{emulator.url}/locks"])
    if status == 0:
        pytest.skip("this Azurite accepts the installed SDK's API version")
    assert status == EXIT_UNAVAILABLE, out + err
    # The status comes from our preflight; the wording after it is Azurite's own.
    assert "lock store unavailable" in err and "HTTP 400" in err


def test_starts_failing_closed_during_the_race_exit_3_with_the_first_error(tmp_path: Path) -> None:
    """The store answers PING (the preflight) but refuses every lease command: strict fails
    closed in every round. That is an outage (exit 3), not a violation (exit 1)."""
    with RedisServer() as server:
        import redis

        admin = redis.Redis(port=server.port)
        admin.execute_command("ACL", "SETUSER", "pinger", "on", ">pingpw", "-@all", "+@connection")
        admin.close()
        json_path = tmp_path / "race.json"
        url = f"redis://pinger:pingpw@127.0.0.1:{server.port}/0"
        status, out, err = _race(["--lock", url, "--strategies", "naive,strict", "--json", str(json_path)])
    assert status == EXIT_UNAVAILABLE, out + err
    verdict_line = out.strip().splitlines()[-1]
    assert verdict_line.startswith("UNAVAILABLE: strict failed closed")
    assert "LockUnavailableError" in verdict_line  # the first error, by our class
    assert "violated" not in out
    summary = {s["strategy"]: s for s in json.loads(json_path.read_text())["summary"]}
    assert summary["strict"]["failed_closed_rounds"] == 2 and summary["strict"]["violating_rounds"] == 0
    assert summary["strict"]["created"] == 0  # failed closed: nothing was scheduled
    assert "rounds failed closed" in out  # the table says so too


def _summary(strategy: str, **fields: Any) -> StrategySummary:
    base: dict[str, Any] = dict(
        strategy=strategy, rounds=10, started_reports=10, created=10, lost_starts=0, overlap_violations=0,
        violating_rounds=0, errors=0, latency_p50_ms=1.0, latency_p99_ms=2.0, max_spread_ms=0.5, executions=None,
    )  # fmt: skip
    return StrategySummary(**{**base, **fields})


def test_verdict_a_violation_outranks_an_outage_and_naive_never_counts() -> None:
    naive_bad = _summary("naive", started_reports=30, created=30, lost_starts=20, violating_rounds=10)
    outage = _summary("strict", started_reports=6, created=6, errors=4, failed_closed_rounds=4, first_error="E: x")
    both = _summary("strict", started_reports=7, created=7, lost_starts=1, violating_rounds=1, errors=3)
    assert verdict([naive_bad, _summary("strict")])[0] == EXIT_OK
    code, reason = verdict([naive_bad, outage])
    assert code == EXIT_UNAVAILABLE and reason.endswith("First error: E: x")
    assert verdict([both])[0] == EXIT_VIOLATION
    assert len({EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_RACE_FAILED}) == 5


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["race", "--help"])
    text = capsys.readouterr().out
    for code, word in [(EXIT_VIOLATION, "violated"), (EXIT_USAGE, "extra"), (EXIT_UNAVAILABLE, "unavailable")]:
        assert f"  {code}  " in text and word in text


# -- missing extras found before any work, with the install line -----------------------


@pytest.mark.parametrize(
    ("hidden", "flags", "install"),
    [
        ("matplotlib", ["--plot", "race.png"], "pip install 'strict-singleton[plot]'"),
        ("redis", ["--lock", "redis://127.0.0.1:1/0"], "pip install 'strict-singleton[redis]'"),
        (
            "redis",
            ["--lock", "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/0"],
            "pip install 'strict-singleton[redis]'",
        ),
        ("azure.storage.blob", ["--lock", "azurite://127.0.0.1:1/locks"], "pip install 'strict-singleton[azure]'"),
        ("aiohttp", ["--lock", "azurite://127.0.0.1:1/locks", "--api", "asyncio"], "strict-singleton[azure]"),
    ],
)
def test_a_missing_extra_stops_before_any_work_with_the_install_line(
    hidden: str, flags: list[str], install: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # as if the package were not installed
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(["race", *flags], stdout=out, stderr=err)
    except SystemExit as exc:  # argparse reports a flag it cannot accept
        status = exc.code
    err_text = err.getvalue() + capsys.readouterr().err
    assert status == EXIT_USAGE
    assert install in err_text and "Traceback" not in err_text
    assert out.getvalue() == ""  # not even the header: nothing ran


# -- output fit for logs and terminals --------------------------------------------------


def _cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strict_singleton.cli", "race", *args], text=True, timeout=300, **kwargs
    )


def test_no_progress_bar_and_no_worker_logs_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    """--execute on the overwrite profile: the worker warns about every replaced instance."""
    proc = _cli(
        "--execute", "--lock", f"file:{tmp_path}", "--processes", "1", "--starters", "3", "--rounds", "3",
        capture_output=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert "executions" in proc.stdout


def test_verbose_shows_the_worker_logs(tmp_path: Path) -> None:
    proc = _cli(
        "--execute", "--verbose", "--lock", f"file:{tmp_path}", "--processes", "1", "--starters", "3",
        "--rounds", "3", capture_output=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[durabletask.testing.in_memory_backend] INFO Created orchestration instance" in proc.stderr


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        proc = _cli(
            "--lock", f"file:{tmp_path}", "--processes", "1", "--starters", "2", "--rounds", "3",
            stdout=subprocess.PIPE, stderr=follower,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        seen = b""
        while True:  # the child has exited: read what it left until the terminal says EOF
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stdout
    assert b"] 6/6 " in seen  # the bar's last frame: 2 strategies x 3 rounds


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://app:s3cret@h:1/0", "redis://app:***@h:1/0"),
        ("redis://s3cret@h:1/0", "redis://***@h:1/0"),  # a password typed without its colon
        ("rediss://:p%40ss3cret@h:1/0", "rediss://:***@h:1/0"),
        ("redis://:pa/s3cret@h:1/0", "redis://:***@h:1/0"),  # unescaped '/' in the password
        ("redis://h:1/0?password=s3cret&socket_timeout=2", "redis://h:1/0?password=***&socket_timeout=2"),
        ("redis://h:1/0?ssl_keyfile=/k&SOCKET_TIMEOUT=2", "redis://h:1/0?ssl_keyfile=***&SOCKET_TIMEOUT=2"),
        ("redlock://:s3cret@a:1,b:2,u:s3cret@c:3/0", "redlock://:***@a:1,b:2,u:***@c:3/0"),
        ("redis://h:1/0#s3cret", "redis://h:1/0#***"),
        ("file:/var/lock/app", "file:/var/lock/app"),
        ("azurite://127.0.0.1:10000/locks", "azurite://127.0.0.1:10000/locks"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert scrub(f"driver said: could not auth with {url}", url).count("s3cret") == 0


# -- argparse's own messages never echo a secret ------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["race", "--lock", "redis://:S3cretPW@127.0.0.1:1/0", "redis://:0therPW@127.0.0.1:1/1"],
        ["redis://:S3cretPW@127.0.0.1:1/0"],
        ["race", "--bogus", "redis://:S3cretPW@127.0.0.1:1/0"],
        ["doctor", "--bogus", "redis://:S3cretPW@127.0.0.1:1/0", "--", "redis://:0therPW@h:1/0"],
        ["doctor", "--client", "user:S3cretPW@127.0.0.1:1"],
        ["doctor", "--timeout", "S3cretPW@127.0.0.1:1"],
        ["explore", "--seed", "redis://:S3cretPW@127.0.0.1:1/0"],
        ["doctor", "redis://127.0.0.1:1/0", "--clock-skew", "x", "127.0.0.1:S3cret%2BPW"],
    ],
)
def test_argparse_usage_errors_never_print_a_secret(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exc:
        main(argv, stdout=out, stderr=err)
    assert exc.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    text = out.getvalue() + err.getvalue() + captured.out + captured.err
    assert "error" in text
    for secret in ("S3cret", "0therPW"):
        assert secret not in text, text
