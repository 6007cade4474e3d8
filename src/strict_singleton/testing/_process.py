"""A test server as a real child process on a free port, ready when it says so."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import TypeVar

from strict_singleton.testing.backend import free_port

S = TypeVar("S", bound="ServerProcess")


class ServerProcess:
    """Start, stop and restart one server process; ``start()`` returns once a line of its
    output contains ``ready_text`` (or raises with the last lines it printed)."""

    ready_text = ""
    label = "server"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self: S) -> S:
        if self.running:
            return self
        self._lines = []
        # Its own session, so stop() can kill the whole process group (node spawns children).
        proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self._proc = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.append(line)
                if self.ready_text in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        threading.Thread(target=pump, daemon=True, name=f"{self.label}-{self.port}-log").start()
        ready.wait(self.startup_timeout)
        if not self.running or not any(self.ready_text in line for line in self._lines):
            self.stop()
            raise RuntimeError(f"{self.label} did not start on port {self.port}:\n{''.join(self._lines[-20:])}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self: S) -> S:
        """Kill and start again on the same port (no persistence: all state is forgotten)."""
        self.stop()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
