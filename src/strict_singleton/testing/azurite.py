"""The Azurite Blob emulator as a real process on a free loopback port, in memory.

The binary is found in this order: ``$STRICT_SINGLETON_AZURITE``, ``node_modules/.bin/
azurite-blob`` in the current directory or any parent (the project pins Azurite in
``package.json``; ``npm ci`` installs it), then ``azurite-blob`` on PATH. Uses the
well-known development account ``devstoreaccount1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from strict_singleton.testing.backend import free_port

DEV_ACCOUNT = "devstoreaccount1"
# The emulator's published development key (not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str:
    override = os.environ.get("STRICT_SINGLETON_AZURITE")
    if override:
        return override
    roots = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    for root in roots:
        candidate = root / "node_modules" / ".bin" / "azurite-blob"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise RuntimeError("azurite-blob not found: run `npm ci` in the project (Azurite is pinned in package.json)")


def dev_connection_string(host: str, port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{DEV_ACCOUNT};"
    )


class Azurite:
    """One azurite-blob process. ``start()`` waits until it "successfully listens"."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []

    @property
    def connection_string(self) -> str:
        return dev_connection_string("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        """The lock URL the CLI takes: ``azurite://127.0.0.1:PORT/<container>``."""
        return f"azurite://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def container_client(self, container: str, *, asynchronous: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("retry_total", 0)
        if asynchronous:
            from azure.storage.blob.aio import ContainerClient as AsyncContainerClient

            return AsyncContainerClient.from_connection_string(
                self.connection_string, container_name=container, **kwargs
            )
        from azure.storage.blob import ContainerClient

        return ContainerClient.from_connection_string(self.connection_string, container_name=container, **kwargs)

    def start(self) -> Azurite:
        if self.running:
            return self
        args = [
            azurite_binary(),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self.port),
            "--inMemoryPersistence",
            "--silent",
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]  # fmt: skip
        self._lines = []
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self._proc = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.append(line)
                if "successfully listens" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True, name=f"azurite-{self.port}-log").start()
        ready.wait(self.startup_timeout)
        if not self.running or not any("successfully listens" in line for line in self._lines):
            self.stop()
            raise RuntimeError(f"azurite did not start on port {self.port}:\n{''.join(self._lines[-20:])}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # node and its children
        proc.wait(timeout=10)

    def restart(self) -> Azurite:
        """Kill and start again on the same port (in-memory: every blob is forgotten)."""
        self.stop()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
