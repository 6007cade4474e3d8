"""DurableTestBackend's own instruments: calls counted on the server, and injected latency on every call.

No timing here: the latency is observed through an injected ``sleep``."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from durabletask.client import TaskHubGrpcClient

from strict_singleton.testing import DurableTestBackend


def test_every_call_is_counted_per_method_and_instance_id() -> None:
    with DurableTestBackend() as backend:
        client = TaskHubGrpcClient(host_address=backend.address)
        try:
            assert client.get_orchestration_state("a") is None
            client.schedule_new_orchestration("orch", instance_id="a")
            client.get_orchestration_state("a")
            client.raise_orchestration_event("a", "go")
            client.terminate_orchestration("a")
            client.get_orchestration_state("b")
            snap = backend.calls.snapshot()
            assert snap.counts == Counter(
                {
                    ("GetInstance", "a"): 2,
                    ("StartInstance", "a"): 1,
                    ("RaiseEvent", "a"): 1,
                    ("TerminateInstance", "a"): 1,
                    ("GetInstance", "b"): 1,
                }
            )
            assert snap.total == 6
            assert snap.by_method() == Counter({"GetInstance": 3, "StartInstance": 1, "RaiseEvent": 1,
                                                "TerminateInstance": 1})  # fmt: skip
            assert snap.by_method(lambda iid: iid == "b") == Counter({"GetInstance": 1})
            backend.calls.reset()
            assert backend.calls.snapshot().total == 0
            client.get_orchestration_state("a")
            assert backend.calls.snapshot().counts == Counter({("GetInstance", "a"): 1})
            backend.reset()  # the whole backend's reset clears the counts too
            assert backend.calls.snapshot().total == 0
            assert snap.total == 6  # a snapshot is a copy
        finally:
            client.close()


def test_latency_is_added_to_every_call_before_the_hooks() -> None:
    events: list[str] = []
    backend = DurableTestBackend(latency=0.25, sleep=lambda s: events.append(f"sleep {s}"))
    backend.read_hook = lambda iid: events.append(f"read {iid}")
    backend.start_hook = lambda iid: events.append(f"start {iid}")
    with backend:
        client = TaskHubGrpcClient(host_address=backend.address)
        try:
            client.get_orchestration_state("a")
            client.schedule_new_orchestration("orch", instance_id="a")
            client.terminate_orchestration("a")
        finally:
            client.close()
    assert events == ["sleep 0.25", "read a", "sleep 0.25", "start a", "sleep 0.25"]


def test_injected_stalls_overlap() -> None:
    # Every call's stall waits until 48 calls are stalled at once: only a server with
    # threads for all of them answers (a stall is a sleep in a serving thread, not CPU).
    n = 48
    everyone = threading.Barrier(n)
    backend = DurableTestBackend(latency=0.001, sleep=lambda _s: everyone.wait(30))
    with backend, ThreadPoolExecutor(n) as pool:
        client = TaskHubGrpcClient(host_address=backend.address)
        try:
            states = list(pool.map(lambda i: client.get_orchestration_state(f"id-{i}"), range(n)))
        finally:
            client.close()
    assert states == [None] * n
    assert backend.calls.snapshot().by_method() == Counter({"GetInstance": n})
