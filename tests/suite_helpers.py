"""Constants and helpers shared by the test modules (importable by name; conftest is not)."""

from __future__ import annotations

import threading
import uuid

LOCK_KINDS = ["file", "redis", "blob", "redlock"]


def token(name: str) -> str:
    """A stable owner token for readable tests (Blob lease IDs must be GUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"strict-singleton-test/{name}"))


class FakeClock:
    """An injectable monotonic clock that tests move forward by hand (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
