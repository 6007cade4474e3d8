"""Servers started by the plugin's fixtures never outlive the pytest process that started
them, even when it is killed with SIGKILL (no teardown, no atexit, no signal handler runs).

A real pytest session in a subprocess requests the shared and private servers, writes
their pids and blocks; this test SIGKILLs it and waits, bounded, until nothing is left in
the servers' process groups (redis-server, Azurite's node process, their watchers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from strict_singleton.testing._process import GuardedPopen, kill_group
from suite_helpers import poll_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process state from /proc")

INNER = """
import json, os, threading
from pathlib import Path

def test_hold_servers(strict_singleton_redis, strict_singleton_private_redis, strict_singleton_azurite):
    servers = [strict_singleton_redis, strict_singleton_private_redis, strict_singleton_azurite]
    pidfile = Path(os.environ["REAPING_PIDFILE"])
    pidfile.with_suffix(".tmp").write_text(json.dumps([s.pid for s in servers]))
    pidfile.with_suffix(".tmp").rename(pidfile)
    threading.Event().wait(600)  # held until the outer test kills this pytest
"""


def processes_in_groups(groups: set[int]) -> dict[int, str]:
    """pid -> command of every live (not zombie) process whose process group is in ``groups``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) in groups and state != "Z":
            found[int(entry.name)] = cmdline[:120]
    return found


def test_servers_die_with_a_sigkilled_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    pidfile = tmp_path / "pids.json"
    env = {**os.environ, "REAPING_PIDFILE": str(pidfile)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_inner.py"]
    # Guarded itself, so that not even a killed outer pytest leaves the inner one behind.
    inner = GuardedPopen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    groups: set[int] = set()
    try:
        poll_until(lambda: pidfile.exists() or inner.poll() is not None, 120, "the inner pytest's servers")
        assert pidfile.exists(), inner.communicate()[0].decode(errors="replace")[-3000:]
        groups = set(json.loads(pidfile.read_text()))  # each server leads its own process group
        alive = processes_in_groups(groups)
        assert groups <= set(alive), alive  # the servers are up
        assert len(alive) > len(groups)  # and each has its watcher

        os.kill(inner.pid, signal.SIGKILL)
        inner.wait(30)

        left: dict[int, str] = {}

        def all_gone() -> bool:
            left.clear()
            left.update(processes_in_groups(groups))
            return not left

        try:
            poll_until(all_gone, 30, "the servers of the killed pytest to die")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still running: {left}") from None
    finally:
        kill_group(inner)
        for pid in processes_in_groups(groups):  # never leave anything behind, even when failing
            os.kill(pid, signal.SIGKILL)
