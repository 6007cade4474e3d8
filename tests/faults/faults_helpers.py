"""Helpers for the fault suite: holder processes and blocking read hooks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from strict_singleton.testing import DurableTestBackend
from suite_helpers import poll_until

__all__ = ["Gate", "HolderProcess", "poll_until"]

HOLDER = str(Path(__file__).with_name("holder.py"))


class Gate:
    """Blocks the first status read (or, with ``on="start"``, the first schedule) of one
    instance ID inside the backend until opened."""

    def __init__(self, backend: DurableTestBackend, instance_id: str, *, on: str = "read") -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self._instance_id = instance_id
        self._used = False
        self._lock = threading.Lock()
        if on == "start":
            backend.start_hook = self._hook
        else:
            backend.read_hook = self._hook

    def _hook(self, instance_id: str) -> None:
        with self._lock:
            first = instance_id == self._instance_id and not self._used
            if first:
                self._used = True
        if first:
            self.entered.set()
            self.opened.wait(30)

    def wait_entered(self) -> None:
        assert self.entered.wait(30), "the holder never reached the gated call"


class HolderProcess:
    """A SingletonStarter.start in a separate OS process (tests/faults/holder.py)."""

    def __init__(self, lock_url: str, address: str, instance_id: str, ttl: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, HOLDER, lock_url, address, instance_id, str(ttl)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.pid = json.loads(self.proc.stdout.readline())["pid"]

    def result(self, timeout: float = 30) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines, f"holder printed nothing; stderr:\n{err}"
        return dict(json.loads(lines[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
