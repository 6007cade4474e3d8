"""Leases and start records per task hub: instance IDs are unique per task hub, so two task hubs
that share a lock store and an ID never wait on each other, and one task hub's starters always
exclude each other. Real components: two in-memory Durable backends over gRPC (two task hubs),
real file locks and a real redis-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
from durabletask.client import TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, InvalidArgumentError, SingletonStarter, StartOutcome
from strict_singleton._namespace import lock_key
from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer, free_port
from suite_helpers import token


@pytest.fixture
def hubs() -> Iterator[tuple[DurableTestBackend, DurableTestBackend]]:
    with DurableTestBackend(profile="eventual") as one, DurableTestBackend(profile="eventual") as two:
        yield one, two


def reads(backend: DurableTestBackend, iid: str) -> int:
    return backend.calls.snapshot().by_method(lambda i: i == iid)["GetInstance"]


def lock_of(kind: str, tmp_path: Path, server: RedisServer) -> Any:
    if kind == "file":
        return FileLease(tmp_path / "locks")
    return RedisLease(redis.Redis(port=server.port))


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own: leases and records of one test never meet another's."""
    with RedisServer() as s:
        yield s


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_another_task_hubs_lease_on_the_same_id_does_not_block(
    hubs: tuple[DurableTestBackend, DurableTestBackend], tmp_path: Path, server: RedisServer, kind: str
) -> None:
    _one, two = hubs
    lock = lock_of(kind, tmp_path, server)
    assert lock.acquire(lock_key("hub-a", "job"), token("holder"), 30.0) is not None  # hub-a is mid-start
    with TaskHubGrpcClient(host_address=two.address) as client:
        other = SingletonStarter(
            client, lock=lock, wait=0, options=StarterOptions(namespace="hub-b", background_finish=False)
        )
        assert other.start("orch", instance_id="job").outcome is StartOutcome.STARTED
        same = SingletonStarter(
            client, lock=lock, wait=0, options=StarterOptions(namespace="hub-a", background_finish=False)
        )
        assert same.start("orch", instance_id="job2").outcome is StartOutcome.STARTED  # another ID: free
        assert same.start("orch", instance_id="job").outcome is StartOutcome.BUSY  # its own hub's lease
    lock.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_another_task_hubs_start_record_is_not_waited_for(
    hubs: tuple[DurableTestBackend, DurableTestBackend], tmp_path: Path, server: RedisServer, kind: str
) -> None:
    """Hub A starts "job" and leaves a start record; hub B's first caller for its own "job"
    decides on one status read. The control, one namespace for both, shows the cost avoided:
    B waits for A's start to show in B's backend, where it never will."""
    one, two = hubs
    lock = lock_of(kind, tmp_path, server)
    options: dict[str, Any] = {"lock": lock}
    quick = StarterOptions(background_finish=False, visibility_timeout=1.0)
    with TaskHubGrpcClient(host_address=one.address) as a, TaskHubGrpcClient(host_address=two.address) as b:
        assert (
            SingletonStarter(a, **options, options=quick.replace(namespace="hub-a"))
            .start("orch", instance_id="job")
            .started
        )
        assert (
            SingletonStarter(b, **options, options=quick.replace(namespace="hub-b"))
            .start("orch", instance_id="job")
            .started
        )
        assert reads(two, "job") == 1
        assert (
            SingletonStarter(a, **options, options=quick.replace(namespace="hub-a"))
            .start("orch", instance_id="job2")
            .started
        )
        shared = SingletonStarter(
            b, **options, options=quick.replace(namespace="hub-a")
        )  # misconfigured: hub-a's namespace
        assert shared.start("orch", instance_id="job2").started
        assert reads(two, "job2") > 1  # it waited out hub-a's record
    lock.close()


