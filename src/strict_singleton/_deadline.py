"""A schedule call bounded by the lease's remaining validity.

``schedule_new_orchestration`` takes no deadline, so when the lease can expire the
starter builds the very request the client would build (durabletask's own
``build_schedule_new_orchestration_req``) and sends it on the client's stub with
``timeout=`` the remaining validity. A call that outlives the lease then ends with
DEADLINE_EXCEEDED (reported as ``ScheduleError(maybe_scheduled=True)``) instead of
succeeding after another caller could have taken over.

This uses durabletask internals; when they are missing (another version) or the
client externalizes payloads, the public method is used without a deadline, exactly
as before. Trade-off: on this path the client's own "create_orchestration" trace span
is not emitted (strict-singleton's ``strict_singleton.start`` span still is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def deadline_call(
    client: Any, orchestrator: Any, kwargs: dict[str, Any], timeout: float, *, is_async: bool
) -> Callable[[], Any] | None:
    """A zero-argument callable that sends the schedule with ``timeout``, or None if unsupported."""
    try:
        from durabletask.internal.client_helpers import build_schedule_new_orchestration_req
    except ImportError:
        return None
    if getattr(client, "_payload_store", None) is not None:
        return None
    converter = getattr(client, "_data_converter", None)
    if converter is None:
        return None
    if is_async:
        get_stub = getattr(client, "_get_stub", None)
        if not callable(get_stub):
            return None
    elif getattr(client, "_stub", None) is None:
        return None
    request = build_schedule_new_orchestration_req(
        orchestrator,
        input=kwargs["input"],
        instance_id=kwargs["instance_id"],
        start_at=kwargs["start_at"],
        reuse_id_policy=kwargs["reuse_id_policy"],
        tags=kwargs["tags"],
        version=kwargs["version"] or getattr(client, "default_version", None),
        data_converter=converter,
    )
    if is_async:

        async def send_async() -> str:
            response = await client._get_stub().StartInstance(request, timeout=max(timeout, 0.001))
            return str(response.instanceId)

        return send_async

    def send() -> str:
        response = client._stub.StartInstance(request, timeout=max(timeout, 0.001))
        return str(response.instanceId)

    return send
