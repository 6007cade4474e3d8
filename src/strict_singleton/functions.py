"""Durable Functions for Python (``azure-functions-durable`` 1.x): the docs' singleton HTTP trigger, strict.

The singleton article's Python example reads the instance's status with the binding's
``DurableOrchestrationClient`` and starts a new instance if there is none (or it finished):
two invocations can both start, and one start is lost or a running instance replaced.
:class:`DurableFunctionsStarter` runs this library's start algorithm (the same flow as
:class:`~strict_singleton.AsyncSingletonStarter`, not a copy) over that client::

    import azure.durable_functions as df
    import azure.functions as func
    from strict_singleton.functions import DurableFunctionsStarter

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="orchestrators/{functionName}/{instanceId}")
    @app.durable_client_input(client_name="client")
    async def http_start_single(req: func.HttpRequest, client: df.DurableOrchestrationClient):
        starter = DurableFunctionsStarter(client)  # the lock: AzureWebJobsStorage's Blob service
        result = await starter.start(req.route_params["functionName"], instance_id=req.route_params["instanceId"],
                                     input=req.get_body() or None)
        return starter.http_response(req, result)

Guarantees and outcomes are those of the async starter (``docs/guarantees.md``), with what
this path cannot do:

* **No tags**: the host's HTTP API has none, so the fencing token is not written on the
  instance (``result.fencing_token`` is still returned); request IDs (``request_id=``) are
  kept in the lock store only.
* **No deadline in the client**: the schedule call is cut by the lease's send-by time with
  ``asyncio`` (a cut call is ambiguous: the host may still create the instance, which the
  starter then watches for, as after a gRPC deadline).
* **One-second ``createdTime``**: handled as on every backend (``clock_skew`` covers it; see
  the Functions row of the evidence table in ``docs/guarantees.md``).
* **The host's own duplicate check** (``overridableExistingInstanceStates``) is the second
  line of defence: with ``NonRunningStates`` a duplicate that gets past the lease is rejected
  with HTTP 500 "... already exists", which this module reads as ALREADY_RUNNING; with
  ``AnyState`` (or the Azure Storage provider's non-atomic check) only the lease protects.

Every value the 1.x client writes into a URL unescaped is checked before any lease or host
request (:class:`~strict_singleton.InvalidArgumentError`, the message says what is allowed): the
client formats instance IDs, orchestrator (function) names and event names straight into the
path, where ``?`` would start the query, ``#`` end the URL, ``/`` add a segment and ``..`` remove
one, and the host URL-decodes the whole path (``%2F`` is ``/`` again, ``+`` a space) before
routing: ``start("orch?", instance_id="nightly")`` would start a random-ID instance, and the event
name ``../terminate`` terminate the instance. The rules:

* instance IDs: 1 to 100 characters, none of ``/ \\ # ? % +``, not ``.`` or ``..``, no leading
  ``@`` (entity IDs), no control characters or surrounding whitespace;
* function names: the Functions host's own rule, ``^[A-Za-z][A-Za-z0-9_-]{0,127}$`` and not
  ``host`` (no function can have another name, so nothing valid is refused);
* event names: as instance IDs (any other character, spaces and non-ASCII letters included,
  reaches the orchestration as written), at most 256 characters, ``@`` allowed.

The version and the terminate reason go into the query ``quote``-d by the client and come back
exactly; the task hub and connection name come from the binding, not from the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import unicodedata
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from durabletask.client import OrchestrationState, OrchestrationStatus

from strict_singleton import _flow
from strict_singleton._validation import _FORBIDDEN_CATEGORIES, validate_instance_id
from strict_singleton.async_starter import AsyncSingletonStarter
from strict_singleton.errors import InvalidArgumentError, InvalidInstanceIdError
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.result import StartOutcome, StartResult

try:
    import aiohttp
    import azure.durable_functions as df
    import azure.functions as func
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "strict_singleton.functions needs the 'functions' extra: pip install 'strict-singleton[functions]'"
    ) from exc

if TYPE_CHECKING:
    from strict_singleton.lock_backends.base import AsyncLeaseBackend

_log = logging.getLogger("strict_singleton")

MAX_FUNCTIONS_INSTANCE_ID_LENGTH = 100
MAX_FUNCTIONS_NAME_LENGTH = 128  # the Functions host's own limit on function names
# The host sets no limit on event names; 256 keeps the request line far inside Kestrel's 8 KiB
# even with every character a percent-encoded 4-byte UTF-8 sequence (12 bytes: 3 KiB).
MAX_FUNCTIONS_EVENT_NAME_LENGTH = 256
_ALREADY_EXISTS = re.compile(r"An Orchestration instance with the status \w+ already exists")
LOCK_CONTAINER = "strict-singleton-locks"
STORAGE_SETTING = "AzureWebJobsStorage"

_STATUS = {
    "Running": OrchestrationStatus.RUNNING,
    "Pending": OrchestrationStatus.PENDING,
    "Suspended": OrchestrationStatus.SUSPENDED,
    "ContinuedAsNew": OrchestrationStatus.CONTINUED_AS_NEW,
    "Completed": OrchestrationStatus.COMPLETED,
    "Failed": OrchestrationStatus.FAILED,
    "Terminated": OrchestrationStatus.TERMINATED,
    # durabletask's OrchestrationStatus has no Canceled; both are finished and every reuse
    # policy treats them alike.
    "Canceled": OrchestrationStatus.TERMINATED,
}


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


class HostError(Exception):
    """A host HTTP API failure, with a gRPC-like ``code()`` the start flow classifies
    (``ALREADY_EXISTS``, ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``DEADLINE_EXCEEDED``,
    ``UNAVAILABLE``, ``INTERNAL``: the last three may have been executed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code_name = code

    def code(self) -> Any:
        return type("Code", (), {"name": self.code_name})()


def _message_of(body: Any) -> str:
    """The host's error text in a response body (the parsed JSON, or a string)."""
    if isinstance(body, dict):
        return str(body.get("ExceptionMessage") or body.get("Message") or body)
    return str(body)


def _transport_error(exc: BaseException, doing: str) -> HostError | None:
    """A failure to get an answer at all: the request may or may not have been executed."""
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return HostError("DEADLINE_EXCEEDED", f"{doing}: no answer before the lease's send-by deadline")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return HostError("UNAVAILABLE", f"{doing}: {type(exc).__name__}: {exc}")
    return None


def _start_answer(status: int, body: Any) -> str:
    """The instance ID from the host's answer to a start, or the :class:`HostError` it means.

    Only a 400 (an unknown function, a bad request) surely created nothing; the host's
    duplicate rejection (500, or 409 on newer hosts, "An Orchestration instance with the
    status X already exists.") is ``ALREADY_EXISTS``; anything else may have been executed (``INTERNAL``, ambiguous).
    """
    if status <= 202 and isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    text = _message_of(body)
    if status == 400:
        raise HostError("INVALID_ARGUMENT", f"start refused by the host (400): {text}")
    if status in (409, 500) and _ALREADY_EXISTS.search(text):  # newer hosts answer a duplicate 409 Conflict
        raise HostError("ALREADY_EXISTS", f"start: {text}")
    raise HostError("INTERNAL", f"start: the host answered {status}: {text}")


# What the 1.x client raises for raise_event / terminate answers that surely did nothing.
_DEFINITE = re.compile(r"^(Instance with ID .* is gone|No instance with ID .* found|Only application/json)")


def _classify_message(exc: BaseException, doing: str) -> HostError:
    """An event or terminate failure: definite for the host's 400/404/410 answers, else ambiguous."""
    transport = _transport_error(exc, doing)
    if transport is not None:
        return transport
    text = str(exc.args[0]) if exc.args else str(exc)
    if _DEFINITE.search(text):
        return HostError("INVALID_ARGUMENT" if text.startswith("Only") else "NOT_FOUND", f"{doing}: {text}")
    return HostError("INTERNAL", f"{doing}: {type(exc).__name__}: {text}")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def to_state(status: Any, instance_id: str) -> OrchestrationState | None:
    """A ``DurableOrchestrationStatus`` as durabletask's ``OrchestrationState`` (``None``: no instance).

    The 1.x client answers a missing instance (HTTP 404, empty body) with a *falsy* status
    whose ``message`` is ``""``; any other falsy status is an error body (HTTP 500 or 400),
    raised as :class:`HostError`.
    """
    if not status:
        if getattr(status, "message", None) == "" and not getattr(status, "ExceptionMessage", None):
            return None
        detail = getattr(status, "ExceptionMessage", None) or getattr(status, "Message", None) or status
        raise HostError("INTERNAL", f"status read failed: {detail}")
    runtime = getattr(status.runtime_status, "value", status.runtime_status)
    if runtime not in _STATUS:
        raise HostError("INTERNAL", f"status read returned an unknown runtimeStatus {runtime!r}")
    created = _parse_time(status.created_time)
    updated = _parse_time(status.last_updated_time) or created
    if created is None:  # pragma: no cover - a truthy status always has a creation time
        raise HostError("INTERNAL", "status read returned no createdTime")
    return OrchestrationState(
        instance_id,
        status.name or "",
        _STATUS[runtime],
        created,
        updated or created,
        None if status.input_ is None else str(status.input_),
        None if status.output is None else str(status.output),
        None if status.custom_status is None else str(status.custom_status),
        None,
    )


def forget_stale_session() -> None:
    """Drop the 1.x client's module-global aiohttp session if it belongs to another event loop.

    The client creates one session on first use, bound to the loop running then, and keeps it
    until it is closed; a second event loop in the same process (``asyncio.run`` twice, test
    runs) would fail with "Event loop is closed". It cannot be closed from here (its loop is
    gone or another one); it is forgotten, and the client creates a new one on this loop.
    """
    from azure.durable_functions.models.utils import http_utils

    session = getattr(http_utils, "_client_session", None)
    if session is None:
        return
    loop = getattr(session, "_loop", None)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if session.closed or loop is not running:
        http_utils._client_session = None
        http_utils._session_lock = asyncio.Lock()


class _Serializer:
    """The 1.x client's own input serializer (``df_dumps``), as a data converter for the input check."""

    def serialize(self, value: Any) -> str | None:
        text: str | None = df.DurableOrchestrationClient._get_json_input(value)
        return text

    def deserialize(self, text: str | None, expected_type: Any = None) -> Any:  # pragma: no cover - unused
        raise NotImplementedError


def _for_url(value: object, kind: _UrlValue, doing: str) -> str:
    """``value`` checked as :func:`_url_value` does, else a definite :class:`HostError` (nothing
    is sent): the second line for a :class:`FunctionsClient` driven by something other than
    :class:`DurableFunctionsStarter`, which checks every value before any lease."""
    try:
        return _url_value(value, kind)
    except InvalidArgumentError as exc:
        raise HostError("INVALID_ARGUMENT", f"{doing}: not sent: {exc.message}") from None


class FunctionsClient:
    """The binding's ``DurableOrchestrationClient`` behind the async durabletask client methods
    the starter calls (status read, start with a send-by deadline, terminate, raise event).

    Every value the 1.x client formats into a URL path is checked before the request (a
    definite ``INVALID_ARGUMENT`` :class:`HostError` otherwise, nothing sent), and a start the
    host answers with another instance ID than the one asked for is refused as definite too.
    """

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        if not callable(getattr(client, "start_new", None)) or not callable(getattr(client, "get_status", None)):
            raise InvalidArgumentError(
                f"client must be the binding's azure.durable_functions.DurableOrchestrationClient, "
                f"got {type(client).__name__}"
            )
        self.client = client
        bindings = getattr(client, "_orchestration_bindings", None)
        # The task hub the binding names: leases and records are kept per task hub (namespace=).
        self.task_hub_name: str = str(getattr(bindings, "task_hub_name", "") or "")
        self._data_converter = _Serializer()

    async def get_orchestration_state(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float | None = None
    ) -> OrchestrationState | None:
        _for_url(instance_id, _INSTANCE_ID, "status read")
        forget_stale_session()
        try:
            call = self.client.get_status(instance_id, show_input=fetch_payloads)
            status = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise (_transport_error(exc, "status read") or HostError("INTERNAL", f"status read: {exc!r}")) from exc
        return to_state(status, instance_id)

    async def schedule_new_orchestration(
        self,
        orchestrator: Any,
        *,
        input: Any = None,
        instance_id: str | None = None,
        version: str | None = None,
        timeout: float | None = None,
        **_ignored: Any,  # start_at, reuse_id_policy, tags: the host's HTTP API has none of them
    ) -> str:
        name = _for_url(orchestrator, _FUNCTION, "start")
        if instance_id is not None:
            _for_url(instance_id, _INSTANCE_ID, "start")
        forget_stale_session()
        call = self._post_start(name, instance_id, input, version)
        try:
            status, body = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:  # no answer, or one that could not be read: it may have executed
            raise (_transport_error(exc, "start") or HostError("INTERNAL", f"start: {exc!r}")) from exc
        started = _start_answer(status, body)
        if instance_id is not None and started != instance_id:
            # The host routed the URL to a start of another instance: ours surely was not created.
            raise HostError(
                "INVALID_ARGUMENT", f"start: the host started instance {started!r}, not {instance_id!r} (URL misread)"
            )
        return started

    async def _post_start(self, name: str, instance_id: str | None, input: Any, version: str | None) -> tuple[int, Any]:
        """``start_new``'s own request (its URL, body and headers), answered with the status
        code: the public method folds every error into a bare ``Exception``, and only the
        status tells a request that surely did nothing (400) from one that may have (500)."""
        client = self.client
        url = client._get_start_new_url(instance_id=instance_id, orchestration_function_name=name, version=version)
        trace_parent, trace_state = df.DurableOrchestrationClient._get_current_activity_context()
        response = await client._post_async_request(
            url, client._get_json_input(input), trace_parent, trace_state, client._function_invocation_id
        )
        return int(response[0]), response[1]

    async def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any = None, timeout: float | None = None
    ) -> None:
        _for_url(instance_id, _INSTANCE_ID, "raise event")
        _for_url(event_name, _EVENT, "raise event")
        forget_stale_session()
        call = self.client.raise_event(instance_id, event_name, data)
        try:
            await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise _classify_message(exc, "raise event") from exc

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, timeout: float | None = None
    ) -> None:
        _for_url(instance_id, _INSTANCE_ID, "terminate")
        forget_stale_session()
        # The reason goes into the query quote()-d by the client: any text comes back exactly.
        call = self.client.terminate(instance_id, str(output or "terminated by strict-singleton"))
        try:
            await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as exc:
            raise _classify_message(exc, "terminate") from exc


