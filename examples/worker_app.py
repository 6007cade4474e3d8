"""A Durable Task app with strict-singleton: a worker runs the orchestration, many callers start it once.

What it does, as an app would: defines an orchestrator (``nightly_report``) and an activity
(``build_report``), registers them on a ``TaskHubGrpcWorker`` and starts it; then 16 callers
(threads with ``SingletonStarter``, or asyncio tasks with ``AsyncSingletonStarter``) start
the orchestration under the fixed instance ID ``nightly-report`` at the same moment, as every
replica of a service would when its nightly timer fires. Exactly one caller gets ``started``;
the others ``already_running``. It then raises the ``day_closed`` event the orchestration
waits for, waits for it to complete and prints the outcome counts and the output.

The orchestration waits for ``day_closed`` before it builds the report, so it is still running
while the callers race. A report that finished within a millisecond could legitimately be
started again by a late caller: by default a *finished* instance may be replaced (``reuse=``
in docs/starting.md decides that); a *running* one never is.

Run it here, with no servers (Python >= 3.10, a checkout of strict-singleton)::

    pip install -e .                        # in the checkout (the package is not on PyPI)
    python examples/worker_app.py           # threads and SingletonStarter
    python examples/worker_app.py --api asyncio   # asyncio tasks and AsyncSingletonStarter

That starts durabletask's own ``InMemoryOrchestrationBackend`` (``durabletask.testing``, a
real gRPC server; its ``start()`` listens on every interface of this machine, on a free port
picked here) and takes the lease with the file lock (``FileLease``: one host; directory
``$STRICT_SINGLETON_LOCK_DIR``, else ``/var/tmp/strict-singleton``). Each run is a new, empty
task hub, so the starter gets a namespace of its own per run (one small lock file per run).

Against the Durable Task Scheduler emulator and a local Redis (Docker)::

    docker run -d --name dts -p 8080:8080 -p 8082:8082 mcr.microsoft.com/dts/dts-emulator:latest
    docker run -d --name ss-redis -p 6380:6379 redis:7 --appendonly yes --maxmemory-policy noeviction
    pip install -e '.[azuremanaged,redis]'  # in the checkout
    python examples/worker_app.py --endpoint http://localhost:8080 --taskhub default \\
        --lock redis://localhost:6380/0
    # the emulator's dashboard: http://localhost:8082 (task hub "default")

``--taskhub`` selects ``durabletask.azuremanaged``'s ``DurableTaskSchedulerClient`` /
``DurableTaskSchedulerWorker`` with ``token_credential=None, secure_channel=False`` (the
emulator's settings). For a scheduler in Azure, pass ``https://NAME.REGION.durabletask.io``
and change those two to ``token_credential=DefaultAzureCredential()`` (``azure-identity``)
and ``secure_channel=True`` in ``connect`` below. Without ``--taskhub``, ``--endpoint`` is a
plain Durable Task sidecar (``host:port``) reached with ``TaskHubGrpcClient``.

The same settings from the environment: ``DURABLE_ENDPOINT``, ``DURABLE_TASKHUB``,
``STRICT_SINGLETON_LOCK_URL`` (any lock URL: ``file``, ``file:/dir``, ``redis://...``,
``redlock://...``, ``azblob://container``; see docs/lock-stores.md). Redis as a lock store
wants ``noeviction`` and persistence (above), or a restart forgets held leases.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationState, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StarterOptions, StartResult
from strict_singleton.lock_backends import from_url

INSTANCE_ID = "nightly-report"
DAY_CLOSED = "day_closed"

# durabletask's clients and worker log every call at INFO to stderr unless given a logger.
# Stopping a worker cancels its work-item stream, which it reports as a warning: not a problem.
QUIET = logging.getLogger("worker_app.durabletask")
QUIET.setLevel(logging.WARNING)
QUIET.addFilter(lambda record: "Locally cancelled by application" not in record.getMessage())


# -- the app's Durable code ---------------------------------------------------------------------


def build_report(ctx: task.ActivityContext, day: str) -> str:
    """The activity: the real work (a query, a file, an e-mail) goes here."""
    return f"report for {day}: built"


def nightly_report(ctx: task.OrchestrationContext, day: str) -> Generator[task.Task[Any], Any, str]:
    """The orchestrator: wait until the day is closed, then build its report."""
    yield ctx.wait_for_external_event(DAY_CLOSED)
    report: str = yield ctx.call_activity(build_report, input=day)
    return report


# -- where it runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the orchestrations run: a sidecar address, and the Scheduler's task hub if any."""

    address: str
    taskhub: str | None
    description: str

    def client(self) -> TaskHubGrpcClient:
        if self.taskhub:
            from durabletask.azuremanaged.client import DurableTaskSchedulerClient

            return DurableTaskSchedulerClient(
                host_address=self.address,
                taskhub=self.taskhub,
                token_credential=None,
                secure_channel=False,
                logger=QUIET,
            )
        return TaskHubGrpcClient(host_address=self.address, logger=QUIET)

    def async_client(self) -> AsyncTaskHubGrpcClient:
        if self.taskhub:
            from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

            return AsyncDurableTaskSchedulerClient(
                host_address=self.address,
                taskhub=self.taskhub,
                token_credential=None,
                secure_channel=False,
                logger=QUIET,
            )
        return AsyncTaskHubGrpcClient(host_address=self.address, logger=QUIET)

    def worker(self) -> TaskHubGrpcWorker:
        if self.taskhub:
            from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

            return DurableTaskSchedulerWorker(
                host_address=self.address,
                taskhub=self.taskhub,
                token_credential=None,
                secure_channel=False,
                logger=QUIET,
            )
        return TaskHubGrpcWorker(host_address=self.address, logger=QUIET)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Outcome:
    counts: dict[str, int]
    winner: StartResult | None
    final: OrchestrationState | None


