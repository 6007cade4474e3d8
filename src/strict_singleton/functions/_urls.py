"""The values the 1.x Durable Functions client formats into its URL paths, checked before any request."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strict_singleton._validation import _FORBIDDEN_CATEGORIES, validate_instance_id
from strict_singleton.errors import InvalidArgumentError, InvalidInstanceIdError
from strict_singleton.functions._errors import HostError

if TYPE_CHECKING:
    pass


MAX_FUNCTIONS_INSTANCE_ID_LENGTH = 100


MAX_FUNCTIONS_NAME_LENGTH = 128  # the Functions host's own limit on function names


# The host sets no limit on event names; 256 keeps the request line far inside Kestrel's 8 KiB
# even with every character a percent-encoded 4-byte UTF-8 sequence (12 bytes: 3 KiB).
MAX_FUNCTIONS_EVENT_NAME_LENGTH = 256


# -- the values the 1.x client formats into its URL paths, unescaped ------------------------------
#
# The client sends e.g. f"{rpc}orchestrators/{name}/{instance_id}" and
# f"{rpc}instances/{instance_id}/raiseEvent/{event_name}". On the way, URL handling (yarl here;
# Kestrel and System.Uri in the host) ends the path at "?" or "#" and removes "." and ".."
# segments ("%2e%2e" too; a backslash is "/" to System.Uri and IIS where it arrives unescaped);
# the host's HttpApiHandler (Azure/azure-functions-durable-extension, HttpApiHandler.cs) then
# WebUtility.UrlDecode()s the whole path (every %XX, "%2F" included, and "+" as a space), trims
# "/" and matches orchestrators/{functionName}/{instanceId?} and
# instances/{instanceId}/raiseEvent/{eventName}. A value arrives as itself, in its own segment,
# only without "/ \ # ? % +" and unless it is "." or ".."; control characters are refused too
# (no Durable name has one). "% +" also keep aliases out: "a%20b", "a+b" and "a b" would be one
# instance ID under three leases.
_URL_UNSAFE = "/\\#?%+"


_DOT_SEGMENTS = (".", "..")


# The Functions host's function-name rule (Azure/azure-functions-host, src/WebJobs.Script/Utility.cs,
# FunctionNameValidationRegex: ^[a-z][a-z0-9_\-]{0,127}$(?<!^host$), case-insensitive): an
# orchestrator is a function, so no orchestrator has another name, and none of these characters
# changes a URL.
_FUNCTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,127}")


_RESERVED_FUNCTION_NAMES = frozenset({"host"})


@dataclass(frozen=True)
class _UrlValue:
    """What one kind of value may be where the 1.x client formats it into a URL path segment."""

    arg: str  # the argument's name, in messages
    max_length: int
    allowed: str  # what is allowed, in every message
    pattern: re.Pattern[str] | None = None  # an allow-list; None: anything but _URL_UNSAFE and dot segments
    reserved: frozenset[str] = frozenset()  # lower case: refused whatever the case
    no_leading_at: bool = False
    error: type[InvalidArgumentError] = InvalidArgumentError


_INSTANCE_ID = _UrlValue(
    "instance_id",
    MAX_FUNCTIONS_INSTANCE_ID_LENGTH,
    f"allowed: 1 to {MAX_FUNCTIONS_INSTANCE_ID_LENGTH} characters, none of {' '.join(_URL_UNSAFE)}, not . or .., "
    "no leading @, no control characters or surrounding whitespace",
    no_leading_at=True,
    error=InvalidInstanceIdError,
)


_FUNCTION = _UrlValue(
    "function_name",
    MAX_FUNCTIONS_NAME_LENGTH,
    "an Azure Functions function name is a letter, then up to 127 letters, digits, _ or - "
    "(^[A-Za-z][A-Za-z0-9_-]{0,127}$), and not 'host'",
    pattern=_FUNCTION_NAME,
    reserved=_RESERVED_FUNCTION_NAMES,
)


_EVENT = _UrlValue(
    "event_name",
    MAX_FUNCTIONS_EVENT_NAME_LENGTH,
    f"allowed: 1 to {MAX_FUNCTIONS_EVENT_NAME_LENGTH} characters, none of {' '.join(_URL_UNSAFE)}, not . or .., "
    "no control characters or surrounding whitespace",
)


def _url_value(value: object, kind: _UrlValue, *, instance_id: str | None = None) -> str:
    """``value`` if the 1.x client can put it into a URL path segment that reaches the host as
    itself (``kind`` says what else it must be), else ``kind.error`` saying what is allowed."""

    def bad(problem: str) -> InvalidArgumentError:
        return kind.error(f"{kind.arg} {problem}; {kind.allowed}", instance_id=instance_id)

    if not isinstance(value, str):
        raise bad(f"must be a str, got {type(value).__name__}")
    shown = (value if len(value) <= 80 else value[:77] + "...").encode("unicode_escape").decode("ascii")
    if not value:
        raise bad("must not be empty")
    if len(value) > kind.max_length:
        raise bad(f"is {len(value)} characters long; the maximum is {kind.max_length}")
    if value != value.strip():
        raise bad(f"must not start or end with whitespace, got '{shown}'")
    for position, char in enumerate(value):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise bad(f"contains a control character (U+{ord(char):04X}) at position {position}")
    if kind.pattern is not None and not kind.pattern.fullmatch(value):
        raise bad(f"'{shown}' is not allowed")
    if value.lower() in kind.reserved:
        raise bad(f"'{shown}' is reserved")
    unsafe = sorted({c for c in value if c in _URL_UNSAFE})
    if unsafe:
        raise bad(f"must not contain {' '.join(unsafe)} (the 1.x client puts it in URL paths unescaped)")
    if value in _DOT_SEGMENTS:
        raise bad("must not be . or .. (URL handling removes such path segments)")
    if kind.no_leading_at and value.startswith("@"):
        raise bad("must not start with @ (entity IDs)")
    return value


def validate_functions_instance_id(instance_id: object) -> str:
    """``instance_id`` if Durable Functions accepts it, else :class:`InvalidInstanceIdError`."""
    iid = validate_instance_id(instance_id, max_length=MAX_FUNCTIONS_INSTANCE_ID_LENGTH)
    return _url_value(iid, _INSTANCE_ID, instance_id=iid)


def validate_functions_name(function_name: object, *, instance_id: str | None = None) -> str:
    """``function_name`` if it is an Azure Functions function name (an orchestrator the host can
    start), else :class:`InvalidArgumentError` saying what is allowed."""
    return _url_value(function_name, _FUNCTION, instance_id=instance_id)


def validate_functions_event_name(event_name: object, *, instance_id: str | None = None) -> str:
    """``event_name`` if the 1.x client can raise it (it reaches the orchestration as written),
    else :class:`InvalidArgumentError` saying what is allowed."""
    return _url_value(event_name, _EVENT, instance_id=instance_id)


def _for_url(value: object, kind: _UrlValue, doing: str) -> str:
    """``value`` checked as :func:`_url_value` does, else a definite :class:`HostError` (nothing
    is sent): the second line for a :class:`FunctionsClient` driven by something other than
    :class:`DurableFunctionsStarter`, which checks every value before any lease."""
    try:
        return _url_value(value, kind)
    except InvalidArgumentError as exc:
        raise HostError("INVALID_ARGUMENT", f"{doing}: not sent: {exc.message}") from None
