"""Metrics through the OpenTelemetry API (docs/observability.md, "Metrics"), read back with the
SDK's in-memory reader, on real components: the in-memory Durable backend over gRPC, real file
leases, a Redis lease on a closed port; every one runs on both starters. The last test drives the
flow in memory for what the drivers read from it (how an ambiguity watch ended).

The global meter provider can be set only once per process; each test sets its own through
:func:`use_meter_provider`, which resets the API's globals for that test only (monkeypatch puts
them back), so the library is exercised through the global API as an application wires it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import opentelemetry.metrics._internal as otel_metrics_internal
import pytest
import redis
import redis.asyncio as aioredis
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util._once import Once
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from strict_singleton import (
    AsyncSingletonStarter,
    LockUnavailableError,
    ScheduleError,
    SingletonStarter,
    StartOutcome,
    StartResult,
    _flow,
    _telemetry,
)
from strict_singleton._validation import StartCall
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, free_port
from strict_singleton.testing.swarm import fire_tasks, fire_threads
from strict_singleton.testing.world import DEFAULT, RpcError, World, drive
from strict_singleton.transport import DurableTaskTransport
from suite_helpers import flow_config

APIS = ["sync", "async"]
CALLERS = 16


def use_meter_provider(monkeypatch: pytest.MonkeyPatch, provider: Any | None) -> None:
    """Make ``provider`` the global meter provider for this test (``None``: none set, the API's proxy)."""
    monkeypatch.setattr(otel_metrics_internal, "_METER_PROVIDER", None)
    monkeypatch.setattr(otel_metrics_internal, "_METER_PROVIDER_SET_ONCE", Once())
    if provider is not None:
        metrics.set_meter_provider(provider)


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An in-memory reader on a fresh MeterProvider, set globally for this test."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    use_meter_provider(monkeypatch, provider)
    yield reader
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str, backend: str) -> list[Any]:
    """The data points of instrument ``name`` for lock backend ``backend`` (other tests' starters may share the
    process)."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found += [
                        p
                        for p in metric.data.data_points
                        if (p.attributes or {}).get(_telemetry.LOCK_BACKEND) == backend
                    ]
    return found


def by(reader: InMemoryMetricReader, name: str, backend: str, *keys: str) -> dict[tuple[Any, ...], Any]:
    """Counter values (or histogram points) keyed by the attributes ``keys``."""
    out: dict[tuple[Any, ...], Any] = {}
    for p in points(reader, name, backend):
        key = tuple(p.attributes.get(k) for k in keys)
        out[key] = p.value if hasattr(p, "value") else p
    return out


def run_api(api: str, backend: DurableTestBackend, sync_lock: Callable[[], Any], async_lock: Callable[[], Any],
            calls: Callable[[Any], Any], *, transport: Callable[[Any, bool], Any] | None = None,
            **kwargs: Any) -> Any:  # fmt: skip
    """``(calls(starter), starter)`` on a sync starter, or awaited on an async one; the starter closed after
    (and still referenced: the pending-finishes gauge counts the starters alive)."""
    if api == "sync":
        client = TaskHubGrpcClient(host_address=backend.address)
        try:
            target = client if transport is None else transport(client, False)
            with SingletonStarter(target, lock=sync_lock(), **kwargs) as starter:
                value = calls(starter)
            return value, starter
        finally:
            client.close()

    async def main() -> Any:
        client = AsyncTaskHubGrpcClient(host_address=backend.address)
        try:
            target = client if transport is None else transport(client, True)
            async with AsyncSingletonStarter(target, lock=async_lock(), **kwargs) as starter:
                value = calls(starter)
                if isinstance(value, Awaitable):
                    value = await value
            return value, starter
        finally:
            await client.close()

    return asyncio.run(main())


def file_locks(directory: Path) -> tuple[Callable[[], Any], Callable[[], Any], str]:
    return (lambda: FileLease(directory)), (lambda: AsyncFileLease(directory)), FileLease(directory).name


@pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)
@pytest.mark.parametrize("api", APIS)
def test_a_contended_wave_counts_one_start_per_caller(
    api: str, reader: InMemoryMetricReader, strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    sync_lock, async_lock, name = file_locks(tmp_path)

    def wave(starter: Any) -> Any:
        if api == "sync":
            return fire_threads(CALLERS, lambda _i: starter.start("orch", instance_id="wave"))
        return fire_tasks(CALLERS, lambda _i: starter.start("orch", instance_id="wave"))

    recs, _starter = run_api(api, strict_singleton_durable_backend, sync_lock, async_lock, wave, lease_ttl=15)
    results: list[StartResult] = [r.value for r in recs]
    assert all(isinstance(r, StartResult) for r in results), results
    assert strict_singleton_durable_backend.ledger.snapshot().created["wave"] == 1

    starts = by(reader, _telemetry.STARTS, name, _telemetry.OUTCOME, _telemetry.ERROR_TYPE)
    assert sum(starts.values()) == CALLERS
    assert starts[("started", None)] == 1
    assert {outcome for outcome, _error in starts} <= {"started", "already_running", "busy"}
    for outcome, _error in starts:
        assert starts[(outcome, None)] == sum(1 for r in results if r.outcome.value == outcome)

    # Every caller went for the lease: one lease wait each, the very waits the results report.
    waits = points(reader, _telemetry.LEASE_WAIT, name)
    assert sum(p.count for p in waits) == CALLERS
    assert sum(p.sum for p in waits) == pytest.approx(sum(r.waited for r in results))
    assert sum(p.bucket_counts[0] for p in waits) == sum(1 for r in results if r.waited == 0)  # bucket (-inf, 0]
    assert sum(p.count for p in points(reader, _telemetry.START_DURATION, name)) == CALLERS

    assert points(reader, _telemetry.LOCK_ERRORS, name) == []
    assert points(reader, _telemetry.WATCHES, name) == []
    # Closed: every background finish (release with its start record) has run.
    assert [p.value for p in points(reader, _telemetry.FINISHES_PENDING, name)] == [0]


def quick_redis(port: int) -> redis.Redis:
    # redis-py's default retry backs off for seconds on a refused connection: a short one here.
    return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 1))


def quick_async_redis(port: int) -> aioredis.Redis:
    return aioredis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=AsyncRetry(NoBackoff(), 1))


@pytest.mark.parametrize("api", APIS)
def test_a_lock_store_that_cannot_be_reached_is_counted(
    api: str, reader: InMemoryMetricReader, strict_singleton_durable_backend: DurableTestBackend
) -> None:
    port = free_port()  # nothing listens there
    name = RedisLease(quick_redis(port)).name

    def start(starter: Any) -> Any:
        async def a() -> Any:
            with pytest.raises(LockUnavailableError):
                await starter.start("orch", instance_id="unreachable")

        if api == "async":
            return a()
        with pytest.raises(LockUnavailableError):
            starter.start("orch", instance_id="unreachable")
        return None

    run_api(
        api,
        strict_singleton_durable_backend,
        lambda: RedisLease(quick_redis(port)),
        lambda: AsyncRedisLease(quick_async_redis(port)),
        start,
        lease_ttl=5,
    )
    assert by(reader, _telemetry.STARTS, name, _telemetry.OUTCOME, _telemetry.ERROR_TYPE) == {
        ("error", "LockUnavailableError"): 1
    }
    # The acquire raised (the caller's error); the token-checked release after it failed too, and
    # was only logged: counted all the same.
    assert by(reader, _telemetry.LOCK_ERRORS, name, _telemetry.OPERATION, _telemetry.ERROR_TYPE) == {
        ("acquire", "LockUnavailableError"): 1,
        ("release", "LockUnavailableError"): 1,
    }
    waits = points(reader, _telemetry.LEASE_WAIT, name)
    assert [p.count for p in waits] == [1] and waits[0].attributes[_telemetry.OUTCOME] == "error"
    assert strict_singleton_durable_backend.instance_count() == 0


@pytest.mark.parametrize("api", APIS)
def test_nothing_is_made_or_recorded_without_a_meter_provider(
    api: str, monkeypatch: pytest.MonkeyPatch, strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    use_meter_provider(monkeypatch, None)
    made: list[Any] = []
    real = _telemetry.Instruments

    def spy(provider: Any) -> Any:
        made.append(provider)
        return real(provider)

    monkeypatch.setattr(_telemetry, "Instruments", spy)
    sync_lock, async_lock, name = file_locks(tmp_path)
    options = StarterOptions(background_finish=False)

    def twice(starter: Any) -> Any:
        if api == "sync":
            return [starter.start("orch", instance_id="quiet"), starter.start("orch", instance_id="quiet")]

        async def a() -> Any:
            return [await starter.start("orch", instance_id="quiet"), await starter.start("orch", instance_id="quiet")]

        return a()

    outcomes, _ = run_api(api, strict_singleton_durable_backend, sync_lock, async_lock, twice, options=options)
    assert [r.outcome for r in outcomes] == [StartOutcome.STARTED, StartOutcome.ALREADY_RUNNING]
    assert made == []  # no instrument, no meter: nothing was asked of OpenTelemetry
    assert _telemetry.start_metrics(name, lambda: 0.0) is None

    # A provider set later takes effect at the next start, and its instruments are made once.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    use_meter_provider(monkeypatch, provider)
    run_api(api, strict_singleton_durable_backend, sync_lock, async_lock, twice, options=options)
    assert made == [provider]
    assert by(reader, _telemetry.STARTS, name, _telemetry.OUTCOME) == {("already_running",): 2}
    provider.shutdown()


class _LostAnswer:
    """The durabletask transport, whose schedule request reaches the backend (``sent``) or not,
    and whose caller always sees a connection error: an ambiguous failure."""

    def __init__(self, client: Any, is_async: bool, *, sent: bool) -> None:
        self.inner: Any = DurableTaskTransport(client, is_async=is_async)
        self.bounds_calls = self.inner.bounds_calls
        self.is_async = is_async
        self.sent = sent

    def prepare(self, call: Any, *, backend: str) -> Any:
        return self.inner.prepare(call, backend=backend)

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:
        return self.inner.read(instance_id, payloads, timeout=timeout)

    def schedule(self, call: Any, tags: dict[str, str], *, timeout: float | None) -> Any:
        if self.sent:
            self.inner.schedule(call, tags, timeout=timeout)
        raise ConnectionError("the answer was lost")

    def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> Any:
        return self.inner.terminate(instance_id, reason, timeout=timeout)

    def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> Any:
        return self.inner.raise_event(instance_id, event_name, data, timeout=timeout)


class _AsyncLostAnswer(_LostAnswer):
    async def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:
        return await self.inner.read(instance_id, payloads, timeout=timeout)

    async def schedule(self, call: Any, tags: dict[str, str], *, timeout: float | None) -> Any:
        if self.sent:
            await self.inner.schedule(call, tags, timeout=timeout)
        raise ConnectionError("the answer was lost")


@pytest.mark.parametrize("sent", [True, False], ids=["appeared", "gave_up"])
@pytest.mark.parametrize("api", APIS)
def test_an_ambiguity_watch_is_counted_by_how_it_ended(
    api: str, sent: bool, reader: InMemoryMetricReader, strict_singleton_durable_backend: DurableTestBackend,
    tmp_path: Path,
) -> None:  # fmt: skip
    sync_lock, async_lock, name = file_locks(tmp_path)

    def transport(client: Any, is_async: bool) -> Any:
        return (_AsyncLostAnswer if is_async else _LostAnswer)(client, is_async, sent=sent)

    def start(starter: Any) -> Any:
        async def a() -> Any:
            try:
                return await starter.start("orch", instance_id="ambiguous")
            except ScheduleError as exc:
                return exc

        if api == "async":
            return a()
        try:
            return starter.start("orch", instance_id="ambiguous")
        except ScheduleError as exc:
            return exc

    # A short window: a request that never arrived is given up on after it.
    options = StarterOptions(background_finish=False, ambiguity_timeout=0.2, visibility_timeout=0.2)
    answer, _ = run_api(
        api, strict_singleton_durable_backend, sync_lock, async_lock, start, transport=transport, options=options
    )
    if sent:
        assert isinstance(answer, StartResult) and answer.outcome is StartOutcome.STARTED
    else:
        assert isinstance(answer, ScheduleError) and answer.maybe_scheduled
    assert by(reader, _telemetry.WATCHES, name, _telemetry.WATCH_RESULT) == {("appeared" if sent else "gave_up",): 1}
    outcome = ("started", None) if sent else ("error", "ScheduleError")
    assert by(reader, _telemetry.STARTS, name, _telemetry.OUTCOME, _telemetry.ERROR_TYPE) == {outcome: 1}


@pytest.mark.parametrize("api", APIS)
def test_a_wait_for_an_earlier_start_record_is_recorded(api: str, reader: InMemoryMetricReader, tmp_path: Path) -> None:
    """Reads lag 1 s: the second start, right after the first, finds its record and re-reads until it shows."""
    sync_lock, async_lock, name = file_locks(tmp_path)

    def twice(starter: Any) -> Any:
        if api == "sync":
            return [starter.start("orch", instance_id="lagging"), starter.start("orch", instance_id="lagging")]

        async def a() -> Any:
            first = await starter.start("orch", instance_id="lagging")
            return [first, await starter.start("orch", instance_id="lagging")]

        return a()

    options = StarterOptions(background_finish=False, visibility_timeout=3)
    with DurableTestBackend(profile="overwrite", visibility_delay=1.0) as backend:
        outcomes, _ = run_api(api, backend, sync_lock, async_lock, twice, options=options)
        assert backend.ledger.snapshot().created["lagging"] == 1
    assert [r.outcome for r in outcomes] == [StartOutcome.STARTED, StartOutcome.ALREADY_RUNNING]
    waits = points(reader, _telemetry.RECORD_WAIT, name)
    assert [(p.attributes[_telemetry.RECORD_RESULT], p.count) for p in waits] == [("shown", 1)]
    assert waits[0].sum <= outcomes[1].elapsed  # a part of the second call


@pytest.mark.parametrize("ending", ["appeared", "gave_up", "lease_lost"])
def test_the_flow_notes_how_its_watch_ended(ending: str) -> None:
    """In memory (the flow's own world, virtual clock): the three ends of a watch the drivers count."""
    world = World()
    cfg = flow_config(lease_ttl=1.0, ambiguity_timeout=5.0, start_records=False)
    call = StartCall(instance_id="w", orchestrator="orch", input=None, tags={}, version=None, start_at=None)

    def intercept(op: _flow.Op) -> Any:
        if not isinstance(op, _flow.Schedule):
            return DEFAULT
        if ending == "appeared":
            world.backend.schedule_later(op.call.instance_id, op.tags, 1.0)
        elif ending == "lease_lost":
            world.store.lose("w")
        raise RpcError("DEADLINE_EXCEEDED")

    notes = _flow.Notes()
    flow = _flow.start_flow(
        call, cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall, notes=notes
    )
    try:
        result = drive(flow, world, intercept)
        assert result.result.outcome is StartOutcome.STARTED
    except ScheduleError:
        assert ending != "appeared"
    assert notes.watch == ending
    assert notes.lease_asked and notes.lease_waited == 0.0


def test_a_lease_wait_cut_short_is_noted_in_full() -> None:
    """In memory, virtual clock: a call abandoned while it waits for another holder's lease
    notes the whole time it waited, not only the waits that returned."""
    world = World()
    cfg = flow_config(lease_ttl=10.0, wait=30.0, start_records=False)
    call = StartCall(instance_id="w", orchestrator="orch", input=None, tags={}, version=None, start_at=None)
    assert world.store.acquire("w", "other", 10.0) is not None  # another holder keeps the lease
    waits = 0

    def intercept(op: _flow.Op) -> Any:
        nonlocal waits
        if isinstance(op, _flow.WaitRelease):
            waits += 1
            world.clock.advance(0.04 if waits == 1 else 7.0)  # the second wait is cut after 7 s
            if waits == 2:
                raise _flow.Abandoned()
            return False
        return DEFAULT

    notes = _flow.Notes()
    flow = _flow.start_flow(
        call, cfg, token="A", backend="sim", clock=world.clock, wall_clock=world.clock.wall, notes=notes
    )
    with pytest.raises(_flow.Abandoned):
        drive(flow, world, intercept)
    assert notes.lease_waited == pytest.approx(7.04)


class _Broken(Exception):
    pass


class _RaisingCounter:
    def add(self, *_args: Any, **_kwargs: Any) -> None:
        raise _Broken("a broken instrument")

    def record(self, *_args: Any, **_kwargs: Any) -> None:
        raise _Broken("a broken instrument")


class _BrokenMeter:
    def __getattr__(self, name: str) -> Any:
        if name.startswith("create_"):
            return lambda *_a, **_k: _RaisingCounter()
        raise AttributeError(name)


class _BrokenInstrumentsProvider:
    """A meter provider whose instruments raise on every measurement."""

    def get_meter(self, *_args: Any, **_kwargs: Any) -> Any:
        return _BrokenMeter()


class _BrokenProvider:
    """A meter provider that raises when asked for a meter."""

    def get_meter(self, *_args: Any, **_kwargs: Any) -> Any:
        raise _Broken("a broken provider")


@pytest.mark.parametrize("strict_singleton_durable_backend", ["overwrite"], indirect=True)
@pytest.mark.parametrize("provider", [_BrokenProvider, _BrokenInstrumentsProvider], ids=["get_meter", "instruments"])
@pytest.mark.parametrize("api", APIS)
def test_broken_telemetry_never_changes_an_answer_nor_keeps_a_lease(
    api: str,
    provider: type,
    monkeypatch: pytest.MonkeyPatch,
    strict_singleton_durable_backend: DurableTestBackend,
    tmp_path: Path,
) -> None:
    """Telemetry that raises (a provider, an instrument) leaves the start's answer and its clean-up
    alone: STARTED for the call that created the instance, the lease free afterwards (the next
    call is answered at once, ``wait=0``), a lock store error still thrown into the flow."""
    use_meter_provider(monkeypatch, provider())
    sync_lock, async_lock, _name = file_locks(tmp_path)
    backend = strict_singleton_durable_backend

    def calls(starter: Any) -> Any:
        if api == "sync":
            return [starter.start("orch", instance_id="b"), starter.start("orch", instance_id="b")]

        async def both() -> list[Any]:
            return [await starter.start("orch", instance_id="b"), await starter.start("orch", instance_id="b")]

        return both()

    results, _starter = run_api(api, backend, sync_lock, async_lock, calls, lease_ttl=15, wait=0)
    assert [r.outcome for r in results] == [StartOutcome.STARTED, StartOutcome.ALREADY_RUNNING]
    assert backend.ledger.snapshot().created["b"] == 1

    # A lock store that cannot be reached: the caller still gets the store's error, not telemetry's.
    port = free_port()

    def refused(starter: Any) -> Any:
        return starter.start("orch", instance_id="c")

    with pytest.raises(LockUnavailableError):
        run_api(
            api,
            backend,
            lambda: RedisLease(quick_redis(port)),
            lambda: AsyncRedisLease(quick_async_redis(port)),
            refused,
            lease_ttl=15,
        )
