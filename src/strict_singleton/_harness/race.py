"""The race harness: P processes x T starters per process, R rounds per strategy.

The coordinator (this process) runs the Durable test backend over gRPC (and, with
``execute=True``, a real ``TaskHubGrpcWorker``). Starter processes are spawned (never
forked) and, per round, wait on a barrier that the coordinator joins too, so each
round's starters fire together and the coordinator can read the backend's ledger
between rounds. Inside each process, threads (or asyncio tasks) wait on their own
barrier as well.

Per round it records what every starter reported, what the backend created, how many
active instances were overwritten, when each call began (``time.monotonic``, which
on Linux is one clock for all processes) and how long it took.

Definitions (per round):

* ``started_reports``: callers that said STARTED (for ``naive``: "I scheduled").
* ``created``: instances the backend created for the round's ID.
* ``lost_starts``: active instances overwritten by another start, plus STARTED
  reports with no instance created for them.
* ``overlap``: the round had two instances active at once for one ID (an active one
  was overwritten while it may still have been running).
* ``violation``: anything but exactly one STARTED report and exactly one instance created.
* ``duplicate``: more STARTED reports or instances than expected, an active instance
  overwritten, or a STARTED report without an instance: exactly-once broken for real.
* ``failed_closed``: a violation that is no duplicate and where callers raised errors:
  no start happened because the lock store or backend failed, and the callers were told
  (an outage, not a broken guarantee). Summaries count it apart from violating rounds.
* ``first_error``: ``"Type: message"`` of the round's first error, secrets of the lock
  URL scrubbed.
* ``executions`` (only with ``execute``): activity executions counted by the worker.
  Durable activities run at least once, so a redelivery would count twice; the
  in-memory backend does not redeliver, so here it equals real executions.

Per strategy, the report also has ``backend_calls``: the gRPC calls the backend served
for the strategy's instance IDs, per method, counted on the server over the whole race
(background reads included: starter processes close their starters before exiting),
and, with ``RaceConfig.instrument``, what each starter process's instrument reported.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from strict_singleton._harness.strategies import ORCHESTRATOR, AsyncStrategy, SyncStrategy, worker_logger
from strict_singleton.lock_backends._url import redact_url, scrub
from strict_singleton.testing.backend import DurableTestBackend, Profile
from strict_singleton.testing.swarm import describe, fire_tasks, fire_threads

FINISH_EVENT = "finish_round"
Api = Literal["threads", "asyncio"]
IdMode = Literal["fresh", "reuse"]


@dataclass(frozen=True)
class RaceConfig:
    profile: Profile = "overwrite"
    lock_url: str = "file"
    processes: int = 2
    starters: int = 8  # per process
    rounds: int = 30
    strategies: tuple[str, ...] = ("naive", "strict")
    api: Api = "threads"
    ids: IdMode = "fresh"
    latency: float = 0.002  # injected per backend call: a realistic remote round trip
    visibility_delay: float | None = None
    lease_ttl: float = 15.0
    wait: float = 10.0
    execute: bool = False
    timeout: float = 120.0
    distinct: bool = False  # each starter uses its own IDs (throughput), instead of all on one ID
    calls: int = 1  # sequential starts per starter per round
    confirm_visible: bool = True  # passed to strict starters
    # A picklable zero-argument factory (a module-level class or function), called in each
    # starter process once per strategy; returns a strategies.Instrument.
    instrument: Callable[[], Any] | None = None
    # Instance IDs are "<id_prefix>-<strategy>[-<round>]". Each race gets its own prefix by
    # default: a lock store keeps what a start leaves behind (a start record) for
    # visibility_timeout, and a fresh backend has never seen those instances, so a second race
    # on the same IDs would wait for them (and answer BUSY) for that long.
    id_prefix: str = field(default_factory=lambda: f"race{uuid.uuid4().hex[:6]}")

    def instance_id(self, strategy: str, round_no: int) -> str:
        stem = f"{self.id_prefix}-{strategy}"
        return stem if self.ids == "reuse" else f"{stem}-{round_no}"

    def strategy_of(self, instance_id: str) -> str | None:
        """The strategy whose rounds use ``instance_id`` (None for IDs the race did not make)."""
        for name in sorted(self.strategies, key=len, reverse=True):
            stem = f"{self.id_prefix}-{name}"
            if instance_id == stem or instance_id.startswith(f"{stem}-"):
                return name
        return None


@dataclass
class RoundRecord:
    strategy: str
    round: int
    instance_id: str
    reports: dict[str, int]
    created: int
    overwritten_active: int
    executions: int | None
    pids: list[int]
    began: list[float]
    latencies_ms: list[float]
    ended: list[float] = field(default_factory=list)
    max_rss_kb: int = 0
    first_error: str | None = None

    @property
    def resolve_ms(self) -> float:
        """Time from the first call's start until every caller had its answer."""
        return (max(self.ended) - min(self.began)) * 1000 if self.ended and self.began else 0.0

    @property
    def started_reports(self) -> int:
        return self.reports.get("started", 0)

    @property
    def lost_starts(self) -> int:
        return self.overwritten_active + max(0, self.started_reports - self.created)

    @property
    def overlap(self) -> bool:
        return self.overwritten_active > 0

    expected: int = 1  # instances one round should create (starters x calls with distinct IDs)

    @property
    def violation(self) -> bool:
        return self.started_reports != self.expected or self.created != self.expected

    @property
    def errors(self) -> int:
        """Callers that raised (``error:*``; a raw ALREADY_EXISTS, ``rejected``, is not counted)."""
        return sum(n for k, n in self.reports.items() if k.startswith("error:"))

    @property
    def duplicate(self) -> bool:
        return (
            self.started_reports > self.expected
            or self.created > self.expected
            or self.overwritten_active > 0
            or self.started_reports > self.created
        )

    @property
    def failed_closed(self) -> bool:
        return self.violation and not self.duplicate and self.errors > 0

    @property
    def spread_ms(self) -> float:
        return (max(self.began) - min(self.began)) * 1000 if self.began else 0.0


