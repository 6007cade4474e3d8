"""The docs' Azure Functions singleton starter, strict. Driven through the real 1.x
client (``azure.durable_functions.DurableOrchestrationClient``) over HTTP against the host
stand-in (``strict_singleton.testing.functions_host``) over the in-memory Durable backend
through real gRPC; real lock stores; asyncio tasks and spawned processes. What happened is
counted by the host (instances created per ID) and the HTTP answers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

df = pytest.importorskip("azure.durable_functions")
func = pytest.importorskip("azure.functions")

from durabletask import task  # noqa: E402
from durabletask.client import TaskHubGrpcClient  # noqa: E402

from strict_singleton import InvalidArgumentError, LockUnavailableError, StartOutcome  # noqa: E402
from strict_singleton._harness import functions_race as fr  # noqa: E402
from strict_singleton._namespace import lock_key  # noqa: E402
from strict_singleton.functions import (  # noqa: E402
    DurableFunctionsStarter,
    default_lock,
    validate_functions_instance_id,
)
from strict_singleton.functions._client import forget_stale_session  # noqa: E402
from strict_singleton.lock_backends import AsyncFileLease  # noqa: E402
from strict_singleton.options import StarterOptions  # noqa: E402
from strict_singleton.testing import DurableTestBackend  # noqa: E402
from strict_singleton.testing import functions_host as fh  # noqa: E402
from strict_singleton.testing.azurite import Azurite  # noqa: E402
from suite_helpers import poll_until, running_worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALLERS = 16


def new_id() -> str:
    return f"fn-{uuid.uuid4().hex[:12]}"


def waves(host: fh.FunctionsHost, invoke: Callable[[str], Any], rounds: int) -> list[tuple[Counter[int], int]]:
    """``rounds`` waves of CALLERS concurrent invocations (asyncio tasks): (HTTP answers, created) per round."""

    async def main() -> list[tuple[Counter[int], int]]:
        out = []
        for _ in range(rounds):
            iid = new_id()
            answers = await asyncio.gather(*(invoke(iid) for _ in range(CALLERS)), return_exceptions=True)
            out.append((Counter(a if isinstance(a, int) else 500 for a in answers), iid))
        return [(answers, host.counts.created[iid]) for answers, iid in out]

    return fh.run(main())


def violations(report: list[tuple[Counter[int], int]]) -> int:
    return sum(1 for answers, created in report if answers[202] != 1 or created != 1)


def check_strict(report: list[tuple[Counter[int], int]]) -> None:
    for answers, created in report:
        assert answers[202] == 1 and created == 1, (answers, created)
        assert set(answers) <= {202, 409, 503}, answers


# -- concurrent starts of one ID: the docs' code violates, the strict starter does not -------------


def race(make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, profile: str, rounds: int, per_call: bool) -> None:
    host = make_host(profile)
    binding = fh.binding_json(host)
    naive = waves(host, lambda iid: fr.naive_http_start(binding, iid), rounds)
    shared: dict[str, Any] = {}

    async def strict(iid: str) -> int:
        if per_call:  # a new client, a new starter and a new lock object per invocation
            return await fr.strict_http_start(binding, iid, AsyncFileLease(tmp_path))
        if "starter" not in shared:  # one starter reused (and its client)
            shared["starter"] = DurableFunctionsStarter(
                df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path)
            )
        starter = shared["starter"]
        result = await starter.start(fr.ORCHESTRATOR, instance_id=iid)
        return int(starter.http_response(fr.http_request(iid), result).status_code)

    strict_report = waves(host, strict, rounds)
    print(
        f"\n[{profile}] docs' code: {violations(naive)}/{rounds} rounds violated; strict: {violations(strict_report)}"
    )
    assert violations(naive) > rounds // 2  # "violations in most rounds", measured
    check_strict(strict_report)


@pytest.mark.parametrize("per_call", [True, False], ids=["new-client-per-call", "one-starter"])
@pytest.mark.parametrize("profile", ["anystate", "racy"])
def test_docs_code_violates_and_the_strict_starter_does_not(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, profile: str, per_call: bool
) -> None:
    race(make_host, tmp_path, profile, rounds=6, per_call=per_call)


@pytest.mark.slow  # 16 concurrent invocations x 30 rounds (a new client per invocation, as Functions calls)
@pytest.mark.parametrize("profile", ["anystate", "racy"])
def test_docs_code_violates_and_the_strict_starter_does_not_30_rounds(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, profile: str
) -> None:
    race(make_host, tmp_path, profile, rounds=30, per_call=True)


@pytest.mark.parametrize("profile", ["anystate", "racy"])
def test_several_processes(strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path, profile: str) -> None:
    with fh.FunctionsHost(strict_singleton_durable_backend, profile=profile) as host:
        common = {"processes": 4, "tasks": 4, "rounds": 5, "lock_url": f"file:{tmp_path}"}
        naive = fr.run_rounds(host, "naive", **common)  # type: ignore[arg-type]
        strict = fr.run_rounds(host, "strict", **common)  # type: ignore[arg-type]
    assert sum(r.violation for r in naive) >= 3
    assert not [r for r in strict if r.violation], [(r.statuses, r.created) for r in strict]
    assert all(set(r.statuses) <= {202, 409, 503} for r in strict)


@pytest.mark.parametrize("duplicate_status", [500, 409])
def test_the_hosts_already_exists_answer_is_already_running(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, duplicate_status: int
) -> None:
    """Every caller with a lease of its own (the lease bypassed): the host's atomic check rejects
    the duplicates with "... already exists" (HTTP 500, or 409 Conflict on newer hosts), answered
    ALREADY_RUNNING, never an error."""
    host = make_host("reject")
    host.duplicate_status = duplicate_status
    binding = fh.binding_json(host)
    iid = new_id()

    async def main() -> list[Any]:
        starters = [
            DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path / str(i)))
            for i in range(CALLERS)
        ]
        return await asyncio.gather(*(s.start(fr.ORCHESTRATOR, instance_id=iid) for s in starters))

    results = fh.run(main())
    outcomes = Counter(r.outcome for r in results)
    assert outcomes == {StartOutcome.STARTED: 1, StartOutcome.ALREADY_RUNNING: CALLERS - 1}
    assert host.counts.created[iid] == 1 and host.counts.rejected[iid] >= 1


# -- reuse after completion, with a real worker -----------------------------------------------------


def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
    """Runs until told to finish, so a wave overlaps a running instance (then it completes)."""
    yield ctx.wait_for_external_event("finish")
    return "done"


def test_after_the_instance_completes_the_next_wave_starts_exactly_one(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    host = make_host("anystate")
    binding = fh.binding_json(host)
    iid = new_id()

    async def wave() -> Counter[int]:
        calls = [fr.strict_http_start(binding, iid, AsyncFileLease(tmp_path)) for _ in range(CALLERS)]
        return Counter(await asyncio.gather(*calls))

    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    with running_worker(strict_singleton_durable_backend.address, orch):
        for expected in (1, 2):
            assert fh.run(wave())[202] == 1
            assert host.counts.created[iid] == expected
            client.raise_orchestration_event(iid, "finish")
            poll_until(
                lambda: strict_singleton_durable_backend.status_of(iid) == 1,  # ORCHESTRATION_STATUS_COMPLETED
                30,
                f"{iid} to complete",
            )
    client.close()


# -- fail closed, bad input, the HTTP answers ---------------------------------------------------------


def test_lock_store_down_gives_no_202_and_nothing_created(make_host: Callable[..., fh.FunctionsHost]) -> None:
    host = make_host("anystate")
    binding = fh.binding_json(host)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"

    async def invoke(iid: str) -> int:
        from strict_singleton.lock_backends import from_url

        return await fr.strict_http_start(binding, iid, from_url(url, asynchronous=True))

    report = waves(host, invoke, 2)
    assert all(answers == {503: CALLERS} and created == 0 for answers, created in report), report

    async def direct() -> None:
        from strict_singleton.lock_backends import from_url

        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=from_url(url, asynchronous=True))
        with pytest.raises(LockUnavailableError):
            await starter.start(fr.ORCHESTRATOR, instance_id="down-1")

    fh.run(direct())
    assert host.counts.total_created == 0 and host.counts.total_accepted == 0


# The last five: aliases in the host's decoded URL path ("a%20b", "a+b" and "a b" are one
# instance there), an entity ID in disguise, and path segments.
BAD_IDS = ["a/b", "a?b", "a#b", "a\\b", "@entity", "a\x00b", "a\nb", "x" * 101, "", " padded"]
BAD_IDS += ["a%20b", "a+b", "%40x", ".", ".."]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_instance_ids_are_refused_before_any_lease_or_host_request(
    make_host: Callable[..., fh.FunctionsHost],
    tmp_path: Path,
    strict_singleton_durable_backend: DurableTestBackend,
    bad: str,
) -> None:
    host = make_host("anystate")
    binding = fh.binding_json(host)

    async def main() -> None:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        with pytest.raises(InvalidArgumentError):
            await starter.start(fr.ORCHESTRATOR, instance_id=bad)
        with pytest.raises(InvalidArgumentError):
            await starter.start_or_signal(fr.ORCHESTRATOR, instance_id=bad, event_name="e")

    fh.run(main())
    assert list(tmp_path.iterdir()) == []
    assert host.counts.total_accepted == 0 and host.counts.total_created == 0
    assert strict_singleton_durable_backend.calls.snapshot().total == 0


def test_valid_ids_pass_the_functions_rules() -> None:
    for ok in ("a", "x" * 100, "order-42", "ünïcode id", "a@b"):
        assert validate_functions_instance_id(ok) == ok


def test_http_answers(make_host: Callable[..., fh.FunctionsHost], tmp_path: Path) -> None:
    host = make_host("reject")
    binding = fh.binding_json(host)
    iid = new_id()

    async def main() -> None:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        req = fr.http_request(iid)
        first = starter.http_response(req, await starter.start(fr.ORCHESTRATOR, instance_id=iid))
        assert first.status_code == 202 and iid in first.headers["Location"]
        second = starter.http_response(req, await starter.start(fr.ORCHESTRATOR, instance_id=iid))
        assert second.status_code == 409 and f"'{iid}'" in second.get_body().decode()
        busy = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path), wait=0)
        other = new_id()
        holder = AsyncFileLease(tmp_path)
        key = lock_key(busy.namespace, other)  # the binding's task hub
        assert await holder.acquire(key, "someone", 30) is not None
        result = await busy.start(fr.ORCHESTRATOR, instance_id=other)
        assert result.outcome is StartOutcome.BUSY
        answer = busy.http_response(req, result)
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        await holder.release(key, "someone")
        await starter.aclose()
        await busy.aclose()

    fh.run(main())
    assert host.counts.created[iid] == 1


def test_new_event_loops_need_no_session_helpers(make_host: Callable[..., fh.FunctionsHost], tmp_path: Path) -> None:
    """The 1.x client keeps one aiohttp session per process, bound to the first loop: the starter
    drops a session of another loop before each call, so plain ``asyncio.run`` works every time."""
    host = make_host("reject")
    binding = fh.binding_json(host)
    fh.reset_client_session()

    async def one() -> StartOutcome:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            return (await starter.start(fr.ORCHESTRATOR, instance_id=new_id())).outcome

    outcomes = [asyncio.run(one()) for _ in range(3)]  # no fh.run, no reset between loops
    assert outcomes == [StartOutcome.STARTED] * 3
    fh.run(fh.close_client_session())


# -- the default lock ------------------------------------------------------------------------------


def test_default_lock_without_the_setting_says_what_to_pass() -> None:
    with pytest.raises(InvalidArgumentError, match="pass lock="):
        default_lock(environ={})


def test_default_lock_development_storage_without_an_emulator_says_what_to_pass() -> None:
    try:
        socket.create_connection(("127.0.0.1", 10000), timeout=0.2).close()
        pytest.skip("something listens on 127.0.0.1:10000 (a storage emulator)")
    except OSError:
        pass
    with pytest.raises(InvalidArgumentError, match="start Azurite, or pass lock="):
        default_lock(environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


def test_default_lock_is_a_blob_lease_on_azurewebjobsstorage(
    make_host: Callable[..., fh.FunctionsHost], strict_singleton_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", strict_singleton_azurite.connection_string)
    host = make_host("anystate")
    binding = fh.binding_json(host)

    async def main() -> list[tuple[Counter[int], str]]:
        out = []
        for _ in range(2):
            iid = new_id()
            answers = await asyncio.gather(*(fr.strict_http_start(binding, iid, None) for _ in range(8)))
            out.append((Counter(answers), iid))
        forget_stale_session()
        return out

    for answers, iid in fh.run(main()):
        assert answers[202] == 1 and host.counts.created[iid] == 1


# -- the example app, through its decorated handler ---------------------------------------------------


def load_example() -> Any:
    path = ROOT / "examples" / "functions_app" / "function_app.py"
    spec = importlib.util.spec_from_file_location("function_app_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app_example"] = module
    spec.loader.exec_module(module)
    return module


def test_the_example_app_handler_is_strict(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", f"file:{tmp_path}")
    app = load_example()
    handler = next(f for f in app.myApp.get_functions() if f.get_function_name() == "http_start_single")
    user_function = handler.get_user_function()
    host = make_host("racy")
    binding = fh.binding_json(host)
    iid = new_id()

    def request(instance_id: str) -> Any:
        return func.HttpRequest(
            method="POST",
            url=f"http://localhost:7071/api/orchestrators/orch/{instance_id}",
            body=b"",
            route_params={"functionName": "orch", "instanceId": instance_id},
        )

    async def main() -> tuple[Counter[int], int]:
        answers = await asyncio.gather(*(user_function(req=request(iid), client=binding) for _ in range(CALLERS)))
        bad = await user_function(req=request("bad#id"), client=binding)
        return Counter(a.status_code for a in answers), bad.status_code

    answers, bad = fh.run(main())
    assert answers[202] == 1 and set(answers) <= {202, 409, 503}
    assert bad == 400
    assert host.counts.created[iid] == 1 and host.counts.created["bad#id"] == 0


def test_a_failing_status_read_is_not_taken_for_a_missing_instance(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """The host answers 500 with an error body; the 1.x client turns that into a *falsy* status,
    like a missing instance. The starter reads it as a failed read: nothing is started."""
    from strict_singleton import StatusReadError

    host = make_host("anystate")
    binding = fh.binding_json(host)

    def broken(instance_id: str) -> None:
        raise RuntimeError("status store unavailable")

    strict_singleton_durable_backend.read_hook = broken

    async def main() -> None:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        with pytest.raises(StatusReadError):
            await starter.start(fr.ORCHESTRATOR, instance_id="status-500")

    fh.run(main())
    assert host.counts.total_accepted == 0 and host.counts.total_created == 0


def test_a_start_stalled_in_the_host_is_cut_at_the_leases_deadline(
    make_host: Callable[..., fh.FunctionsHost],
    strict_singleton_durable_backend: DurableTestBackend,
    strict_singleton_redis: Any,
) -> None:
    """The 1.x client's start carries no deadline; the starter cuts it at the lease's send-by
    time (an ambiguous outcome: it keeps the lease and watches), so a stalled start never
    outlives the lease."""
    import threading

    import redis.asyncio as aioredis

    from strict_singleton import ScheduleError
    from strict_singleton.lock_backends.redis import AsyncRedisLease

    host = make_host("anystate")
    binding = fh.binding_json(host)
    arrived, go = threading.Event(), threading.Event()

    def held(instance_id: str) -> None:
        arrived.set()
        go.wait(20)

    strict_singleton_durable_backend.start_hook = held

    async def main() -> None:
        lock = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port))
        starter = DurableFunctionsStarter(
            df.DurableOrchestrationClient(binding),
            lock=lock,
            lease_ttl=1.0,
            options=StarterOptions(ambiguity_timeout=0.3, visibility_timeout=0.3),
        )
        with pytest.raises(ScheduleError) as err:
            await starter.start(fr.ORCHESTRATOR, instance_id="stalled")
        assert err.value.maybe_scheduled and arrived.is_set() and not go.is_set()
        await lock.close()

    try:
        fh.run(main())
    finally:
        go.set()


def test_race_cli_client_functions(capsys: pytest.CaptureFixture[str]) -> None:
    from strict_singleton.cli import main

    code = main(["race", "--client", "functions", "--rounds", "2", "--processes", "1", "--starters", "6"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK: strict answered 202 exactly once" in out
    for profile in ("reject", "anystate", "racy"):
        assert f"{profile}" in out and "strict  violations 0/2" in out


# -- the 1.x client's blind spots: host answers it folds into bare exceptions, event data, settings ---


class FakeHost:
    """A minimal host HTTP API (status, start, raise event) whose start and event answers a test
    chooses; it records the instances it created (their creation time, as the host formats it)."""

    def __init__(self, start: Callable[..., Any], event: Callable[..., Any] | None = None) -> None:
        self.start, self.event = start, event
        self.created: dict[str, str] = {}

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def status(req: Any) -> Any:
            iid = req.match_info["iid"]
            if iid not in self.created:
                return web.Response(status=404)
            when = self.created[iid]
            body = {"name": "orch", "instanceId": iid, "runtimeStatus": "Running", "createdTime": when}
            body |= {"lastUpdatedTime": when, "input": None, "output": None, "customStatus": None}
            return web.json_response(body, status=202)

        async def start(req: Any) -> Any:
            return self.start(req.match_info["iid"], self)

        async def event(req: Any) -> Any:
            assert self.event is not None
            return self.event()

        app = web.Application()
        app.router.add_get("/durabletask/instances/{iid}", status)
        app.router.add_post("/durabletask/orchestrators/{name}/{iid}", start)
        app.router.add_post("/durabletask/instances/{iid}/raiseEvent/{ev}", event)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        rpc = f"http://127.0.0.1:{port}/durabletask/"
        urls = ("statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "rewindPostUri", "purgeHistoryDeleteUri")
        management = {k: f"{rpc}instances/INSTANCEID" for k in urls} | {"id": "INSTANCEID"}
        creation = {"createNewInstancePostUri": rpc, "createAndWaitOnNewInstancePostUri": rpc}
        binding = {"taskHubName": "h", "creationUrls": creation, "managementUrls": management, "rpcBaseUrl": rpc}
        return json.dumps(binding)

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def create(self, iid: str) -> None:
        from datetime import datetime, timezone

        self.created[iid] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_answer(kind: str) -> Any:
    from aiohttp import web

    if kind == "text-500":
        return web.Response(status=500, text="Internal Server Error")
    if kind == "json-string-500":
        return web.json_response("Something went wrong while processing your request", status=500)
    return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")


@pytest.mark.parametrize("kind", ["text-500", "json-string-500", "html-502"])
def test_a_start_the_host_executed_but_answered_with_an_error_is_ambiguous(tmp_path: Path, kind: str) -> None:
    """An error answer other than a 400 may come after the host created the instance:
    the starter watches for it (and finds it: STARTED), never calls it "not created"."""

    def start(iid: str, host: FakeHost) -> Any:
        host.create(iid)
        return error_answer(kind)

    async def main() -> Any:
        async with FakeHost(start) as binding:
            starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
            result = await starter.start("orch", instance_id="made", request_id="req-1")
            await starter.aclose()
            return result

    assert fh.run(main()).outcome is StartOutcome.STARTED


def test_an_unrelated_already_exists_500_is_not_already_running(tmp_path: Path) -> None:
    """Only the host's own duplicate message means ALREADY_EXISTS."""
    from aiohttp import web

    from strict_singleton import ScheduleError

    def start(iid: str, host: FakeHost) -> Any:
        body = {"Message": "Something went wrong", "ExceptionMessage": "The specified container already exists."}
        return web.json_response(body, status=500)

    async def main() -> None:
        async with FakeHost(start) as binding:
            starter = DurableFunctionsStarter(
                df.DurableOrchestrationClient(binding),
                lock=AsyncFileLease(tmp_path),
                options=StarterOptions(ambiguity_timeout=0.2, visibility_timeout=0.2),
            )
            with pytest.raises(ScheduleError) as err:
                await starter.start("orch", instance_id="nothing")
            assert err.value.maybe_scheduled

    fh.run(main())


