"""The Functions host stand-in (strict_singleton.testing.functions_host), driven by the real
Durable Functions 1.x client (azure-functions-durable, ``azure.durable_functions``) over HTTP,
served over the in-memory Durable backend through real gRPC. Real components throughout: the
client's own aiohttp session, an aiohttp server, the gRPC backend, a real worker where
orchestrations must run."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

df = pytest.importorskip("azure.durable_functions")
func = pytest.importorskip("azure.functions")

import aiohttp  # noqa: E402
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient  # noqa: E402

from strict_singleton.testing import DurableTestBackend  # noqa: E402
from strict_singleton.testing import functions_host as fh  # noqa: E402
from suite_helpers import running_worker, wait_for_finish  # noqa: E402

ORCH = "orch"
HOST_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")  # the real host's one-second format
RUNTIME = df.OrchestrationRuntimeStatus


def new_id() -> str:
    return f"singleton-{uuid.uuid4().hex[:12]}"


def http_request(url: str = "http://localhost:7071/api/start") -> Any:
    return func.HttpRequest(method="POST", url=url, body=b"")


async def docs_http_start(binding: str, instance_id: str) -> int:
    """The singleton article's Python HTTP starter (check, then start), with a new client per
    invocation as the Functions host builds it. Returns the HTTP status it answers."""
    client = df.DurableOrchestrationClient(binding)
    existing_instance = await client.get_status(instance_id)
    if existing_instance.runtime_status in [RUNTIME.Completed, RUNTIME.Failed, RUNTIME.Terminated, None]:
        instance_id = await client.start_new(ORCH, instance_id, {"from": "docs"})
        return int(client.create_check_status_response(http_request(), instance_id).status_code)
    return 409


# -- status and start -------------------------------------------------------------


def test_missing_status_is_falsy_then_start_shows_pending_with_202_and_whole_second_times(
    make_host: Callable[..., fh.FunctionsHost],
) -> None:
    host = make_host("reject")
    binding = fh.binding_json(host)
    instance_id = new_id()

    async def main() -> None:
        client = df.DurableOrchestrationClient(binding)
        missing = await client.get_status(instance_id)
        assert not missing  # a falsy DurableOrchestrationStatus, not None
        assert missing is not None and missing.runtime_status is None and missing.created_time is None

        assert await client.start_new(ORCH, instance_id, {"n": 1}) == instance_id
        status = await client.get_status(instance_id)
        assert status
        assert status.runtime_status in (RUNTIME.Pending, RUNTIME.Running)
        assert status.instance_id == instance_id and status.name == ORCH
        assert status.created_time is not None and status.created_time.microsecond == 0
        # The 1.x client serialises the input and aiohttp encodes it again: the host keeps a
        # JSON string holding JSON text, and shows it as such (as the real host does).
        assert json.loads(status.input_) == {"n": 1}

        async with aiohttp.ClientSession() as raw:
            async with raw.get(f"{host.rpc_base_url}instances/{instance_id}") as resp:
                body = await resp.json()
                assert resp.status == 202
                assert resp.headers["Retry-After"] == "5"
            assert HOST_TIME.match(body["createdTime"]) and HOST_TIME.match(body["lastUpdatedTime"])
            assert set(body) == {
                "name",
                "instanceId",
                "runtimeStatus",
                "input",
                "customStatus",
                "output",
                "createdTime",
                "lastUpdatedTime",
            }
            async with raw.get(f"{host.rpc_base_url}instances/{new_id()}") as resp:
                assert resp.status == 404
                assert await resp.read() == b""

            # The client's own check-status response points at the stand-in's webhook URLs, which work.
            check = client.create_check_status_response(http_request(host.base_url + "/api/start"), instance_id)
            assert check.status_code == 202
            links = json.loads(check.get_body())
            assert links["id"] == instance_id
            async with raw.get(links["statusQueryGetUri"]) as resp:
                assert resp.status == 202
                assert (await resp.json())["instanceId"] == instance_id

    fh.run(main())
    counts = host.counts
    assert counts.created[instance_id] == 1 and counts.accepted[instance_id] == 1


def test_start_answers_202_with_the_check_status_payload(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("reject")
    instance_id = new_id()

    async def main() -> None:
        async with aiohttp.ClientSession() as raw:
            async with raw.post(f"{host.rpc_base_url}orchestrators/{ORCH}/{instance_id}", json='{"a": 1}') as resp:
                assert resp.status == 202
                body = await resp.json()
                assert resp.headers["Location"] == body["statusQueryGetUri"]
                assert resp.headers["Retry-After"] == "10"
            assert body["id"] == instance_id
            assert set(body) == {
                "id",
                "statusQueryGetUri",
                "sendEventPostUri",
                "terminatePostUri",
                "purgeHistoryDeleteUri",
                "restartPostUri",
                "suspendPostUri",
                "resumePostUri",
            }
            # Without an ID the host makes one.
            async with raw.post(f"{host.rpc_base_url}orchestrators/{ORCH}") as resp:
                assert resp.status == 202
                generated = (await resp.json())["id"]
        assert generated and generated != instance_id
        assert host.backend.status_of(generated) is not None

    fh.run(main())


def test_unknown_function_is_a_400_the_client_reports_by_its_message(
    make_host: Callable[..., fh.FunctionsHost],
) -> None:
    host = make_host("reject", known_functions={ORCH})
    instance_id = new_id()

    async def main() -> None:
        client = df.DurableOrchestrationClient(fh.binding_json(host))
        with pytest.raises(Exception, match="The function 'nope' doesn't exist") as caught:
            await client.start_new("nope", instance_id)
        assert f"'{ORCH}'" in str(caught.value)  # the known names, as the real host lists them
        assert await client.start_new(ORCH, instance_id) == instance_id

    fh.run(main())
    counts = host.counts
    assert counts.unknown_function[instance_id] == 1 and counts.created[instance_id] == 1


def test_not_implemented_routes_answer_501_in_json(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("reject")

    async def main() -> None:
        client = df.DurableOrchestrationClient(fh.binding_json(host))
        with pytest.raises(Exception):  # noqa: B017 - the 1.x client raises bare Exception
            await client.purge_instance_history(new_id())

    fh.run(main())
    assert [status for method, _, status in host.answers] == [501]


# -- profiles ------------------------------------------------------------------------


def test_reject_refuses_a_start_on_a_running_instance_with_the_hosts_500(
    make_host: Callable[..., fh.FunctionsHost], strict_singleton_durable_backend: DurableTestBackend
) -> None:
    host = make_host("reject")
    instance_id = new_id()
    grpc_client = TaskHubGrpcClient(host_address=host.grpc_address)

    async def main() -> None:
        client = df.DurableOrchestrationClient(fh.binding_json(host))
        assert await client.start_new("wait_for_finish", instance_id) == instance_id
        await asyncio.to_thread(grpc_client.wait_for_orchestration_start, instance_id, timeout=30)
        with pytest.raises(Exception, match="already exists") as caught:
            await client.start_new("wait_for_finish", instance_id)
        # The client raises Exception(<the host's JSON body>) for a 500.
        body = caught.value.args[0]
        assert body["Message"] == "Something went wrong while processing your request"
        assert body["ExceptionMessage"] == "An Orchestration instance with the status Running already exists."
        assert body["ExceptionType"] == "System.InvalidOperationException"

        # NonRunningStates: a finished instance may be replaced.
        await client.raise_event(instance_id, "finish", "done")
        await asyncio.to_thread(grpc_client.wait_for_orchestration_completion, instance_id, timeout=30)
        assert await client.start_new("wait_for_finish", instance_id) == instance_id

    try:
        with running_worker(host.grpc_address, wait_for_finish):
            fh.run(main())
    finally:
        grpc_client.close()
    counts = host.counts
    assert (counts.created[instance_id], counts.accepted[instance_id], counts.rejected[instance_id]) == (2, 2, 1)
    assert strict_singleton_durable_backend.ledger.snapshot().created[instance_id] == 2


def test_anystate_replaces_a_running_instance(
    make_host: Callable[..., fh.FunctionsHost], strict_singleton_durable_backend: DurableTestBackend
) -> None:
    host = make_host("anystate")
    instance_id = new_id()

    async def main() -> None:
        client = df.DurableOrchestrationClient(fh.binding_json(host))
        assert await client.start_new(ORCH, instance_id, "first") == instance_id
        assert (await client.get_status(instance_id)).runtime_status is RUNTIME.Pending
        assert await client.start_new(ORCH, instance_id, "second") == instance_id
        status = await client.get_status(instance_id)
        assert json.loads(status.input_) == "second"  # the first start is gone

    fh.run(main())
    counts = host.counts
    assert counts.created[instance_id] == 2 and counts.accepted[instance_id] == 2 and not counts.rejected
    assert strict_singleton_durable_backend.ledger.snapshot().created[instance_id] == 2
    assert strict_singleton_durable_backend.instance_count() == 1


def test_racy_two_starts_in_the_window_are_both_accepted_and_one_is_lost(
    make_host: Callable[..., fh.FunctionsHost],
) -> None:
    both_read = threading.Barrier(2, timeout=20)  # both starts have read "missing" before either creates
    host = make_host("racy", racy_window=lambda _instance_id: both_read.wait())
    instance_id = new_id()

    async def main() -> None:
        binding = fh.binding_json(host)
        first, second = df.DurableOrchestrationClient(binding), df.DurableOrchestrationClient(binding)
        ids = await asyncio.gather(
            first.start_new(ORCH, instance_id, "a"),
            second.start_new(ORCH, instance_id, "b"),
        )
        assert ids == [instance_id, instance_id]
        # Outside the window, the racy host still refuses a start on an active instance.
        host.racy_window = None
        with pytest.raises(Exception, match="status Pending already exists"):
            await first.start_new(ORCH, instance_id, "c")

    fh.run(main())
    counts = host.counts
    assert counts.accepted[instance_id] == 2
    assert counts.created[instance_id] == 2  # created twice for one ID: one start was lost
    assert counts.rejected[instance_id] == 1


# -- terminate and raise event -----------------------------------------------------------


def test_terminate_and_raise_event_reach_a_running_orchestration(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("reject")
    finished, stopped, missing = new_id(), new_id(), new_id()
    grpc_client = TaskHubGrpcClient(host_address=host.grpc_address)

    def wait_started(instance_id: str) -> Any:
        return asyncio.to_thread(grpc_client.wait_for_orchestration_start, instance_id, timeout=30)

    def wait_done(instance_id: str) -> Any:
        return asyncio.to_thread(grpc_client.wait_for_orchestration_completion, instance_id, timeout=30)

    async def main() -> None:
        client = df.DurableOrchestrationClient(fh.binding_json(host))
        for instance_id in (finished, stopped):
            await client.start_new("wait_for_finish", instance_id)
            await wait_started(instance_id)
            assert (await client.get_status(instance_id)).runtime_status is RUNTIME.Running

        await client.raise_event(finished, "finish", {"ok": 1})
        state = await wait_done(finished)
        assert state.runtime_status is OrchestrationStatus.COMPLETED
        status = await client.get_status(finished)
        assert status.runtime_status is RUNTIME.Completed
        # The orchestrator returned the event's data: the JSON text the 1.x client sent.
        assert json.loads(status.output) == {"ok": 1}

        await client.terminate(stopped, "no longer needed")
        state = await wait_done(stopped)
        assert state.runtime_status is OrchestrationStatus.TERMINATED
        status = await client.get_status(stopped)
        assert status.runtime_status is RUNTIME.Terminated and status.output == "no longer needed"

        async with aiohttp.ClientSession() as raw, raw.get(f"{host.rpc_base_url}instances/{stopped}") as resp:
            assert resp.status == 200  # terminal statuses answer 200

        # Terminal: terminate answers 410, which the client accepts silently; raise_event's 410 is an error.
        await client.terminate(stopped, "again")
        # The 1.x client raises bare Exception for these; what counts is what the host answered.
        host.reset_counts()
        with pytest.raises(Exception):  # noqa: B017
            await client.raise_event(finished, "finish", 2)
        with pytest.raises(Exception):  # noqa: B017
            await client.terminate(missing, "x")
        with pytest.raises(Exception):  # noqa: B017
            await client.raise_event(missing, "finish", 1)
        answered = [
            (path.split("/instances/")[1].split("/")[0].split("?")[0], status) for _, path, status in host.answers
        ]
        assert answered == [(finished, 410), (missing, 404), (missing, 404)], host.answers

    try:
        with running_worker(host.grpc_address, wait_for_finish):
            fh.run(main())
    finally:
        grpc_client.close()


# -- the docs' racy code ----------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["anystate", "racy", "reject"])
def test_docs_check_then_start_code_under_16_concurrent_invocations(
    make_host: Callable[..., fh.FunctionsHost], profile: fh.Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    """16 concurrent HTTP-trigger invocations x 5 rounds of the docs' check-then-start code.
    On anystate and racy, a round is a violation if more than one invocation answered 202 or the
    instance was created more than once; on reject (atomic) the check cannot be raced, and the
    losers see the host's 500 surface as an exception (the docs' code does not catch it)."""
    host = make_host(profile)
    binding = fh.binding_json(host)
    rounds, callers = 5, 16
    report: list[tuple[int, int, int]] = []  # (202s, creates, exceptions) per round

    async def round_(instance_id: str) -> tuple[int, int]:
        results = await asyncio.gather(
            *(docs_http_start(binding, instance_id) for _ in range(callers)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert all("already exists" in str(e) for e in errors), errors
        return sum(1 for r in results if r == 202), len(errors)

    for _ in range(rounds):
        instance_id = new_id()
        accepted, errors = fh.run(round_(instance_id))
        report.append((accepted, host.counts.created[instance_id], errors))

    violations = sum(1 for accepted, created, _ in report if accepted > 1 or created > 1)
    with capsys.disabled():
        print(
            f"\n[{profile}] docs' code, {callers} callers x {rounds} rounds: violations {violations}/{rounds}; "
            f"(202s, creates, exceptions) per round: {report}"
        )
    if profile == "reject":
        assert violations == 0
        assert all(accepted == 1 and created == 1 for accepted, created, _ in report)
    else:
        assert violations >= 1


# -- the 1.x client's global session across event loops -----------------------------------------


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_second_event_loop_fails_without_the_session_helpers(make_host: Callable[..., fh.FunctionsHost]) -> None:
    """The hazard the helpers exist for: the 1.x client keeps one aiohttp session for the process,
    bound to the first loop; after ``asyncio.run`` returns, the next loop reuses it and fails."""
    host = make_host("reject")
    binding = fh.binding_json(host)

    async def status() -> bool:
        return bool(await df.DurableOrchestrationClient(binding).get_status(new_id()))

    fh.reset_client_session()
    assert asyncio.run(status()) is False
    with pytest.raises(RuntimeError):  # asyncio's "Event loop is closed"; its wording is not ours to pin
        asyncio.run(status())
    fh.reset_client_session()  # the stale session cannot be closed any more: drop it
    gc.collect()
    assert fh.run(status()) is False


def test_session_helpers_make_every_new_event_loop_safe(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("reject")
    binding = fh.binding_json(host)

    async def concurrent_calls() -> int:
        client = df.DurableOrchestrationClient(binding)
        results = await asyncio.gather(*(client.get_status(new_id()) for _ in range(8)))
        return sum(1 for r in results if not r)

    # run(): reset before, close at the end of the loop.
    assert [fh.run(concurrent_calls()) for _ in range(3)] == [8, 8, 8]

    # Plain asyncio.run, closing at the end of each loop.
    async def closing() -> int:
        try:
            return await concurrent_calls()
        finally:
            await fh.close_client_session()

    assert [asyncio.run(closing()) for _ in range(2)] == [8, 8]

    # reset_client_session() between loops (the previous session was closed by closing()).
    fh.reset_client_session()
    assert asyncio.run(closing()) == 8


# -- life cycle and helpers ---------------------------------------------------------------------


def test_host_starts_its_own_backend_and_stops_cleanly() -> None:
    host = fh.FunctionsHost(profile="anystate")
    with host:
        port, backend = host.port, host.backend
        instance_id = new_id()

        async def main() -> str:
            return str(await df.DurableOrchestrationClient(fh.binding_json(host)).start_new(ORCH, instance_id))

        assert fh.run(main()) == instance_id
        assert backend.status_of(instance_id) is not None
    host.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = host.port
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", backend.port)) != 0  # its own backend was stopped


def test_profiles_and_backends_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        fh.FunctionsHost(profile="lenient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reuse policies"):
        fh.FunctionsHost(DurableTestBackend(profile="overwrite"))


def test_binding_json_has_the_fields_the_1x_client_reads(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("reject")
    binding = json.loads(fh.binding_json(host, task_hub="OtherHub"))
    assert binding["taskHubName"] == "OtherHub"
    assert binding["rpcBaseUrl"] == f"http://127.0.0.1:{host.port}/durabletask/"
    assert binding["baseUrl"] == f"http://127.0.0.1:{host.port}/runtime/webhooks/durabletask"
    assert binding["managementUrls"]["id"] == "INSTANCEID"
    assert "taskHub=OtherHub&" in binding["managementUrls"]["statusQueryGetUri"]
    assert set(binding["creationUrls"]) == {"createNewInstancePostUri", "createAndWaitOnNewInstancePostUri"}
    client = df.DurableOrchestrationClient(json.dumps(binding))
    assert client._orchestration_bindings.rpc_base_url == host.rpc_base_url


def test_grpc_binding_json_points_a_grpc_client_at_the_backend(
    strict_singleton_durable_backend: DurableTestBackend,
) -> None:
    binding = json.loads(fh.grpc_binding_json(strict_singleton_durable_backend.address, task_hub="Hub"))
    assert binding["taskHubName"] == "Hub" and binding["rpcBaseUrl"] == strict_singleton_durable_backend.address
    # DurableFunctionsClient passes rpcBaseUrl to TaskHubGrpcClient as host_address; do the same.
    instance_id = new_id()
    with TaskHubGrpcClient(host_address=binding["rpcBaseUrl"]) as client:
        client.schedule_new_orchestration(ORCH, instance_id=instance_id)
    assert strict_singleton_durable_backend.ledger.snapshot().created[instance_id] == 1
