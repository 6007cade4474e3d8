"""Faults that make a lease-guarded start go wrong, reproduced on real components.

Each test runs the real starters against the in-memory Durable backend over gRPC on the
``overwrite`` profile (the backend gives no second line of defence) and a real lock
store, injects the fault with backend hooks, and counts what the backend really did.
A test's docstring names the failure it guards against.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from durabletask.serialization import JsonDataConverter

from strict_singleton import AsyncSingletonStarter, InvalidArgumentError, SingletonStarter, StartOutcome
from strict_singleton.errors import LeaseLostError, ScheduleError
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer
from suite_helpers import poll_until, starter_kwargs


@pytest.fixture(scope="module")
def redis_srv() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend() -> Iterator[DurableTestBackend]:
    with DurableTestBackend(profile="overwrite") as b:
        yield b


def rclient(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)


def lock_key(iid: str) -> str:
    return f"strict-singleton:{{{iid}}}:lock"


def started(results: list[Any]) -> int:
    return sum(1 for r in results if getattr(r, "outcome", None) is StartOutcome.STARTED)


def stall_once(event_wait: float) -> Any:
    """A backend hook that stalls the first call it sees for ``event_wait`` seconds (the injected fault)."""
    fired = threading.Event()

    def hook(_iid: str) -> None:
        if not fired.is_set():
            fired.set()
            threading.Event().wait(event_wait)

    return hook


# -- a request delayed in the backend lands after the lease -----------------------------------


@pytest.mark.parametrize("kind", ["redis", "file"])
def test_item1_request_landing_after_the_deadline_is_not_overwritten_by_the_next_caller(
    kind: str, backend: DurableTestBackend, redis_srv: RedisServer, tmp_path: Path
) -> None:
    """Guards against: A gets ScheduleError, B gets STARTED, and A's late request replaces B's instance."""
    iid = f"late-{kind}"
    backend.start_hook = stall_once(3.0)  # A's schedule stalls 3 s inside the backend
    lock: Any = RedisLease(rclient(redis_srv)) if kind == "redis" else FileLease(tmp_path)
    client_a = TaskHubGrpcClient(host_address=backend.address)
    a = SingletonStarter(client_a, lock=lock, lease_ttl=1.0, options=StarterOptions(schedule_margin=0.1))
    outcome: list[Any] = []
    try:
        outcome.append(a.start("orch", instance_id=iid, input="A"))
    except ScheduleError as exc:
        outcome.append(exc)
    b = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=lock, lease_ttl=1.0, wait=5.0)
    second = b.start("orch", instance_id=iid, input="B")
    poll_until(lambda: backend.ledger.snapshot().created[iid] >= 1, 10, "A's request to land")
    snap = backend.ledger.snapshot()
    assert snap.overwritten_active[iid] == 0 and snap.created[iid] == 1
    # exactly one truthful STARTED: A (its request landed while it watched), B must not claim one
    assert started([*outcome, second]) == 1, (outcome, second)
    assert second.outcome is StartOutcome.ALREADY_RUNNING
    a.close()
    b.close()


def test_item1_request_that_never_lands_raises_maybe_scheduled_and_frees_the_id(
    backend: DurableTestBackend, redis_srv: RedisServer
) -> None:
    iid = "never-lands"

    def refuse(_iid: str) -> None:
        raise RuntimeError("backend hiccup")  # gRPC UNKNOWN: ambiguous

    backend.start_hook = refuse
    r = rclient(redis_srv)
    a = SingletonStarter(
        TaskHubGrpcClient(host_address=backend.address),
        lock=RedisLease(r),
        options=StarterOptions(ambiguity_timeout=0.3, visibility_timeout=0.2),
    )
    with pytest.raises(ScheduleError) as info:
        a.start("orch", instance_id=iid)
    assert info.value.maybe_scheduled and info.value.grpc_code == "UNKNOWN"
    assert r.exists(lock_key(iid)) == 0  # released after the window, not left for a TTL
    backend.start_hook = None
    assert a.start("orch", instance_id=iid).outcome is StartOutcome.STARTED
    a.close()


# -- slow serialization between the validity check and the send ------------------------------


class GatedConverter(JsonDataConverter):
    """Serializes like the SDK; while serializing the big input it runs ``during`` first."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Any = None

    def serialize(self, obj: Any) -> str | None:
        if isinstance(obj, dict) and "blob" in obj and self.during is not None:
            self.during()
        return super().serialize(obj)


