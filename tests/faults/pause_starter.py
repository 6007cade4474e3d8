"""A long-lived starter process for the pause campaign (tests/faults/test_pause_campaign.py).

Usage: python pause_starter.py REDIS_PORT DURABLE_ADDRESS LEASE_TTL

Prints ``{"pid": <pid>}`` first. Then, for each line ``START <instance_id>`` read on
stdin, calls ``start("orch", instance_id=<instance_id>, input="A")`` and prints one JSON
line: ``{"iid": ..., "outcome": "started" | "already_running" | "busy"}``, or
``{"iid": ..., "error": <error class name>, "maybe_scheduled": ...}``. Exits on EOF or
``QUIT``.

Self-contained on purpose (only strict_singleton, redis and durabletask): the campaign
also runs it against older trees of the library to show the test can fail.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import redis
from durabletask.client import TaskHubGrpcClient

from strict_singleton import SingletonStarter, StrictSingletonError
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.options import StarterOptions


def _emit(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> None:
    port, address, ttl = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    quiet = logging.getLogger("pause_starter.durabletask")
    quiet.setLevel(logging.WARNING)
    client = TaskHubGrpcClient(host_address=address, logger=quiet)
    starter = SingletonStarter(
        client, lock=RedisLease(redis.Redis(port=port)), lease_ttl=ttl, options=StarterOptions(background_finish=False)
    )
    _emit({"pid": os.getpid()})
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() == "QUIT":
            break
        command, _, instance_id = line.strip().partition(" ")
        if command != "START" or not instance_id:
            _emit({"iid": instance_id, "error": "BadCommand", "detail": line.strip()})
            continue
        try:
            result = starter.start("orch", instance_id=instance_id, input="A")
        except StrictSingletonError as exc:
            _emit(
                {
                    "iid": instance_id,
                    "error": type(exc).__name__,
                    "maybe_scheduled": getattr(exc, "maybe_scheduled", None),
                }
            )
        except Exception as exc:  # reported, not hidden: the campaign counts it as unexpected
            _emit({"iid": instance_id, "error": type(exc).__name__, "unexpected": True, "detail": str(exc)})
        else:
            _emit({"iid": instance_id, "outcome": result.outcome.value})


if __name__ == "__main__":
    main()
