"""A starter in its own process, for fault scenarios that kill or freeze the holder.

Usage: python holder.py LOCK_URL DURABLE_ADDRESS INSTANCE_ID LEASE_TTL
Prints one JSON line: {"outcome": ...} or {"error": ErrorType, "maybe_scheduled": ...}.
"""

from __future__ import annotations

import json
import sys

from durabletask.client import TaskHubGrpcClient

from strict_singleton import SingletonStarter, StrictSingletonError
from strict_singleton._harness.strategies import quiet_logger
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.options import StarterOptions


def main() -> None:
    lock_url, address, instance_id, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    client = TaskHubGrpcClient(host_address=address, logger=quiet_logger())
    starter = SingletonStarter(
        client,
        lock=lock_from_url(lock_url),
        lease_ttl=ttl,
        options=StarterOptions(schedule_margin=min(0.1, ttl / 4), background_finish=False),
    )
    print(json.dumps({"pid": __import__("os").getpid()}), flush=True)
    try:
        result = starter.start("orch", instance_id=instance_id)
        print(json.dumps({"outcome": result.outcome.value}), flush=True)
    except StrictSingletonError as exc:
        print(
            json.dumps({"error": type(exc).__name__, "maybe_scheduled": getattr(exc, "maybe_scheduled", None)}),
            flush=True,
        )


if __name__ == "__main__":
    main()
