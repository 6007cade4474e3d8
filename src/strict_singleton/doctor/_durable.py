"""The Durable client check: the backend answers a status read, and how fast.

The read is of a scratch instance ID that cannot exist (``strict-singleton-doctor-`` and
a random UUID): it creates nothing, and an answer other than "no such instance" means
the backend is not answering what it was asked. Every read carries ``timeout`` as its
gRPC deadline, as the starter's reads under a lease do.
"""

from __future__ import annotations

import inspect
import statistics
from typing import Any

from strict_singleton.doctor._address import validate_client_address
from strict_singleton.doctor._measure import format_ms, monotonic
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis_cycle import scratch_id
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends._url import redact_url

READS = 3
_ROW = "rows 15, 25"


def is_async_client(client: Any) -> bool:
    """Whether ``client`` (a durabletask client or a transport) reads statuses with coroutines."""
    read = getattr(client, "read", None) if hasattr(client, "prepare") else None
    read = read or getattr(client, "get_orchestration_state", None)
    return inspect.iscoroutinefunction(read) or bool(getattr(client, "is_async", False))


def require_client_kind(client: str | Any | None, *, asynchronous: bool) -> None:
    """Raise :class:`InvalidArgumentError` for a client of the other kind, before any call:
    a sync read of an async client returns a coroutine, not a status, and the reverse
    blocks the loop; either would be reported as a broken backend."""
    if isinstance(client, str):
        validate_client_address(client)
    if client is None or isinstance(client, str):
        return
    if is_async_client(client) and not asynchronous:
        raise InvalidArgumentError(
            f"{type(client).__name__} is an async client: use acheck_deployment for an async client"
        )
    if asynchronous and not is_async_client(client):
        raise InvalidArgumentError(f"{type(client).__name__} is a sync client: use check_deployment for a sync client")


def describe_client(client: str | Any) -> str:
    return redact_url(client) if isinstance(client, str) else type(client).__name__


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):  # a grpc.RpcError
        return f"{code()}: {' '.join(str(details()).split())[:300]}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def verdict(target: str, seconds: list[float], states: list[Any], error: BaseException | None) -> Check:
    if error is not None:
        return Check(
            target,
            "status read",
            Status.FAILURE,
            f"a status read failed: {_describe(error)}; starts raise StatusReadError (nothing scheduled)",
            fix="check the address (grpc://host:port, grpcs:// for TLS), credentials and that the backend runs",
            guarantee=_ROW,
            measured="unreachable",
        )
    if any(state is not None and bool(state) for state in states):
        return Check(
            target,
            "status read",
            Status.FAILURE,
            "the backend answered a status for an instance ID that never existed",
            fix="check that the address is a Durable Task backend and its task hub",
            guarantee=_ROW,
            measured="unexpected answer",
        )
    return Check(
        target,
        "status read",
        Status.OK,
        f"'no such instance' for a scratch ID, median of {READS} reads",
        guarantee=_ROW,
        measured=format_ms(statistics.median(seconds)),
    )


def _open(client: str | Any, *, asynchronous: bool) -> tuple[Any, bool]:
    """(client, whether we made it and must close it)."""
    if not isinstance(client, str):
        return client, False
    if asynchronous:
        from durabletask.client import AsyncTaskHubGrpcClient

        return AsyncTaskHubGrpcClient(host_address=client), True
    from durabletask.client import TaskHubGrpcClient

    return TaskHubGrpcClient(host_address=client), True


def check_client(client: str | Any, *, timeout: float) -> list[Check]:
    """The status-read check with a sync client, or an address to build one for."""
    from strict_singleton.transport import DurableTaskTransport

    target = describe_client(client)
    made, owned = _open(client, asynchronous=False)
    transport = made if hasattr(made, "prepare") else DurableTaskTransport(made, is_async=False)
    instance_id = scratch_id()
    seconds: list[float] = []
    states: list[Any] = []
    error: BaseException | None = None
    try:
        for _ in range(READS):
            started = monotonic()
            states.append(transport.read(instance_id, False, timeout=timeout))
            seconds.append(monotonic() - started)
    except Exception as exc:
        error = exc
    finally:
        if owned:
            made.close()
    return [verdict(target, seconds, states, error)]


async def acheck_client(client: str | Any, *, timeout: float) -> list[Check]:
    """The status-read check with an async client, or an address to build one for."""
    from strict_singleton.transport import DurableTaskTransport

    target = describe_client(client)
    made, owned = _open(client, asynchronous=True)
    transport: Any = made if hasattr(made, "prepare") else DurableTaskTransport(made, is_async=True)
    instance_id = scratch_id()
    seconds: list[float] = []
    states: list[Any] = []
    error: BaseException | None = None
    try:
        for _ in range(READS):
            started = monotonic()
            states.append(await transport.read(instance_id, False, timeout=timeout))
            seconds.append(monotonic() - started)
    except Exception as exc:
        error = exc
    finally:
        if owned:
            await made.close()
    return [verdict(target, seconds, states, error)]
