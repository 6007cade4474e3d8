"""The schedule request, built before the lease and sent with a deadline.

``schedule_new_orchestration`` takes no deadline, and it serializes the input inside
the call. So, where the client allows it, the starter builds the very request the
client would build (durabletask's own ``build_schedule_new_orchestration_req``)
*before* taking the lease, and at send time, immediately before the RPC, turns the
flow's absolute "send by" time into the gRPC ``timeout``. Serializing a large input
then costs no lease validity, and the window between the last validity check and the
RPC leaving is a clock read and an attribute set (microseconds), not a serialization.

This uses durabletask internals; when they are missing (another version) or the
client externalizes payloads, :func:`build_request` returns ``None`` and the public
method is used: the starter still refuses to call it past the send-by time, but the
call itself then carries no deadline. Trade-off: on the internal path the client's own
"create_orchestration" trace span is not emitted (strict-singleton's
``strict_singleton.start`` span still is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durabletask import client as _dt_client
from durabletask.internal import orchestrator_service_pb2 as pb

from strict_singleton._validation import StartCall
from strict_singleton.errors import InvalidArgumentError

# Imported once here, not inside the functions that run on every start (an import statement
# costs ~0.5 us even when the module is loaded). None on a durabletask without these internals:
# supports_deadline() then says so, and the public methods are used.
_build_schedule_req: Callable[..., pb.CreateInstanceRequest] | None
try:
    from durabletask.internal.client_helpers import build_schedule_new_orchestration_req

    _build_schedule_req = build_schedule_new_orchestration_req
except ImportError:  # pragma: no cover - another durabletask version
    _build_schedule_req = None


def supports_deadline(client: Any, *, is_async: bool) -> bool:
    """Whether :func:`build_request` / :func:`send_sync` / :func:`send_async` work for ``client``."""
    if _build_schedule_req is None:
        return False
    if getattr(client, "_payload_store", None) is not None or getattr(client, "_data_converter", None) is None:
        return False
    if is_async:
        return callable(getattr(client, "_get_stub", None))
    return getattr(client, "_stub", None) is not None


def build_request(
    client: Any, call: StartCall, policy: pb.OrchestrationIdReusePolicy, *, backend: str
) -> pb.CreateInstanceRequest:
    """The request ``client.schedule_new_orchestration`` would send (input serialized here)."""
    assert _build_schedule_req is not None  # only called where supports_deadline() said yes
    try:
        return _build_schedule_req(
            call.orchestrator,
            input=call.input,
            instance_id=call.instance_id,
            start_at=call.start_at,
            reuse_id_policy=policy,
            tags=dict(call.tags),
            version=call.version or getattr(client, "default_version", None),
            data_converter=client._data_converter,
        )
    except Exception as exc:
        raise InvalidArgumentError(
            f"input cannot be serialized by the client's data converter: {type(exc).__name__}: {exc}",
            instance_id=call.instance_id,
            backend=backend,
        ) from exc


def build_event_request(client: Any, instance_id: str, event_name: str, data: Any) -> pb.RaiseEventRequest:
    """The request ``raise_orchestration_event`` would send (built at send time: the event's
    data was already checked to serialize before the lease)."""
    from durabletask.internal.client_helpers import build_raise_event_req

    return build_raise_event_req(instance_id, event_name, data, client._data_converter)


def build_terminate_request(client: Any, instance_id: str, reason: str) -> pb.TerminateRequest:
    """The request ``terminate_orchestration`` would send (recursive, as the client's default)."""
    from durabletask.internal.client_helpers import build_terminate_req

    return build_terminate_req(instance_id, reason, True, client._data_converter)


_METHODS = {
    pb.CreateInstanceRequest: "StartInstance",
    pb.RaiseEventRequest: "RaiseEvent",
    pb.TerminateRequest: "TerminateInstance",
}


def send_sync(client: Any, request: Any, timeout: float | None) -> str | None:
    """Send ``request`` on the client's stub with ``timeout`` as its gRPC deadline: the new
    instance's ID for a start, ``None`` for an event or a terminate."""
    response = getattr(client._stub, _METHODS[type(request)])(request, timeout=timeout)
    return str(response.instanceId) if isinstance(request, pb.CreateInstanceRequest) else None


async def send_async(client: Any, request: Any, timeout: float | None) -> str | None:
    """:func:`send_sync` on the async client's stub."""
    response = await getattr(client._get_stub(), _METHODS[type(request)])(request, timeout=timeout)
    return str(response.instanceId) if isinstance(request, pb.CreateInstanceRequest) else None


def read_sync(client: Any, instance_id: str, payloads: bool, timeout: float) -> Any:
    """``get_orchestration_state`` with ``timeout`` as its gRPC deadline (a read under the lease)."""
    request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads)
    response = client._stub.GetInstance(request, timeout=timeout)
    return _dt_client.new_orchestration_state(request.instanceId, response, client._data_converter)


async def read_async(client: Any, instance_id: str, payloads: bool, timeout: float) -> Any:
    """:func:`read_sync` on the async client's stub."""
    request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads)
    response = await client._get_stub().GetInstance(request, timeout=timeout)
    return _dt_client.new_orchestration_state(request.instanceId, response, client._data_converter)