def summarize(results: Sequence[StartResult], final: OrchestrationState | None) -> Outcome:
    counts = Counter(r.outcome.value for r in results)
    winner = next((r for r in results if r.started), None)
    return Outcome(counts=dict(sorted(counts.items())), winner=winner, final=final)


# -- threads and SingletonStarter ---------------------------------------------------------------


def run_threads(target: Target, *, lock_url: str, callers: int, day: str, options: StarterOptions) -> Outcome:
    client = target.client()
    lock = from_url(lock_url)
    try:
        with SingletonStarter(client, lock=lock, options=options) as starter:
            gate = threading.Barrier(callers)  # every caller calls start() at the same moment

            def call(_: int) -> StartResult:
                gate.wait(timeout=60)
                return starter.start(nightly_report, instance_id=INSTANCE_ID, input=day)

            with ThreadPoolExecutor(max_workers=callers) as pool:
                results = list(pool.map(call, range(callers)))
        client.raise_orchestration_event(INSTANCE_ID, DAY_CLOSED)
        final = client.wait_for_orchestration_completion(INSTANCE_ID, timeout=60)
        return summarize(results, final)
    finally:
        lock.close()
        client.close()


# -- asyncio tasks and AsyncSingletonStarter ----------------------------------------------------


async def run_tasks(target: Target, *, lock_url: str, callers: int, day: str, options: StarterOptions) -> Outcome:
    client = target.async_client()
    lock = from_url(lock_url, asynchronous=True)
    try:
        async with AsyncSingletonStarter(client, lock=lock, options=options) as starter:
            results = await asyncio.gather(
                *(starter.start(nightly_report, instance_id=INSTANCE_ID, input=day) for _ in range(callers))
            )
        await client.raise_orchestration_event(INSTANCE_ID, DAY_CLOSED)
        final = await client.wait_for_orchestration_completion(INSTANCE_ID, timeout=60)
        return summarize(results, final)
    finally:
        await lock.close()
        await client.close()


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("DURABLE_ENDPOINT"),
        help="a Durable Task sidecar or scheduler (default: $DURABLE_ENDPOINT, else an in-memory backend)",
    )
    parser.add_argument(
        "--taskhub",
        default=os.environ.get("DURABLE_TASKHUB"),
        help="the Durable Task Scheduler task hub: use the azuremanaged client (default: $DURABLE_TASKHUB)",
    )
    parser.add_argument(
        "--lock",
        default=os.environ.get("STRICT_SINGLETON_LOCK_URL", "file"),
        help="the lock store's URL (default: $STRICT_SINGLETON_LOCK_URL, else the file lease)",
    )
    parser.add_argument("--api", choices=("sync", "asyncio"), default="sync")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--day", default=datetime.date.today().isoformat(), help="the orchestration's input")
    args = parser.parse_args(argv)
    if args.taskhub and not args.endpoint:
        parser.error("--taskhub needs --endpoint (the scheduler's address)")
    if args.callers < 1:
        parser.error("--callers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backend = None
    if args.endpoint:
        target = Target(address=args.endpoint, taskhub=args.taskhub, description=args.endpoint)
        # A real task hub: the Scheduler's client names it (leases are kept per task hub); a
        # plain sidecar's client does not, so its starters share the '' namespace.
        options = StarterOptions()
    else:
        from durabletask.testing import create_test_backend

        port = free_loopback_port()
        backend = create_test_backend(port=port)
        target = Target(address=f"localhost:{port}", taskhub=None, description=f"in-memory backend on port {port}")
        # Every run is a new, empty task hub: a namespace of its own keeps this run from
        # waiting on the start record the previous run left for its (now gone) instance.
        options = StarterOptions(namespace=f"worker-app-demo-{uuid.uuid4().hex[:12]}")

    worker = target.worker()
    worker.add_orchestrator(nightly_report)
    worker.add_activity(build_report)
    worker.start()
    try:
        run: Callable[[], Outcome]
        common: dict[str, Any] = {"lock_url": args.lock, "callers": args.callers, "day": args.day, "options": options}
        if args.api == "asyncio":
            run = lambda: asyncio.run(run_tasks(target, **common))  # noqa: E731
        else:
            run = lambda: run_threads(target, **common)  # noqa: E731
        outcome = run()
    finally:
        worker.stop()
        if backend is not None:
            backend.stop()

    print(f"durable backend: {target.description}; lock: {args.lock}; api: {args.api}")
    print(f"{args.callers} concurrent callers -> {outcome.counts}")
    if outcome.winner is not None:
        print(f"started by one caller, fencing token {outcome.winner.fencing_token}")
    final = outcome.final
    if final is None:
        print(f"orchestration {INSTANCE_ID}: not found")
        return
    output = json.loads(final.serialized_output) if final.serialized_output else None
    print(f"orchestration {INSTANCE_ID}: {final.runtime_status.name}, output: {output!r}")


if __name__ == "__main__":
    main()
