"""Constants and helpers shared by the test modules (importable by name; conftest is not)."""

from __future__ import annotations

import uuid

LOCK_KINDS = ["file", "redis", "blob", "redlock"]


def token(name: str) -> str:
    """A stable owner token for readable tests (Blob lease IDs must be GUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"strict-singleton-test/{name}"))