def test_item2_slow_serialization_cannot_outlive_the_lease(backend: DurableTestBackend, redis_srv: RedisServer) -> None:
    """Guards against serializing the input after the deadline is taken: a 0.4 s serialization on
    a 0.25 s lease lets B start in between, and A then schedules too: two STARTED."""
    iid = "big-input"
    r = rclient(redis_srv)
    converter = GatedConverter()
    client_a = TaskHubGrpcClient(host_address=backend.address, data_converter=converter)
    a = SingletonStarter(client_a, lock=RedisLease(r), lease_ttl=0.25, options=StarterOptions(schedule_margin=0.05))
    b = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=RedisLease(r), lease_ttl=0.25)
    results: list[Any] = []

    def while_serializing() -> None:
        if r.exists(lock_key(iid)) and not results:  # A serializes while holding the lease
            poll_until(lambda: r.exists(lock_key(iid)) == 0, 10, "A's lease to expire mid-serialization")
            results.append(b.start("orch", instance_id=iid, input="B"))

    converter.during = while_serializing
    try:
        results.append(a.start("orch", instance_id=iid, input={"blob": "x" * 1000}))
    except (LeaseLostError, ScheduleError) as exc:
        results.append(exc)
    if len(results) == 1:
        results.append(b.start("orch", instance_id=iid, input="B"))
    snap = backend.ledger.snapshot()
    assert started(results) == 1 and snap.created[iid] == 1 and snap.overwritten_active[iid] == 0, results
    a.close()
    b.close()


# -- file lease wedged after an ambiguous error / a visibility give-up ---------------------------


def test_item3_file_lease_is_free_again_after_an_ambiguous_error(backend: DurableTestBackend, tmp_path: Path) -> None:
    """A file lease must not be 'left to expire', which it never does: BUSY until the process exits."""
    iid = "wedge"
    backend.start_hook = lambda _iid: (_ for _ in ()).throw(RuntimeError("hiccup"))
    lock = FileLease(tmp_path)
    a = SingletonStarter(
        TaskHubGrpcClient(host_address=backend.address),
        lock=lock,
        options=StarterOptions(ambiguity_timeout=0.2, visibility_timeout=0.2),
    )
    with pytest.raises(ScheduleError):
        a.start("orch", instance_id=iid)
    backend.start_hook = None
    other = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=FileLease(tmp_path), wait=0.1)
    assert other.start("orch", instance_id=iid).outcome is StartOutcome.STARTED
    other.close()


def test_item3_file_lease_is_released_when_visibility_never_comes(tmp_path: Path) -> None:
    iid = "invisible"
    with DurableTestBackend(profile="eventual", visibility_delay=3600.0) as backend:
        lock = FileLease(tmp_path)
        a = SingletonStarter(
            TaskHubGrpcClient(host_address=backend.address),
            lock=lock,
            options=StarterOptions(visibility_timeout=0.2, background_finish=False),
        )
        assert a.start("orch", instance_id=iid).outcome is StartOutcome.STARTED
        other = FileLease(tmp_path)
        assert other.probe_free(iid)  # released after visibility_timeout, not held forever


# -- async cancellation leaks the lease ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_item4_cancelled_during_a_slow_read_releases_the_lease(
    kind: str, backend: DurableTestBackend, redis_srv: RedisServer, tmp_path: Path
) -> None:
    """Guards against a CancelledError that skips every release: the ID BUSY (forever on the file lease)."""
    iid = f"cancel-read-{kind}"
    gate = threading.Event()
    backend.read_hook = lambda _iid: gate.wait(10)

    async def scenario() -> None:
        lock: Any = (
            AsyncFileLease(tmp_path)
            if kind == "file"
            else AsyncRedisLease(__import__("redis.asyncio", fromlist=["Redis"]).Redis(port=redis_srv.port))
        )
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        starter = AsyncSingletonStarter(client, lock=lock, lease_ttl=30.0, wait=0.0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(starter.start("orch", instance_id=iid), 0.2)
        gate.set()
        backend.read_hook = None
        await starter.aclose()  # the clean-up task has run
        result = await starter.start("orch", instance_id=iid)
        assert result.outcome is StartOutcome.STARTED
        await starter.aclose()
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        gate.set()


def test_item4_cancelled_while_the_schedule_is_in_flight_watches_for_it(
    backend: DurableTestBackend, redis_srv: RedisServer
) -> None:
    iid = "cancel-schedule"
    reached = threading.Event()
    stall = stall_once(0.8)

    def hook(hook_iid: str) -> None:
        reached.set()
        stall(hook_iid)

    backend.start_hook = hook

    async def scenario() -> None:
        import redis.asyncio as aioredis

        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        starter = AsyncSingletonStarter(client, lock=AsyncRedisLease(aioredis.Redis(port=redis_srv.port)))
        task = asyncio.ensure_future(starter.start("orch", instance_id=iid))
        for _ in range(2000):  # bounded poll: cancel once the schedule has reached the backend
            if reached.is_set():
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the lease is kept while the cancelled request may still land ...
        assert await aioredis.Redis(port=redis_srv.port).exists(lock_key(iid)) == 1
        await starter.aclose()
        # ... and the next caller learns the truth instead of overwriting it
        assert (await starter.start("orch", instance_id=iid)).outcome is StartOutcome.ALREADY_RUNNING
        await starter.aclose()
        await client.close()

    asyncio.run(scenario())
    snap = backend.ledger.snapshot()
    assert snap.created[iid] == 1 and snap.overwritten_active[iid] == 0


# -- lease lost during a slow status read --------------------------------------------------------


class SlowAnswerBackend(DurableTestBackend):
    """Runs ``after_read`` after a status read was answered and before the answer leaves:
    the read saw the state of its moment, the caller gets it late."""

    after_read: Any = None

    def GetInstance(self, request: Any, context: Any) -> Any:
        response = super().GetInstance(request, context)
        if self.after_read is not None:
            self.after_read(request.instanceId)
        return response


def test_item5_key_deleted_during_a_slow_read_is_caught_before_scheduling(redis_srv: RedisServer) -> None:
    """Guards against renewing nothing before scheduling with lease_ttl=30: both A and B STARTED."""
    iid = "lost-key"
    r = rclient(redis_srv)
    with SlowAnswerBackend(profile="overwrite") as backend:
        run_item5(backend, r, iid)


def run_item5(backend: SlowAnswerBackend, r: redis.Redis, iid: str) -> None:
    b = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=RedisLease(r), lease_ttl=30.0)
    results: list[Any] = []
    calls = [0]

    def after_read(read_iid: str) -> None:
        calls[0] += 1
        if calls[0] == 1:  # A's read saw "no instance"; now the key vanishes and B starts meanwhile
            r.delete(lock_key(read_iid))
            results.append(b.start("orch", instance_id=read_iid, input="B"))
            b.close()
            threading.Event().wait(0.3)  # and the answer stays slow past confirm_after (the injected stall)

    backend.after_read = after_read
    a = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=RedisLease(r), lease_ttl=30.0)
    with pytest.raises(LeaseLostError):
        a.start("orch", instance_id=iid, input="A")
    snap = backend.ledger.snapshot()
    assert started(results) == 1 and snap.created[iid] == 1 and snap.overwritten_active[iid] == 0
    a.close()
    b.close()