class _Starter(AsyncSingletonStarter):
    """The async starter, with the schedule call cut at the lease's send-by time by asyncio."""

    _deadline_in_client = True

    def _bind_schedule(self, op: _flow.Schedule) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        call = op.call
        timeout = self._timeout(op)  # read immediately before the call; NotSent once passed
        kwargs = {"input": call.input, "instance_id": call.instance_id, "version": call.version, "timeout": timeout}
        return self._client.schedule_new_orchestration, (call.orchestrator,), kwargs


def default_lock(*, environ: Any = None) -> AsyncLeaseBackend:
    """An :class:`~strict_singleton.lock_backends.AsyncBlobLease` on the app's own storage account
    (the ``AzureWebJobsStorage`` connection string), container ``strict-singleton-locks``, or a
    clear :class:`InvalidArgumentError` saying what to pass instead."""
    env = os.environ if environ is None else environ
    setting = env.get(STORAGE_SETTING)
    identity = sorted(k for k in env if k.startswith(f"{STORAGE_SETTING}__"))
    if not setting:
        if identity:
            raise InvalidArgumentError(
                f"no lock given and {STORAGE_SETTING} is an identity-based connection ({', '.join(identity)}); pass "
                "lock=AsyncBlobLease(ContainerClient(account_url, 'strict-singleton-locks', credential=...)) "
                "(azure.storage.blob.aio, e.g. with azure.identity.aio.DefaultAzureCredential())"
            )
        raise InvalidArgumentError(
            f"no lock given and the {STORAGE_SETTING} setting is missing; pass lock= (for example "
            "AsyncBlobLease(ContainerClient.from_connection_string(..., 'strict-singleton-locks')) or AsyncRedisLease)"
        )
    from azure.storage.blob.aio import ContainerClient

    from strict_singleton.lock_backends.blob import AsyncBlobLease

    try:
        container = ContainerClient.from_connection_string(setting, LOCK_CONTAINER)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"no lock given and {STORAGE_SETTING} is not a storage connection string ({exc}); pass lock="
        ) from None
    if "usedevelopmentstorage=true" in setting.replace(" ", "").lower():
        where = urlsplit(container.url)
        host, port = where.hostname or "127.0.0.1", where.port or 10000
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            raise InvalidArgumentError(
                f"no lock given and {STORAGE_SETTING} is UseDevelopmentStorage=true, but no storage emulator "
                f"answers on {host}:{port}; start Azurite, or pass lock= (AsyncRedisLease, "
                "AsyncFileLease for one host, or an AsyncBlobLease on a real account)"
            ) from None
    return AsyncBlobLease(container)


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, Any]] = weakref.WeakKeyDictionary()


