"""How a starter reaches the Durable backend: the four calls a start makes.

A starter sends every backend call of a start through a :class:`Transport`: a status
read, the schedule request, a terminate (``ConflictPolicy.TERMINATE_EXISTING``) and an
event (``start_or_signal``). Each takes ``timeout``: the seconds left before the lease's
send-by time, read immediately before the call (``None``: no deadline of ours). A
transport that can bound its calls by it (``bounds_calls``) makes the guarantee that no
call made under the lease outlives it hold on every path.

Pass a durabletask client (``TaskHubGrpcClient``, ``AsyncTaskHubGrpcClient`` or a
Durable Task Scheduler client) and the starter wraps it in :class:`DurableTaskTransport`;
pass any object with these methods instead to reach another host (the Azure Functions
adapter does: :class:`strict_singleton.functions.FunctionsClient`). An async starter
awaits each method; a sync starter calls it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from durabletask.client import OrchestrationState

from strict_singleton import _grpc_calls
from strict_singleton._validation import StartCall
from strict_singleton.policies import ReusePolicy

__all__ = ["DurableTaskTransport", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """The backend calls of a start. Methods are coroutines for an async starter.

    ``bounds_calls``: whether every method honours ``timeout`` (if not, the starter logs a
    warning once: a call that stalls past the lease is then not cut short).
    """

    bounds_calls: bool

    def prepare(self, call: StartCall, *, backend: str) -> StartCall:
        """Before any lease: ``call`` with whatever the schedule needs built in advance (the
        serialized input), so no lease time is spent on it; raises ``InvalidArgumentError``."""
        ...

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:
        """The instance's status (``OrchestrationState``), or ``None`` when there is none."""
        ...

    def schedule(self, call: StartCall, tags: dict[str, str], *, timeout: float | None) -> Any:
        """Create the instance ``call`` names with ``tags``; returns its instance ID. An error whose
        ``code()`` names a gRPC status tells the starter whether anything may have been created."""
        ...

    def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> Any:
        """Ask the backend to terminate the instance."""
        ...

    def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> Any:
        """Raise ``event_name`` with ``data`` to the instance."""
        ...


class DurableTaskTransport:
    """A durabletask client (sync or async) as a :class:`Transport`.

    Where the client allows it (see :mod:`strict_singleton._grpc_calls`), the schedule request
    is built before the lease and every call is sent on the client's own stub with
    ``timeout`` as its gRPC deadline; otherwise the client's public methods are used, which
    take no deadline (``bounds_calls`` is then false).
    """

    def __init__(self, client: Any, *, is_async: bool) -> None:
        self.client = client
        self.is_async = is_async
        self.bounds_calls = _grpc_calls.supports_deadline(client, is_async=is_async)
        self._policies = {policy: policy.request_policy() for policy in ReusePolicy}

    def prepare(self, call: StartCall, *, backend: str) -> StartCall:
        if not self.bounds_calls:
            return call
        return call.with_request(
            _grpc_calls.build_request(self.client, call, self._policies[call.reuse], backend=backend)
        )

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> OrchestrationState | Any | None:
        if timeout is not None and self.bounds_calls:
            read = _grpc_calls.read_async if self.is_async else _grpc_calls.read_sync
            return read(self.client, instance_id, payloads, max(timeout, 0.001))
        return self.client.get_orchestration_state(instance_id, fetch_payloads=payloads)

    def schedule(self, call: StartCall, tags: dict[str, str], *, timeout: float | None) -> Any:
        if call.request is not None:
            request = call.request
            request.tags.clear()
            request.tags.update(tags)
            send = _grpc_calls.send_async if self.is_async else _grpc_calls.send_sync
            return send(self.client, request, max(timeout, 0.001) if timeout is not None else None)
        return self.client.schedule_new_orchestration(
            call.orchestrator,
            input=call.input,
            instance_id=call.instance_id,
            start_at=call.start_at,
            reuse_id_policy=self._policies[call.reuse],
            tags=tags,
            version=call.version,
        )

    def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> Any:
        if timeout is not None and self.bounds_calls:
            request = _grpc_calls.build_terminate_request(self.client, instance_id, reason)
            return self._send(request, timeout)
        return self.client.terminate_orchestration(instance_id, output=reason)

    def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> Any:
        if timeout is not None and self.bounds_calls:
            request = _grpc_calls.build_event_request(self.client, instance_id, event_name, data)
            return self._send(request, timeout)
        return self.client.raise_orchestration_event(instance_id, event_name, data=data)

    def _send(self, request: Any, timeout: float) -> Any:
        send = _grpc_calls.send_async if self.is_async else _grpc_calls.send_sync
        return send(self.client, request, max(timeout, 0.001))