def test_the_scheduler_clients_task_hub_is_the_default_namespace(
    hubs: tuple[DurableTestBackend, DurableTestBackend], tmp_path: Path
) -> None:
    one, _ = hubs
    client = DurableTaskSchedulerClient(
        host_address=one.address, taskhub="hub-x", token_credential=None, secure_channel=False
    )
    starter = SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(background_finish=False))
    assert starter.namespace == "hub-x"
    assert starter.start("orch", instance_id="dts").started
    assert SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(namespace="")).namespace == ""
    with TaskHubGrpcClient(host_address=one.address) as plain:
        assert SingletonStarter(plain, lock=FileLease(tmp_path)).namespace == ""
    client.close()

    async def go() -> str:
        aclient = AsyncDurableTaskSchedulerClient(
            host_address=one.address, taskhub="hub-y", token_credential=None, secure_channel=False
        )
        async with AsyncSingletonStarter(aclient, lock=_async_file(tmp_path)) as astarter:
            assert (await astarter.start("orch", instance_id="dts-async")).started
            name = astarter.namespace
        await aclient.close()
        return name

    assert asyncio.run(go()) == "hub-y"


def _async_file(path: Path) -> Any:
    from strict_singleton.lock_backends import AsyncFileLease

    return AsyncFileLease(path)


@pytest.mark.parametrize("bad", [1, "a\x00b", " hub", "x" * 257, "line\nbreak"], ids=repr)
def test_a_bad_namespace_is_refused_when_the_starter_is_built(tmp_path: Path, bad: object) -> None:
    with (
        TaskHubGrpcClient(host_address="127.0.0.1:1") as client,
        pytest.raises(InvalidArgumentError, match="namespace"),
    ):
        SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(namespace=bad))  # type: ignore[arg-type]


def test_lock_errors_name_the_instance_id_not_the_key(hubs: tuple[DurableTestBackend, DurableTestBackend]) -> None:
    one, _ = hubs
    lock = RedisLease(redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=None))
    with TaskHubGrpcClient(host_address=one.address) as client:
        starter = SingletonStarter(client, lock=lock, options=StarterOptions(namespace="hub-a"))
        with pytest.raises(LockUnavailableError) as down:
            starter.start("orch", instance_id="job")
    assert down.value.instance_id == "job" and not down.value.maybe_scheduled
    lock.close()


def test_keys_of_namespaces_never_meet() -> None:
    assert lock_key("", "job") == "job"  # the shared namespace: the keys every release used
    keys = {lock_key(ns, iid) for ns in ("", "a", "a b", "hub") for iid in ("job", "a", "a b", "b job")}
    assert len(keys) == 16


def test_the_quickstart_twice_in_a_row_starts_once_each_time() -> None:
    """Each run is a new task hub: the second must not wait on the first run's start record
    (with the shared default lock directory it did: 15 of 16 callers answered BUSY)."""
    import contextlib
    import io
    import runpy

    root = Path(__file__).resolve().parent.parent
    for _run in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(root / "examples" / "quickstart.py"), run_name="__main__")
        text = out.getvalue()
        assert "'started': 1" in text and "'already_running': 15" in text and "'busy'" not in text, text
        assert "instances created in the backend: 1" in text, text


def test_a_functions_starter_keeps_its_leases_under_the_bindings_task_hub(tmp_path: Path) -> None:
    """Two Functions apps with their own task hubs on one lock store: one app's held lease on
    "nightly" does not hold the other back; the namespace is the binding's taskHubName."""
    import azure.durable_functions as df

    from strict_singleton.functions import DurableFunctionsStarter
    from strict_singleton.lock_backends import AsyncFileLease
    from strict_singleton.testing import functions_host as fh

    with fh.FunctionsHost(task_hub="AppOneHub") as one, fh.FunctionsHost(task_hub="AppTwoHub") as two:
        lock = AsyncFileLease(tmp_path)

        async def main() -> tuple[str, str, Any, Any]:
            first = DurableFunctionsStarter(df.DurableOrchestrationClient(fh.binding_json(one)), lock=lock, wait=0)
            second = DurableFunctionsStarter(df.DurableOrchestrationClient(fh.binding_json(two)), lock=lock, wait=0)
            held = await lock.acquire(lock_key(first.namespace, "nightly"), token("app-one"), 30.0)
            assert held is not None  # app one is mid-start
            other = await second.start("orch", instance_id="nightly")
            same = await first.start("orch", instance_id="nightly")
            return first.namespace, second.namespace, other, same

        ns_one, ns_two, other, same = fh.run(main())
    assert (ns_one, ns_two) == ("AppOneHub", "AppTwoHub")
    assert other.outcome is StartOutcome.STARTED and same.outcome is StartOutcome.BUSY