def shared_lock(url: str | None = None) -> AsyncLeaseBackend:
    """One lease backend per event loop and lock URL, for a starter built per invocation.

    ``url`` as :func:`strict_singleton.lock_backends.from_url` takes it (``redis://...``,
    ``file:/dir``, ...); ``None``: :func:`default_lock` (a Blob lease on ``AzureWebJobsStorage``).
    The Functions Python worker runs async functions on one event loop, so an app gets one
    lock client (one connection pool) instead of one per invocation. Call it inside the
    event loop (in the function).
    """
    loop = asyncio.get_running_loop()
    per_loop = _SHARED.setdefault(loop, {})
    lock = per_loop.get(url)
    if lock is None:
        if url is None:
            lock = default_lock()
        else:
            from strict_singleton.lock_backends import from_url

            lock = from_url(url, asynchronous=True)
        per_loop[url] = lock
    result: AsyncLeaseBackend = lock
    return result


class DurableFunctionsStarter:
    """Start an orchestration from an Azure Functions trigger at most once per start wave.

    Args:
        client: the ``DurableOrchestrationClient`` the binding gives
            (``@app.durable_client_input(client_name="client")``). A new client and a new
            starter per invocation is fine (that is how Functions calls you), and so is one
            starter reused.
        lock: an async lease backend; default ``shared_lock()``: one :func:`default_lock` per
            event loop (a Blob lease on the app's ``AzureWebJobsStorage`` account, no new
            infrastructure). Use ``AsyncRedisLease``
            if you have Redis: fewer round trips than Blob.
        namespace: the task hub leases and start records are kept under; default the
            binding's ``taskHubName``, so Functions apps (or slots) with their own task hubs
            never wait on each other's leases on a shared storage account.
        lease_ttl, wait, and the other keyword options of
        :class:`~strict_singleton.AsyncSingletonStarter`.

    Same outcomes, errors and guarantees as the async starter; see the module docstring for
    what this path cannot do.
    """

    def __init__(self, client: Any, *, lock: AsyncLeaseBackend | None = None, **options: Any) -> None:
        self._client = FunctionsClient(client)
        chosen = lock if lock is not None else shared_lock()
        self._starter = _Starter(self._client, lock=chosen, **options)  # type: ignore[arg-type]  # duck-typed client

    @property
    def lock(self) -> Any:
        return self._starter.lock

    @property
    def namespace(self) -> str:
        return self._starter.namespace

    async def start(
        self,
        function_name: str,
        *,
        instance_id: str,
        input: Any = None,
        version: str | None = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        on_conflict: ConflictPolicy = ConflictPolicy.USE_EXISTING,
        terminate_timeout: float = 30.0,
        request_id: str | None = None,
    ) -> StartResult:
        """Start ``function_name`` as ``instance_id`` unless an active instance exists.

        As :meth:`SingletonStarter.start <strict_singleton.SingletonStarter.start>`. Bad input
        (including instance IDs and function names the 1.x client cannot put into its URLs
        unchanged: see the module docstring) raises ``InvalidArgumentError`` before any lease
        or host request.
        """
        iid = validate_functions_instance_id(instance_id)
        name = validate_functions_name(function_name, instance_id=iid)
        return await self._starter.start(
            name,
            instance_id=iid,
            input=input,
            version=version,
            reuse=reuse,
            on_conflict=on_conflict,
            terminate_timeout=terminate_timeout,
            request_id=request_id,
        )

    async def start_or_signal(
        self,
        function_name: str,
        *,
        instance_id: str,
        event_name: str,
        event_data: Any = None,
        input: Any = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        request_id: str | None = None,
    ) -> StartResult:
        """As :meth:`SingletonStarter.start_or_signal <strict_singleton.SingletonStarter.start_or_signal>`.

        Instance IDs, function names and event names are checked as :meth:`start` checks them
        (see the module docstring), before any lease or host request.
        """
        iid = validate_functions_instance_id(instance_id)
        name = validate_functions_name(function_name, instance_id=iid)
        event = validate_functions_event_name(event_name, instance_id=iid)
        try:  # the 1.x client sends event data with json.dumps (not the input's serializer)
            json.dumps(event_data)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"event_data cannot be sent by the 1.x client (json.dumps): {exc}", instance_id=iid
            ) from None
        return await self._starter.start_or_signal(
            name,
            instance_id=iid,
            event_name=event,
            event_data=event_data,
            input=input,
            reuse=reuse,
            request_id=request_id,
        )

    def http_response(self, req: func.HttpRequest, result: StartResult) -> func.HttpResponse:
        """The trigger's answer: STARTED (and SIGNALED) the client's own 202 check-status
        response; ALREADY_RUNNING 409 with the instance ID (as the docs' example);
        ALREADY_COMPLETED 409 too; BUSY 503 with ``Retry-After``."""
        iid = result.instance_id
        if result.outcome in (StartOutcome.STARTED, StartOutcome.SIGNALED):
            response: func.HttpResponse = self._client.client.create_check_status_response(req, iid)
            return response
        if result.outcome is StartOutcome.ALREADY_RUNNING:
            return func.HttpResponse(f"An instance with ID '{iid}' already exists.", status_code=409)
        if result.outcome is StartOutcome.ALREADY_COMPLETED:
            return func.HttpResponse(
                f"An instance with ID '{iid}' already completed and the reuse policy keeps it.", status_code=409
            )
        retry = max(1, round(self._starter.config.lease_ttl))
        return func.HttpResponse(
            f"Another caller is starting instance '{iid}'; try again.",
            status_code=503,
            headers={"Retry-After": str(retry)},
        )

    async def aclose(self) -> None:
        """Wait for pending background finishes (the lease's release with its start record)."""
        await self._starter.aclose()

    async def __aenter__(self) -> DurableFunctionsStarter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "MAX_FUNCTIONS_EVENT_NAME_LENGTH",
    "MAX_FUNCTIONS_INSTANCE_ID_LENGTH",
    "MAX_FUNCTIONS_NAME_LENGTH",
    "DurableFunctionsStarter",
    "FunctionsClient",
    "HostError",
    "default_lock",
    "forget_stale_session",
    "shared_lock",
    "to_state",
    "validate_functions_event_name",
    "validate_functions_instance_id",
    "validate_functions_name",
]