@dataclass
class StrategySummary:
    strategy: str
    rounds: int
    started_reports: int
    created: int
    lost_starts: int
    overlap_violations: int
    violating_rounds: int  # rounds that broke exactly-once, not counting failed_closed_rounds
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    max_spread_ms: float
    executions: int | None
    failed_closed_rounds: int = 0
    first_error: str | None = None


@dataclass
class RaceReport:
    config: RaceConfig
    rounds: list[RoundRecord] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    coordinator_pid: int = field(default_factory=os.getpid)
    backend_calls: dict[str, dict[str, int]] = field(default_factory=dict)  # strategy -> gRPC method -> calls
    instruments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # strategy -> one report per process

    def summaries(self) -> list[StrategySummary]:
        return [summarize(s, [r for r in self.rounds if r.strategy == s]) for s in self.config.strategies]

    def to_json(self) -> dict[str, Any]:
        rounds = []
        for r in self.rounds:
            row = asdict(r)
            row.update(
                started_reports=r.started_reports,
                lost_starts=r.lost_starts,
                overlap=r.overlap,
                violation=r.violation,
                duplicate=r.duplicate,
                failed_closed=r.failed_closed,
                spread_ms=round(r.spread_ms, 3),
            )
            rounds.append(row)
        config = asdict(self.config)
        config["lock_url"] = redact_url(self.config.lock_url)
        instrument = self.config.instrument
        config["instrument"] = None if instrument is None else getattr(instrument, "__qualname__", repr(instrument))
        return {
            "config": config,
            "coordinator_pid": self.coordinator_pid,
            "starter_pids": self.pids,
            "summary": [asdict(s) for s in self.summaries()],
            "backend_calls": self.backend_calls,
            "instruments": self.instruments,
            "rounds": rounds,
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def summarize(strategy: str, rounds: list[RoundRecord]) -> StrategySummary:
    latencies = [x for r in rounds for x in r.latencies_ms]
    executions = [r.executions for r in rounds if r.executions is not None]
    return StrategySummary(
        strategy=strategy,
        rounds=len(rounds),
        started_reports=sum(r.started_reports for r in rounds),
        created=sum(r.created for r in rounds),
        lost_starts=sum(r.lost_starts for r in rounds),
        overlap_violations=sum(r.overlap for r in rounds),
        violating_rounds=sum(r.violation and not r.failed_closed for r in rounds),
        errors=sum(n for r in rounds for k, n in r.reports.items() if k.startswith("error:") or k == "rejected"),
        latency_p50_ms=round(percentile(latencies, 50), 3),
        latency_p99_ms=round(percentile(latencies, 99), 3),
        max_spread_ms=round(max((r.spread_ms for r in rounds), default=0.0), 3),
        executions=sum(executions) if executions else None,
        failed_closed_rounds=sum(r.failed_closed for r in rounds),
        first_error=next((r.first_error for r in rounds if r.first_error), None),
    )


# -- starter processes ---------------------------------------------------------------


def _worker_main(cfg: RaceConfig, address: str, barrier: Any, results: Any, reports: Any = None) -> None:
    """A starter process: one row per round on ``results``; with an instrument, its reports on ``reports``."""
    try:
        if cfg.api == "asyncio":
            asyncio.run(_worker_async(cfg, address, barrier, results, reports))
        else:
            _worker_sync(cfg, address, barrier, results, reports)
    except threading.BrokenBarrierError:
        pass  # the coordinator gave up; it reports why


def _row(
    recs: list[Any], lock_url: str
) -> tuple[int, list[str], list[float], list[float], list[float], int, str | None]:
    import resource

    outcomes: list[str] = []
    first_error = None
    for rec in recs:  # a starter making several calls returns a list of results
        for value in rec.value if isinstance(rec.value, list) else [rec.value]:
            outcomes.append(describe(value))
            if first_error is None and isinstance(value, BaseException):
                first_error = scrub(f"{type(value).__name__}: {value}", lock_url)
    return (
        os.getpid(),
        outcomes,
        [rec.began for rec in recs],
        [(rec.ended - rec.began) * 1000 / _calls_of(rec) for rec in recs],
        [rec.ended for rec in recs],
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        first_error,
    )


def _calls_of(rec: Any) -> int:
    return len(rec.value) if isinstance(rec.value, list) else 1


def _ids(cfg: RaceConfig, iid: str, starter: int) -> list[str]:
    if cfg.distinct:
        return [f"{iid}-s{starter}-c{k}" for k in range(cfg.calls)]
    return [iid] * cfg.calls


def _strategy_kwargs(cfg: RaceConfig, address: str) -> dict[str, Any]:
    return {
        "address": address,
        "lock_url": cfg.lock_url,
        "lease_ttl": cfg.lease_ttl,
        "wait": cfg.wait,
        "confirm_visible": cfg.confirm_visible,
    }


def _worker_sync(cfg: RaceConfig, address: str, barrier: Any, results: Any, reports: Any) -> None:
    measured: dict[str, dict[str, Any]] = {}
    for name in cfg.strategies:
        instrument = cfg.instrument() if cfg.instrument is not None else None
        strategy = SyncStrategy(name, **_strategy_kwargs(cfg, address), instrument=instrument)
        for r in range(cfg.rounds):
            iid = cfg.instance_id(name, r)
            barrier.wait(cfg.timeout)

            def call(i: int, iid: str = iid, strategy: Any = strategy) -> Any:
                if cfg.calls == 1 and not cfg.distinct:
                    return strategy.start(iid)
                return [strategy.start(x) for x in _ids(cfg, iid, i)]

            results.put(_row(fire_threads(cfg.starters, call, timeout=cfg.timeout), cfg.lock_url))
        strategy.close()
        if instrument is not None:
            measured[name] = instrument.report()
    if reports is not None:
        reports.put(measured)


async def _worker_async(cfg: RaceConfig, address: str, barrier: Any, results: Any, reports: Any) -> None:
    loop = asyncio.get_running_loop()
    measured: dict[str, dict[str, Any]] = {}
    for name in cfg.strategies:
        instrument = cfg.instrument() if cfg.instrument is not None else None
        strategy = AsyncStrategy(name, **_strategy_kwargs(cfg, address), instrument=instrument)
        for r in range(cfg.rounds):
            iid = cfg.instance_id(name, r)
            await loop.run_in_executor(None, barrier.wait, cfg.timeout)

            async def call(i: int, iid: str = iid, strategy: Any = strategy) -> Any:
                if cfg.calls == 1 and not cfg.distinct:
                    return await strategy.start(iid)
                return [await strategy.start(x) for x in _ids(cfg, iid, i)]

            results.put(_row(await fire_tasks(cfg.starters, call), cfg.lock_url))
        await strategy.close()
        if instrument is not None:
            measured[name] = instrument.report()
    if reports is not None:
        reports.put(measured)


# -- the coordinator -----------------------------------------------------------------


class _ExecutionCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def activity(self, ctx: Any, instance_id: str) -> None:
        with self._lock:
            self.counts[instance_id] += 1

    def get(self, instance_id: str) -> int:
        with self._lock:
            return self.counts[instance_id]


def validate_config(cfg: RaceConfig) -> None:
    """Raise ValueError for a configuration no race can run (checked again by run_race)."""
    from strict_singleton._harness.strategies import STRATEGIES

    if cfg.processes < 1 or cfg.starters < 1 or cfg.rounds < 1 or cfg.calls < 1:
        raise ValueError("processes, starters, rounds and calls must each be at least 1")
    if cfg.calls > 1 and not cfg.distinct:
        raise ValueError("several calls per starter need distinct IDs")
    for name in cfg.strategies:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    if "redis-lock" in cfg.strategies and not cfg.lock_url.startswith(("redis://", "rediss://")):
        raise ValueError("the redis-lock strategy needs a Redis server: pass --lock redis://HOST:PORT/DB")


def run_race(cfg: RaceConfig, *, progress: Callable[[RoundRecord, int, int], None] | None = None) -> RaceReport:
    """Run every strategy's rounds against one fresh Durable test backend; return the ledger."""
    validate_config(cfg)
    report = RaceReport(config=cfg)
    backend = DurableTestBackend(profile=cfg.profile, latency=cfg.latency, visibility_delay=cfg.visibility_delay)
    backend.start()
    worker = control = None
    counter = _ExecutionCounter()
    if cfg.execute:
        from durabletask.client import TaskHubGrpcClient

        worker = _start_worker(backend.address, counter)
        control = TaskHubGrpcClient(host_address=backend.address, logger=worker_logger())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(cfg.processes + 1)
    results = ctx.Queue()
    reports = ctx.Queue() if cfg.instrument is not None else None
    procs = [
        ctx.Process(target=_worker_main, args=(cfg, backend.address, barrier, results, reports), daemon=True)
        for _ in range(cfg.processes)
    ]
    for p in procs:
        p.start()
    total = len(cfg.strategies) * cfg.rounds
    died, stop_watch = _watch(procs, barrier)
    try:
        for name in cfg.strategies:
            for r in range(cfg.rounds):
                iid = cfg.instance_id(name, r)
                before = backend.ledger.snapshot()
                try:
                    barrier.wait(cfg.timeout)
                except threading.BrokenBarrierError:
                    raise RuntimeError(f"starter processes stopped: {died or 'barrier timed out'}") from None
                rows = [_get(results, died, cfg.timeout) for _ in range(cfg.processes)]
                executions = None
                if cfg.execute:
                    before_n = _executions_before(report, name, cfg)
                    _wait_executed(counter, iid, executions_before=before_n, timeout=cfg.timeout)
                    assert control is not None
                    control.raise_orchestration_event(iid, FINISH_EVENT)
                    _wait_finished(backend, iid, cfg.timeout)
                    executions = counter.get(iid) - _executions_before(report, name, cfg)
                after = backend.ledger.snapshot()
                keys = [k for k in after.created if k == iid or (cfg.distinct and k.startswith(f"{iid}-s"))]
                record = RoundRecord(
                    strategy=name,
                    round=r,
                    instance_id=iid,
                    reports=dict(Counter(o for row in rows for o in row[1])),
                    created=sum(after.created[k] - before.created[k] for k in keys),
                    overwritten_active=sum(after.overwritten_active[k] - before.overwritten_active[k] for k in keys),
                    executions=executions,
                    pids=sorted({row[0] for row in rows}),
                    began=[b for row in rows for b in row[2]],
                    latencies_ms=[x for row in rows for x in row[3]],
                    ended=[e for row in rows for e in row[4]],
                    max_rss_kb=max(row[5] for row in rows),
                    first_error=next((row[6] for row in rows if row[6]), None),
                    expected=cfg.processes * cfg.starters * cfg.calls if cfg.distinct else 1,
                )
                report.rounds.append(record)
                if cfg.ids == "reuse" and not cfg.execute:
                    backend.finish_instance(iid)  # the next round may start it again
                if progress is not None:
                    progress(record, len(report.rounds), total)
        if reports is not None:  # read before joining: a process only exits once what it queued is read
            for _ in procs:
                for name, data in _get(reports, died, cfg.timeout).items():
                    report.instruments.setdefault(name, []).append(data)
        for p in procs:
            p.join(cfg.timeout)
        report.backend_calls = _calls_per_strategy(cfg, backend)
    finally:
        stop_watch()
        barrier.abort()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if worker is not None:
            worker.stop()
        if control is not None:
            control.close()
        backend.stop(grace=0)
    report.pids = sorted({pid for r in report.rounds for pid in r.pids})
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise RuntimeError(f"starter processes failed with exit codes {bad}")
    return report


def _calls_per_strategy(cfg: RaceConfig, backend: DurableTestBackend) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {name: Counter() for name in cfg.strategies}
    for (method, instance_id), n in backend.calls.snapshot().counts.items():
        name = cfg.strategy_of(instance_id)
        if name is not None:
            out[name][method] += n
    return {name: dict(counts) for name, counts in out.items()}


def _watch(procs: list[Any], barrier: Any) -> tuple[list[str], Callable[[], None]]:
    """A watchdog: if a starter process dies, break the barrier so the coordinator fails fast.

    Returns the list it appends to and a function that stops it. Stop it before returning:
    a watchdog still holding the barrier at interpreter exit keeps the barrier's semaphores
    from being freed, and multiprocessing's resource tracker then warns about them.
    """
    died: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for p in procs:
                if p.exitcode not in (None, 0):
                    died.append(f"pid {p.pid} exited with code {p.exitcode}")
                    barrier.abort()
                    return
            if all(p.exitcode == 0 for p in procs):
                return

    thread = threading.Thread(target=watch, daemon=True, name="race-watchdog")
    thread.start()

    def stop_watch() -> None:
        stop.set()
        thread.join()

    return died, stop_watch


def _get(results: Any, died: list[str], timeout: float) -> Any:
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if died:
                raise RuntimeError(f"starter processes stopped: {died}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no results from starter processes within {timeout}s") from None


def _executions_before(report: RaceReport, strategy: str, cfg: RaceConfig) -> int:
    if cfg.ids == "fresh":
        return 0
    return sum(r.executions or 0 for r in report.rounds if r.strategy == strategy)


def _wait_executed(counter: _ExecutionCounter, instance_id: str, *, executions_before: int, timeout: float) -> None:
    """Bounded polling until the round's instance has run its activity."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while counter.get(instance_id) <= executions_before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"instance {instance_id!r} never executed within {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _start_worker(address: str, counter: _ExecutionCounter) -> Any:
    from durabletask import task
    from durabletask.worker import TaskHubGrpcWorker

    def count_execution(ctx: task.ActivityContext, instance_id: str) -> None:
        counter.activity(ctx, instance_id)

    def race_orchestrator(ctx: task.OrchestrationContext, _: Any) -> Any:
        # Count the execution, then stay running until the coordinator ends the round:
        # an instance that completed mid-round could rightly be started again.
        yield ctx.call_activity(count_execution, input=ctx.instance_id)
        yield ctx.wait_for_external_event(FINISH_EVENT)
        return "done"

    race_orchestrator.__name__ = ORCHESTRATOR
    worker = TaskHubGrpcWorker(host_address=address, logger=worker_logger())
    worker.add_orchestrator(race_orchestrator)
    worker.add_activity(count_execution)
    worker.start()  # type: ignore[no-untyped-call]
    return worker


def _wait_finished(backend: DurableTestBackend, instance_id: str, timeout: float) -> None:
    """Bounded polling until the round's instance is no longer pending or running."""
    from durabletask.internal import orchestrator_service_pb2 as pb

    active = {pb.ORCHESTRATION_STATUS_PENDING, pb.ORCHESTRATION_STATUS_RUNNING}
    deadline = time.monotonic() + timeout
    delay = 0.002
    while backend.status_of(instance_id) in active:
        if time.monotonic() > deadline:
            raise TimeoutError(f"instance {instance_id!r} did not finish within {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
