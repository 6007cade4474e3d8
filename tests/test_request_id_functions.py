"""Request-ID retries on Azure Functions, whose ``createdTime`` has one-second resolution: a retry
never runs its request twice. Real components: the host stand-in (the host's HTTP API over the
in-memory Durable backend) with the real 1.x ``DurableOrchestrationClient`` and a real worker.

The scenario: instance X completes; ``start(request_id=R)`` replaces it with Y; Y completes; R is
retried. When X and Y were created in the same second their times are equal, and the retry
cannot tell Y (its own) from X: it must refuse with ``ScheduleError(maybe_scheduled=True)``, never
start a third instance. In a later second it recognises Y (STARTED, ``deduplicated``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

df = pytest.importorskip("azure.durable_functions")

from durabletask import task  # noqa: E402
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient  # noqa: E402

from strict_singleton import ScheduleError, StartOutcome  # noqa: E402
from strict_singleton.functions import DurableFunctionsStarter  # noqa: E402
from strict_singleton.lock_backends import AsyncFileLease  # noqa: E402
from strict_singleton.options import StarterOptions  # noqa: E402
from strict_singleton.testing import DurableTestBackend  # noqa: E402
from strict_singleton.testing import functions_host as fh  # noqa: E402
from suite_helpers import poll_until, running_worker  # noqa: E402


def quick(ctx: task.OrchestrationContext, _: Any) -> str:
    """Completes at once, so an instance can be replaced within the second it was created."""
    return "done"


def completed(grpc: TaskHubGrpcClient, iid: str, created: Any = None) -> Any:
    def done() -> bool:
        state = grpc.get_orchestration_state(iid)
        return (
            state is not None
            and state.runtime_status == OrchestrationStatus.COMPLETED
            and (created is None or state.created_at != created)
        )

    poll_until(done, 30, f"{iid} to complete")
    return grpc.get_orchestration_state(iid)


def test_a_retry_never_runs_its_request_twice_on_one_second_times(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    backend = strict_singleton_durable_backend
    outcomes: list[str] = []
    with fh.FunctionsHost(backend) as host, running_worker(host.grpc_address, quick):
        grpc = TaskHubGrpcClient(host_address=host.grpc_address)
        binding = fh.binding_json(host)

        async def start(iid: str, request_id: str | None) -> Any:
            # A replacement created and finished within the second of the instance it replaced makes
            # the next caller wait out the start record (visibility_timeout): a short one here.
            client = df.DurableOrchestrationClient(binding)
            starter = DurableFunctionsStarter(
                client, lock=AsyncFileLease(tmp_path), options=StarterOptions(visibility_timeout=2)
            )
            try:
                return await starter.start("quick", instance_id=iid, request_id=request_id)
            finally:
                await starter.aclose()

        for round_ in range(6):
            iid = f"one-second-{round_}"
            assert fh.run(start(iid, None)).started  # X
            x = completed(grpc, iid)
            assert fh.run(start(iid, "R")).started  # Y replaces X
            y = completed(grpc, iid, created=x.created_at)
            same_second = host_seconds(x) == host_seconds(y)
            try:
                again = fh.run(start(iid, "R"))
            except ScheduleError as refused:
                assert refused.maybe_scheduled and same_second, (round_, refused)
                outcomes.append("refused")
            else:
                assert again.outcome is StartOutcome.STARTED and again.deduplicated and not same_second, round_
                outcomes.append("deduplicated")
            assert backend.ledger.snapshot().created[iid] == 2, f"round {round_}: the request ran twice"
            if "refused" in outcomes:
                break
        grpc.close()
    assert "refused" in outcomes, f"X and Y never shared a second in {len(outcomes)} rounds: {outcomes}"


def host_seconds(state: Any) -> int:
    """The creation time as the Functions host reports it: whole seconds."""
    return int(state.created_at.timestamp())