# -- background finishes backing up ----------------------------------------------------------------


def test_item6_background_finishes_never_wait_unrenewed(redis_srv: RedisServer) -> None:
    """Guards against queueing finishes behind a fixed pool: with 4 workers, queued leases expire
    unrenewed and a second wave that reads the lagging status starts 8 of 12 IDs twice."""
    ids = [f"wave-{i}" for i in range(12)]
    with DurableTestBackend(profile="overwrite", visibility_delay=1.5) as backend:
        r = rclient(redis_srv)
        starter = SingletonStarter(
            TaskHubGrpcClient(host_address=backend.address), lock=RedisLease(r), lease_ttl=1.0, wait=4.0
        )

        def wave() -> list[Any]:
            barrier = threading.Barrier(len(ids))
            out: list[Any] = [None] * len(ids)

            def one(i: int) -> None:
                barrier.wait()
                out[i] = starter.start("orch", instance_id=ids[i])

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ids))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out

        first = wave()
        second = wave()
        starter.close()
        snap = backend.ledger.snapshot()
    assert started(first) == len(ids) and started(second) == 0
    assert sum(snap.overwritten_active.values()) == 0 and all(snap.created[i] == 1 for i in ids)


# -- wrong errors for bad input --------------------------------------------------------------------


def orch(ctx: Any, _: Any) -> None:
    return None


class CallableOrchestrator:
    def __call__(self, ctx: Any, _: Any) -> None:
        return None


@pytest.mark.parametrize(
    "orchestrator", [functools.partial(orch), CallableOrchestrator()], ids=["partial", "callable-object"]
)
def test_item11_unnamable_orchestrator_is_a_clear_error(
    orchestrator: Any, backend: DurableTestBackend, tmp_path: Path
) -> None:
    starter = SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lock=FileLease(tmp_path))
    with pytest.raises(InvalidArgumentError, match="registered under"):
        starter.start(orchestrator, instance_id="named")
    assert backend.ledger.snapshot().total_created == 0 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("ttl", [10**400, 1e16, float("inf"), -1, 0])
def test_item11_absurd_lease_ttl_is_refused_at_construction(ttl: Any, backend: DurableTestBackend) -> None:
    with pytest.raises(InvalidArgumentError, match="lease_ttl"):
        SingletonStarter(TaskHubGrpcClient(host_address=backend.address), lease_ttl=ttl)


def test_item11_every_time_argument_is_bounded(backend: DurableTestBackend) -> None:
    client = TaskHubGrpcClient(host_address=backend.address)
    for name in ("wait", "visibility_timeout", "ambiguity_timeout", "confirm_after", "clock_skew"):
        with pytest.raises(InvalidArgumentError, match=name):
            SingletonStarter(client, **starter_kwargs(**{name: 10**400}))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match=name):
            SingletonStarter(client, **starter_kwargs(**{name: 1e16}))  # type: ignore[arg-type]
