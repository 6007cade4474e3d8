"""``KeyboardInterrupt`` at any point of a sync start on the main thread: a real SIGINT raised at
every line the call executes inside strict-singleton (a tracer sends it with
``signal.raise_signal``, so the interpreter's own signal handling delivers it, as for Ctrl-C).
After each interrupted call, once its clean-up has run: the lease is free, and if the call's
schedule created an instance, the start record is there (a later caller inside a status lag
waits for it instead of starting again). Real components: the in-memory Durable backend over
gRPC, a real file lease."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import TaskHubGrpcClient

import strict_singleton
from strict_singleton import SingletonStarter
from strict_singleton.lock_backends import FileLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend

PACKAGE = str(Path(strict_singleton.__file__).parent)


MAIN = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT reaches the main thread only"
)


@MAIN
@pytest.mark.parametrize(
    "stride", [pytest.param(3, id="every-3rd-line"), pytest.param(1, id="every-line", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("kind", ["start", "start_or_signal"])
def test_a_sigint_anywhere_in_a_start_leaves_the_lease_free_and_the_record(
    tmp_path: Path, kind: str, stride: int
) -> None:
    lock = FileLease(tmp_path)
    with DurableTestBackend(profile="overwrite") as backend, TaskHubGrpcClient(host_address=backend.address) as client:
        # Short windows: a call interrupted while preparing its schedule cannot know whether it
        # was sent, and watches for the instance that long.
        starter = SingletonStarter(
            client, lock=lock, lease_ttl=5.0, options=StarterOptions(ambiguity_timeout=0.2, visibility_timeout=0.2)
        )

        def one(iid: str) -> Any:
            if kind == "start_or_signal":
                return starter.start_or_signal("orch", instance_id=iid, event_name="e", event_data=1, request_id="r")
            return starter.start("orch", instance_id=iid)

        total = lines_of_call(lambda: one("count"))
        assert total > 50
        bad: list[str] = []
        interrupted = points = 0
        for k in range(1, total + 1, stride):
            iid = f"ki-{k}"
            points += 1
            interrupted += interrupted_at_call(lambda iid=iid: one(iid), k) is not None
            starter.close()  # every clean-up and finish handed to the background has run
            grant = lock.acquire(iid, "probe", 5.0)
            if grant is None:
                bad.append(f"line {k}: the lease is still held")
                continue
            created = backend.ledger.snapshot().created[iid]
            if created > 1:
                bad.append(f"line {k}: {created} instances")
            if created and grant.last_start is None:
                bad.append(f"line {k}: an instance was created and no start record was left")
            lock.release(iid, "probe")
        assert interrupted > points // 2, (interrupted, points)
        assert not bad, f"{len(bad)} of {points} points: {bad[:5]}"
    lock.close()


def lines_of_call(run: Any) -> int:
    count = [0]

    def tracer(frame: Any, event: str, _arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(PACKAGE):
            if event == "line":
                count[0] += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return count[0]


def interrupted_at_call(run: Any, k: int) -> BaseException | None:
    count = [0]

    def tracer(frame: Any, event: str, _arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(PACKAGE):
            if event == "line":
                count[0] += 1
                if count[0] == k:
                    signal.raise_signal(signal.SIGINT)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        run()
    except KeyboardInterrupt as exc:
        return exc
    finally:
        sys.settrace(None)
    return None
