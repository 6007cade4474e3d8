"""The Azurite Blob emulator as a real process on a free loopback port, in memory.

The binary is found in this order: ``$STRICT_SINGLETON_AZURITE``, ``node_modules/.bin/
azurite-blob`` in the current directory or any parent (the project pins Azurite in
``package.json``; ``npm ci`` installs it), then ``azurite-blob`` on PATH. Uses the
well-known development account ``devstoreaccount1``. The process is guarded (see
:mod:`strict_singleton.testing._process`): it dies with the process that started it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from strict_singleton.lock_backends._azurite_dev import DEV_KEY, dev_connection_string
from strict_singleton.testing._process import ServerProcess

__all__ = ["DEV_KEY", "Azurite", "azurite_binary", "dev_connection_string"]


def azurite_binary() -> str:
    """The Azurite blob server to run: ``$STRICT_SINGLETON_AZURITE``, else the one ``npm ci`` installed
    beside this checkout, else ``azurite-blob`` on the PATH."""
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


class Azurite(ServerProcess):
    """One azurite-blob process. ``start()`` waits until it "successfully listens"."""

    ready_text = "successfully listens"
    label = "azurite"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)

    def command(self) -> list[str]:
        return [
            azurite_binary(),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self.port),
            "--inMemoryPersistence",
            "--silent",
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]  # fmt: skip

    @property
    def connection_string(self) -> str:
        return dev_connection_string("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        """The lock URL the CLI takes: ``azurite://127.0.0.1:PORT/<container>``."""
        return f"azurite://127.0.0.1:{self.port}"

    def container_client(self, container: str, *, asynchronous: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("retry_total", 0)
        if asynchronous:
            from azure.storage.blob.aio import ContainerClient as AsyncContainerClient

            return AsyncContainerClient.from_connection_string(
                self.connection_string, container_name=container, **kwargs
            )
        from azure.storage.blob import ContainerClient

        return ContainerClient.from_connection_string(self.connection_string, container_name=container, **kwargs)

    def delete_all_containers(self) -> None:
        """Forget every container (and so every blob and lease): a fresh emulator for the next test."""
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string, retry_total=0) as service:
            for container in service.list_containers():
                service.delete_container(container.name)
