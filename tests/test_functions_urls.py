"""The values the Durable Functions 1.x client writes into its URLs, unescaped: orchestrator
(function) names and event names, besides instance IDs. An attacker who controls one can move
the request to another route of the host's HTTP API ("orch?" starts a random-ID instance while
the caller is told its instance started; "../terminate" as an event name terminates the
instance). :class:`DurableFunctionsStarter` refuses such values before any lease or host
request; the host stand-in routes crafted paths as the real host does.

Real components: the real 1.x client (``azure.durable_functions.DurableOrchestrationClient``)
over HTTP, the host stand-in over the in-memory Durable backend through real gRPC, a real
worker where orchestrations must run, real file leases. ``host.answers`` lists every request
the host answered, so "no request reached the host" is asserted directly.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

df = pytest.importorskip("azure.durable_functions")
func = pytest.importorskip("azure.functions")

import aiohttp  # noqa: E402
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient  # noqa: E402
from yarl import URL  # noqa: E402

from strict_singleton import (  # noqa: E402
    InvalidArgumentError,
    ScheduleError,
    StartOutcome,
    functions,
)
from strict_singleton.functions import DurableFunctionsStarter, FunctionsClient, HostError  # noqa: E402
from strict_singleton.lock_backends import AsyncFileLease  # noqa: E402
from strict_singleton.testing import DurableTestBackend  # noqa: E402
from strict_singleton.testing import functions_host as fh  # noqa: E402
from suite_helpers import running_worker, wait_for_finish  # noqa: E402
from test_functions import FakeHost, load_example  # noqa: E402

ORCH = "wait_for_finish"  # suite_helpers.wait_for_finish: runs until it gets a "finish" event
# Allowed, and not plain: a space, a colon, parentheses, non-ASCII letters. The 1.x client
# sends it percent-encoded by aiohttp; the host decodes it back to exactly this.
ODD_EVENT = "état: prêt (1)"
FUNCTION_RULE = "a letter, then up to 127 letters, digits, _ or -"  # what the message shows
EVENT_RULE = "none of / \\ # ? % +"

# Each moves a 1.x client URL to another route once formatted into it (see the comments).
BAD_FUNCTION_NAMES: list[Any] = [
    "orch?",  # "?" starts the query: starts "orch" under a random ID; "nightly" is never created
    "orch?x=1",
    "orch#x",  # "#" ends the URL: the instance ID is never sent
    "../x",  # dot segments are removed by URL handling: POST /durabletask/x/<id>
    "..",
    ".",  # POST orchestrators/<id>: starts a function named after the instance ID
    "a/b",  # one more segment: function "a", instance ID "b"
    "a\\b",  # System.Uri reads "\" as "/" in http URLs
    "orch/../../instances/nightly/terminate",
    "orch/../../instances/nightly/terminate?",  # POST instances/nightly/terminate: terminates "nightly"
    "%2e%2e",  # a dot segment, percent-encoded
    "orch%2Fx",  # the host URL-decodes the whole path before routing: "/" again
    "a+b",  # ... and "+" as a space
    "a b",
    "",
    " ",
    " orch",
    "orch\n",
    "orch\x00",
    "orchéstrator",  # non-ASCII: no Azure Functions function has such a name
    "x" * 129,  # Azure Functions names are at most 128 characters
    "1orch",  # ... and start with a letter
    "_orch",
    "host",  # reserved by the Functions host (its regex refuses it)
    "a.b",
    "orch&x=1",
    None,
    42,
]

BAD_EVENT_NAMES: list[Any] = [
    "../terminate",  # POST instances/<id>/terminate: terminates the instance, answered SIGNALED
    "..",  # POST instances/<id>/
    ".",  # POST instances/<id>/raiseEvent/
    "a/b",  # one more segment: no route (404, read as "no instance")
    "x?y",  # "?" starts the query: event "x"
    "x#y",  # "#" ends the URL: event "x"
    "%2F",  # the host URL-decodes the path: "/"
    "a%2Fb",
    "%2e%2e",  # a dot segment, percent-encoded
    "%2E%2E/terminate",
    "a+b",  # the host decodes "+" as a space: event "a b" is raised instead
    "a\\b",
    "",
    " ",
    " finish",
    "finish\t",
    "fin\nish",
    "fin\x00ish",
    "x" * 257,
    None,
    3,
]


def new_id() -> str:
    return f"url-{uuid.uuid4().hex[:12]}"


def wait_for_odd_event(ctx: Any, _: Any) -> Any:
    """An orchestrator that returns the data of the event named ODD_EVENT."""
    data = yield ctx.wait_for_external_event(ODD_EVENT)
    return data


def assert_nothing_happened(host: fh.FunctionsHost, backend: DurableTestBackend, lock_dir: Path) -> None:
    """No request reached the host, the backend served no call, no lease was taken."""
    assert host.answers == []
    assert host.counts.total_created == 0 and host.counts.total_accepted == 0
    assert backend.calls.snapshot().total == 0
    assert list(lock_dir.iterdir()) == []


# -- the attacks, end to end ------------------------------------------------------------------------


def test_a_question_mark_in_the_function_name_cannot_report_a_start_that_never_happened(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """``start("orch?", instance_id="nightly")``: the 1.x client formats
    ``orchestrators/orch?/nightly``, so the host saw function "orch" with no instance ID and
    started a random-ID instance, and the starter reported STARTED for "nightly", which never
    existed. It is refused before any lease or host request."""
    host = make_host("reject")
    binding = fh.binding_json(host)

    async def main() -> Any:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            try:
                return await starter.start("orch?", instance_id="nightly")
            except InvalidArgumentError as exc:
                return exc

    outcome = fh.run(main())
    assert isinstance(outcome, InvalidArgumentError), (
        f"start('orch?', instance_id='nightly') answered {outcome.outcome.name}; "
        f"backend has 'nightly': {strict_singleton_durable_backend.status_of('nightly') is not None}; "
        f"host answered {host.answers}"
    )
    assert FUNCTION_RULE in outcome.message and outcome.instance_id == "nightly"
    assert_nothing_happened(host, strict_singleton_durable_backend, tmp_path)


def test_an_event_name_with_a_dot_segment_cannot_terminate_the_instance(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """``start_or_signal(..., event_name="../terminate")`` on a running instance: the client's
    ``instances/<id>/raiseEvent/../terminate`` is normalised to ``instances/<id>/terminate``,
    the host terminated the instance and the starter answered SIGNALED. It is refused before
    any lease or host request; the instance keeps running, and a real event still finishes it."""
    host = make_host("reject")
    binding = fh.binding_json(host)
    victim = new_id()
    grpc_client = TaskHubGrpcClient(host_address=host.grpc_address)

    async def main() -> tuple[Any, list[tuple[str, str, int]], Any]:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            assert (await starter.start(ORCH, instance_id=victim)).outcome is StartOutcome.STARTED
            await asyncio.to_thread(grpc_client.wait_for_orchestration_start, victim, timeout=30)
            host.reset_counts()
            try:
                crafted: Any = await starter.start_or_signal(ORCH, instance_id=victim, event_name="../terminate")
            except InvalidArgumentError as exc:
                crafted = exc
            answers = host.answers
            finished = await starter.start_or_signal(ORCH, instance_id=victim, event_name="finish", event_data="ok")
            return crafted, answers, finished

    try:
        with running_worker(host.grpc_address, wait_for_finish):
            crafted, answers, finished = fh.run(main())
            state = grpc_client.wait_for_orchestration_completion(victim, timeout=30)
    finally:
        grpc_client.close()
    assert isinstance(crafted, InvalidArgumentError), (
        f"event_name='../terminate' answered {crafted.outcome.name}; the host answered {answers}"
    )
    assert EVENT_RULE in crafted.message
    assert answers == []  # not even the status read: refused before the lease
    assert finished.outcome is StartOutcome.SIGNALED
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
    assert state.serialized_output is not None and "ok" in state.serialized_output


# -- every crafted value is refused before any lease or host request -------------------------------


@pytest.mark.parametrize("name", BAD_FUNCTION_NAMES, ids=repr)
def test_crafted_function_names_are_refused_before_any_lease_or_host_request(
    make_host: Callable[..., fh.FunctionsHost],
    tmp_path: Path,
    strict_singleton_durable_backend: DurableTestBackend,
    name: Any,
) -> None:
    """From ``start`` and ``start_or_signal`` alike: InvalidArgumentError naming what a
    function name may be; no request reached the host, nothing was created, no lease taken."""
    host = make_host("anystate")
    binding = fh.binding_json(host)

    async def main() -> list[InvalidArgumentError]:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        errors = []
        async with starter:
            with pytest.raises(InvalidArgumentError) as start:
                await starter.start(name, instance_id="nightly")
            errors.append(start.value)
            with pytest.raises(InvalidArgumentError) as signal:
                await starter.start_or_signal(name, instance_id="nightly", event_name="finish")
            errors.append(signal.value)
        return errors

    for error in fh.run(main()):
        assert "function_name" in error.message and FUNCTION_RULE in error.message, error.message
    assert_nothing_happened(host, strict_singleton_durable_backend, tmp_path)


@pytest.mark.parametrize("event", BAD_EVENT_NAMES, ids=repr)
def test_crafted_event_names_are_refused_before_any_lease_or_host_request(
    make_host: Callable[..., fh.FunctionsHost],
    tmp_path: Path,
    strict_singleton_durable_backend: DurableTestBackend,
    event: Any,
) -> None:
    """InvalidArgumentError naming what an event name may be; no request reached the host,
    nothing was created or signalled, no lease taken."""
    host = make_host("anystate")
    binding = fh.binding_json(host)

    async def main() -> InvalidArgumentError:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            with pytest.raises(InvalidArgumentError) as info:
                await starter.start_or_signal(ORCH, instance_id="nightly", event_name=event)
        return info.value

    error = fh.run(main())
    assert "event_name" in error.message and EVENT_RULE in error.message, error.message
    assert error.instance_id == "nightly"
    assert_nothing_happened(host, strict_singleton_durable_backend, tmp_path)


def test_the_validators_accept_what_the_host_accepts_and_name_the_rule() -> None:
    """Function names: the Functions host's own rule (a letter, then letters, digits, _ or -; at
    most 128; case as given). Event names: anything a path segment carries back exactly."""
    for name in ("a", "orch", "Orch_1-x", "x" * 128, "hosted", "wait_for_finish"):
        assert functions.validate_functions_name(name) == name
    for event in ("finish", "Approval", ODD_EVENT, "order.updated", "@e", "a=b&c", "x" * 256, "…"):
        assert functions.validate_functions_event_name(event) == event
    with pytest.raises(InvalidArgumentError, match=re.escape("^[A-Za-z][A-Za-z0-9_-]{0,127}$")):
        functions.validate_functions_name("orch?")
    with pytest.raises(InvalidArgumentError, match=re.escape("must not contain / ?")) as info:
        functions.validate_functions_event_name("a/b?c", instance_id="i")
    assert info.value.instance_id == "i"


# -- the client adapter's own second line --------------------------------------------------------------


def test_the_client_adapter_refuses_crafted_values_without_sending_them(
    make_host: Callable[..., fh.FunctionsHost], strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """``FunctionsClient`` driven directly (not through ``DurableFunctionsStarter``): every value
    it would format into a URL path is checked first; a crafted one is a definite
    ``INVALID_ARGUMENT`` and no request reaches the host."""
    host = make_host("reject")
    binding = fh.binding_json(host)

    async def main() -> list[str]:
        client = FunctionsClient(df.DurableOrchestrationClient(binding))
        calls = [
            client.raise_orchestration_event("victim", "../terminate", data=1),
            client.schedule_new_orchestration("orch?", instance_id="nightly"),
            client.schedule_new_orchestration("orch", instance_id="a/../b"),
            client.get_orchestration_state("%2e%2e"),
            client.terminate_orchestration("x?y"),
        ]
        codes = []
        for call in calls:
            with pytest.raises(HostError) as info:
                await call
            codes.append(info.value.code_name)
        return codes

    assert fh.run(main()) == ["INVALID_ARGUMENT"] * 5
    assert host.answers == [] and strict_singleton_durable_backend.calls.snapshot().total == 0


def test_a_start_the_host_answers_for_another_instance_is_not_reported_as_ours(tmp_path: Path) -> None:
    """If a host ever answers a start with another instance ID than the one asked for (it read
    the URL differently), that instance is not the caller's: a definite ``ScheduleError``
    (``maybe_scheduled=False``), never STARTED for an instance that does not exist."""
    from aiohttp import web

    def start(iid: str, host: FakeHost) -> Any:
        host.create("someone-else")
        return web.json_response({"id": "someone-else"}, status=202)

    async def main() -> Any:
        async with FakeHost(start) as binding:
            starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
            try:
                return await starter.start("orch", instance_id="mine")
            except ScheduleError as exc:
                return exc
            finally:
                await starter.aclose()

    outcome = fh.run(main())
    assert isinstance(outcome, ScheduleError), f"answered {outcome.outcome.name} for 'mine'"
    assert not outcome.maybe_scheduled and "someone-else" in outcome.message


# -- valid names still work end to end --------------------------------------------------------------


def test_valid_names_start_and_signal_end_to_end(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """A normal start, then a signal whose allowed-but-unusual event name (space, colon,
    parentheses, non-ASCII) reaches the orchestration exactly: it completes with the data."""
    host = make_host("reject")
    binding = fh.binding_json(host)
    iid = new_id()
    grpc_client = TaskHubGrpcClient(host_address=host.grpc_address)

    async def main() -> tuple[StartOutcome, StartOutcome]:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            started = await starter.start("wait_for_odd_event", instance_id=iid)
            await asyncio.to_thread(grpc_client.wait_for_orchestration_start, iid, timeout=30)
            signalled = await starter.start_or_signal(
                "wait_for_odd_event", instance_id=iid, event_name=ODD_EVENT, event_data={"n": 1}
            )
        return started.outcome, signalled.outcome

    try:
        with running_worker(host.grpc_address, wait_for_odd_event):
            outcomes = fh.run(main())
            state = grpc_client.wait_for_orchestration_completion(iid, timeout=30)
    finally:
        grpc_client.close()
    assert outcomes == (StartOutcome.STARTED, StartOutcome.SIGNALED)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
    assert state.serialized_output is not None and '"n": 1' in state.serialized_output.replace('\\"', '"')
    assert host.counts.created[iid] == 1


def test_a_version_with_url_characters_reaches_the_host_exactly(
    make_host: Callable[..., fh.FunctionsHost], tmp_path: Path
) -> None:
    """The version goes into the start's query, ``quote``-d by the 1.x client: "?", "#", "&",
    "=", "+", "%" and "/" in it change nothing, and the host reads back exactly the caller's
    value (parsed as ``HttpUtility.ParseQueryString`` does), so it needs no check of its own."""
    host = make_host("reject")
    binding = fh.binding_json(host)
    iid = new_id()
    version = "1.0+beta/x?y#z&a=b %41 ü"

    async def main() -> StartOutcome:
        starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=AsyncFileLease(tmp_path))
        async with starter:
            return (await starter.start("orch", instance_id=iid, version=version)).outcome

    assert fh.run(main()) is StartOutcome.STARTED
    starts = [path for method, path, status in host.answers if method == "POST" and status == 202]
    assert len(starts) == 1 and starts[0].startswith(f"{fh.RPC_PREFIX}/orchestrators/orch/{iid}?")
    assert parse_qs(starts[0].split("?", 1)[1]) == {"version": [version]}
    assert host.counts.created[iid] == 1


# -- the example app ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["orch?", "../x", "orch/../../instances/nightly/terminate?", "%2e%2e", "a b"])
def test_the_example_app_answers_400_for_a_crafted_function_name(
    make_host: Callable[..., fh.FunctionsHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strict_singleton_durable_backend: DurableTestBackend,
    name: str,
) -> None:
    """The route's ``{functionName}`` is checked before anything: 400 with the message naming
    what a function name may be; no request reached the host, no lease was taken."""
    monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", f"file:{tmp_path}")
    app = load_example()
    handler = next(f for f in app.myApp.get_functions() if f.get_function_name() == "http_start_single")
    user_function = handler.get_user_function()
    host = make_host("reject")
    binding = fh.binding_json(host)
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/orchestrators/x/nightly",
        body=b"",
        route_params={"functionName": name, "instanceId": "nightly"},
    )

    answer = fh.run(user_function(req=request, client=binding))
    assert answer.status_code == 400
    assert FUNCTION_RULE in answer.get_body().decode()
    assert_nothing_happened(host, strict_singleton_durable_backend, tmp_path)


# -- the host stand-in routes crafted paths as the real host does ------------------------------------


@pytest.mark.parametrize(
    ("method", "raw", "expected"),
    [
        ("POST", "/durabletask/orchestrators/orch/i1", ("start", ("orch", "i1"))),
        ("POST", "/durabletask/orchestrators/orch?/nightly", ("start", ("orch", ""))),  # "?": the query
        ("POST", "/durabletask/orchestrators/orch#x/nightly", ("start", ("orch", ""))),  # "#": the end
        ("POST", "/durabletask/orchestrators/orch/a%2Fb", None),  # decoded to a/b: no route
        ("POST", "/durabletask/orchestrators/orch/a+b", ("start", ("orch", "a b"))),
        ("POST", "/durabletask/orchestrators/orch/%C3%A9t%C3%A9", ("start", ("orch", "été"))),
        ("POST", "/durabletask/orchestrators/orch/i1/", ("start", ("orch", "i1"))),  # Trim('/')
        ("POST", "/durabletask/orchestrators/%2e%2e/i1", None),  # /durabletask/i1
        ("POST", "/durabletask/orchestrators/orch/../../instances/v/terminate", ("terminate", ("v",))),
        ("POST", "/durabletask/Instances/v/RAISEEVENT/e", ("raise_event", ("v", "e"))),
        ("POST", "/durabletask/instances/v/raiseEvent/%2E%2E/terminate", ("terminate", ("v",))),
        ("POST", "/durabletask/instances/v/raiseEvent/a%252Fb", None),  # decoded twice: a/b
        ("GET", "/durabletask/instances/v?showInput=false", ("status", ("v",))),
        ("GET", "/runtime/webhooks/durabletask/instances/v", ("status", ("v",))),
        ("GET", "/durabletask/orchestrators/orch/i1", None),  # a start route, not a POST
        ("DELETE", "/durabletask/instances/v", ("not_implemented", ())),  # purge
        ("POST", "/elsewhere/orchestrators/orch/i1", None),
    ],
)
def test_the_stand_in_routes_raw_paths_by_the_real_hosts_rules(
    method: str, raw: str, expected: tuple[str, tuple[str, ...]] | None
) -> None:
    """The stand-in's routing table, raw target by raw target, against what the real host's
    HttpApiHandler does with it (see ``functions_host.route``)."""
    segments = fh.host_route_segments(raw)
    assert (fh.route(method, segments) if segments is not None else None) == expected


async def post_raw(host: fh.FunctionsHost, raw_path: str, body: Any = None) -> int:
    """POST ``raw_path`` exactly as written (no client-side normalisation or encoding)."""
    async with aiohttp.ClientSession() as raw:
        url = URL(host.base_url + raw_path, encoded=True)
        async with raw.post(url, json=body) as resp:
            await resp.read()
            return resp.status


def test_the_stand_in_decodes_and_normalises_paths_as_the_real_host_before_routing(
    make_host: Callable[..., fh.FunctionsHost], strict_singleton_durable_backend: DurableTestBackend
) -> None:
    """The real host (Kestrel, System.Uri, then HttpApiHandler's ``WebUtility.UrlDecode`` of the
    whole path, ``Trim('/')``, case-insensitive routes): "%2F" splits a segment, "+" is a space,
    "%2E%2E" is a dot segment that is removed, a trailing "/" is dropped, "?" starts the query.
    The stand-in routes each raw path the same way, whatever a client does to its URLs."""
    host = make_host("reject")
    victim = new_id()
    prefix = fh.RPC_PREFIX

    async def main() -> dict[str, int]:
        answers = {
            "slash": await post_raw(host, f"{prefix}/orchestrators/orch/a%2Fb"),
            "plus": await post_raw(host, f"{prefix}/orchestrators/orch/{victim}-a+b"),
            "trailing": await post_raw(host, f"{prefix}/orchestrators/orch/{victim}/"),
            "case": await post_raw(host, f"{prefix}/ORCHESTRATORS/orch/{victim}-case"),
            "query": await post_raw(host, f"{prefix}/orchestrators/orch?/{victim}-query"),
        }
        # A percent-encoded dot segment in an event name: the event route becomes terminate.
        answers["dots"] = await post_raw(host, f"{prefix}/instances/{victim}/raiseEvent/%2E%2E/terminate", 1)
        answers["unrouted"] = await post_raw(host, f"{prefix}/instances/{victim}/raiseEvent/a/b", 1)
        return answers

    answers = fh.run(main())
    created = host.counts.created
    assert answers["slash"] == 404 and created["a/b"] == 0 and created["a"] == 0 and created["b"] == 0
    assert answers["plus"] == 202 and created[f"{victim}-a b"] == 1
    assert answers["trailing"] == 202 and created[victim] == 1
    assert answers["case"] == 202 and created[f"{victim}-case"] == 1
    assert answers["query"] == 202 and created[f"{victim}-query"] == 0 and host.counts.total_created == 4
    assert answers["dots"] == 202 and answers["unrouted"] == 404
    calls = strict_singleton_durable_backend.calls.snapshot().by_method(lambda iid: iid == victim)
    assert calls["TerminateInstance"] == 1 and calls["RaiseEvent"] == 0
