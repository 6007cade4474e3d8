"""Reading a Redis answer without letting a refusal crash a check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def describe(exc: BaseException) -> str:
    """An error in one line (redis-py messages name host and port, never the password)."""
    message = " ".join(str(exc).split()).rstrip(".")
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


def read(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """(answer, None) or (None, why it could not be read)."""
    try:
        return call(), None
    except Exception as exc:
        return None, describe(exc)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
