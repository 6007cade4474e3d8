"""Sixteen threads race to start one orchestration; exactly one starts it.

Runs with no servers. This is a demo on strict-singleton's own test harness
(``strict_singleton.testing``), not a template for an app: ``DurableTestBackend`` is durabletask's
in-memory backend over gRPC on a free port, set to *overwrite* duplicate starts (the
"no servers, overwrite-duplicates demo backend", so that a start without the lease would do
harm) and counting the instances it creates; no worker runs the orchestration. The lease is a
file lock in a temporary directory. Run: python examples/quickstart.py

For real use, copy examples/worker_app.py instead: a real orchestrator and activity on a
``TaskHubGrpcWorker``, ``SingletonStarter`` and ``AsyncSingletonStarter``, and the commands to
run it against the Durable Task Scheduler emulator and Redis. For Azure Functions:
examples/functions_app/.
"""

import tempfile
from collections import Counter

from durabletask.client import TaskHubGrpcClient

from strict_singleton import SingletonStarter
from strict_singleton.lock_backends import FileLease
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.swarm import fire_threads


def main() -> None:
    with DurableTestBackend(profile="overwrite") as backend:  # a host that would overwrite duplicates
        client = TaskHubGrpcClient(host_address=backend.address)
        # Each run is a new, empty task hub, so it gets a lock location of its own: with the
        # shared default directory a second run would wait out the start record the first
        # run left for its (now gone) instance. Starters of one real task hub share one
        # location (or one lock store and namespace=).
        with tempfile.TemporaryDirectory() as locks, SingletonStarter(client, lock=FileLease(locks)) as starter:
            records = fire_threads(16, lambda _i: starter.start("nightly_report", instance_id="nightly-report"))
        outcomes = Counter(r.value.outcome.value for r in records)
        created = backend.ledger.snapshot().created["nightly-report"]
        print(f"16 concurrent starters -> {dict(outcomes)}; instances created in the backend: {created}")
        client.close()


if __name__ == "__main__":
    main()
