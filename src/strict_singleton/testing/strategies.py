"""The start strategies the race harness compares.

``naive_start`` is the documented singleton pattern, verbatim: read the status by
the fixed ID; if there is none, or it is Completed/Failed/Terminated, schedule. It
races; it is here so the harness can show the race.
"""

from __future__ import annotations

from typing import Any

from durabletask.client import OrchestrationStatus

_RESTARTABLE = (OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED)


def naive_start(client: Any, orchestrator: Any, *, instance_id: str, input: Any = None) -> bool:
    """The docs' check-then-schedule. Returns True when it scheduled (it *believes* it started)."""
    state = client.get_orchestration_state(instance_id)
    if state is None or state.runtime_status in _RESTARTABLE:
        client.schedule_new_orchestration(orchestrator, instance_id=instance_id, input=input)
        return True
    return False


async def naive_start_async(client: Any, orchestrator: Any, *, instance_id: str, input: Any = None) -> bool:
    state = await client.get_orchestration_state(instance_id)
    if state is None or state.runtime_status in _RESTARTABLE:
        await client.schedule_new_orchestration(orchestrator, instance_id=instance_id, input=input)
        return True
    return False
