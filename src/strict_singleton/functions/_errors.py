"""The error a host answer becomes."""

from __future__ import annotations

from typing import Any


class HostError(Exception):
    """A host HTTP API failure, with a gRPC-like ``code()`` the start flow classifies
    (``ALREADY_EXISTS``, ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``DEADLINE_EXCEEDED``,
    ``UNAVAILABLE``, ``INTERNAL``: the last three may have been executed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code_name = code

    def code(self) -> Any:
        return type("Code", (), {"name": self.code_name})()