def test_an_event_the_host_answered_500_may_have_been_delivered(tmp_path: Path) -> None:
    """Only 400/404/410 answers to an event are definite."""
    from aiohttp import web

    from strict_singleton import SignalError

    async def main() -> None:
        host = FakeHost(lambda iid, h: None, lambda: web.Response(status=500, text="oops"))
        async with host as binding:
            host.create("busy")
            starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
            with pytest.raises(SignalError) as err:
                await starter.start_or_signal("orch", instance_id="busy", event_name="e", event_data=1)
            assert err.value.maybe_delivered

    fh.run(main())


def test_event_data_the_client_cannot_send_is_refused_before_any_lease(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path
) -> None:
    """The 1.x client sends event data with json.dumps, not the input's serializer."""

    class Custom:
        def to_json(self) -> str:
            return "{}"

    host = make_host("anystate")
    binding = fh.binding_json(host)

    async def main() -> None:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        with pytest.raises(InvalidArgumentError, match=r"json\.dumps"):
            await starter.start_or_signal("orch", instance_id="ev", event_name="e", event_data=Custom())

    fh.run(main())
    assert list(tmp_path.iterdir()) == [] and host.counts.total_created == 0


def test_default_lock_reads_connection_strings_the_sdk_reads() -> None:
    """SAS and lowercase-key strings work; identity-based settings and garbage say what to pass."""
    from strict_singleton.lock_backends.blob import AsyncBlobLease

    sas = "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=1&sig=2"
    lower = "defaultendpointsprotocol=https;accountname=acct;accountkey=YWJj"
    for setting in (sas, lower):
        assert isinstance(default_lock(environ={"AzureWebJobsStorage": setting}), AsyncBlobLease)
    with pytest.raises(InvalidArgumentError, match="identity-based"):
        default_lock(environ={"AzureWebJobsStorage__accountName": "acct"})
    with pytest.raises(InvalidArgumentError, match="not a storage connection string"):
        default_lock(environ={"AzureWebJobsStorage": "garbage"})


def test_the_example_app_answers_by_what_went_wrong(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown function is the caller's 400 (not a retryable 503), a missing lock
    configuration the app's 500, a body that is not UTF-8 a 400."""
    app = load_example()
    handler = next(f for f in app.myApp.get_functions() if f.get_function_name() == "http_start_single")
    user_function = handler.get_user_function()
    host = make_host("reject", known_functions={"orch"})
    binding = fh.binding_json(host)

    def request(name: str, body: bytes = b"") -> Any:
        return func.HttpRequest(
            method="POST",
            url="http://localhost/api",
            body=body,
            route_params={"functionName": name, "instanceId": "i1"},
        )

    async def main() -> list[int]:
        monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", f"file:{tmp_path}")
        unknown = await user_function(req=request("nope"), client=binding)
        not_utf8 = await user_function(req=request("orch", b"\xff\xfe"), client=binding)
        monkeypatch.delenv("STRICT_SINGLETON_LOCK_URL")
        monkeypatch.delenv("AzureWebJobsStorage", raising=False)
        misconfigured = await user_function(req=request("orch"), client=binding)
        return [unknown.status_code, not_utf8.status_code, misconfigured.status_code]

    assert fh.run(main()) == [400, 400, 500]
    assert host.counts.total_created == 0
