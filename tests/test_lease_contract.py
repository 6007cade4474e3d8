"""One contract suite, parametrized over every lease backend, sync and async twins.

Each case drives the async backend through the same steps as the sync one, so both
run identical checks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from strict_singleton.lock_backends import AsyncFileLease, FileLease, Grant
from strict_singleton.lock_backends.base import StartRecord
from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.testing import RedisServer
from strict_singleton.testing.azurite import Azurite
from strict_singleton.testing.locks import lock_from_url
from suite_helpers import LOCK_KINDS, finishes, poll_until, token

KINDS = LOCK_KINDS


class SyncAdapter:
    """Calls an async backend's methods on a private loop, so one suite drives both."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.backend, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any) -> Any:
            return self.loop.run_until_complete(attr(*args))

        return call

    def shutdown(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        container = getattr(self.backend, "_container", None)  # the caller-owned async Blob client
        if container is not None:
            self.loop.run_until_complete(container.close())
        self.loop.close()


@pytest.fixture(params=[(k, a) for k in KINDS for a in ("sync", "async")], ids=lambda p: f"{p[0]}-{p[1]}")
def lease(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind, api = request.param
    if kind == "file":
        backend: Any = FileLease(tmp_path) if api == "sync" else AsyncFileLease(tmp_path)
    elif kind == "blob":
        emulator: Azurite = request.getfixturevalue("strict_singleton_azurite")
        container = emulator.container_client("locks", asynchronous=api == "async")
        backend = BlobLease(container) if api == "sync" else AsyncBlobLease(container)
    elif kind == "redlock":
        nodes: list[RedisServer] = request.getfixturevalue("redlock_nodes")
        url = "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/0"
        backend = lock_from_url(url, asynchronous=api == "async")
    else:
        server: RedisServer = request.getfixturevalue("strict_singleton_redis")
        backend = (
            RedisLease(redis.Redis(port=server.port))
            if api == "sync"
            else AsyncRedisLease(aioredis.Redis(port=server.port))
        )
    if api == "async":
        adapter = SyncAdapter(backend)
        yield adapter
        adapter.shutdown()
    else:
        yield backend
        backend.close()


def test_fixture_builds_the_named_backend(lease: Any, request: pytest.FixtureRequest) -> None:
    kind = request.node.callspec.params["lease"][0]
    assert lease.name.startswith({"file": "file(", "redis": "redis(", "blob": "azblob(", "redlock": "redlock["}[kind])


def test_one_holder_at_a_time(lease: Any) -> None:
    grant = lease.acquire("job", token("token-a"), 15.0)
    assert isinstance(grant, Grant) and grant.fencing_token >= 1
    assert lease.acquire("job", token("token-b"), 15.0) is None
    assert lease.acquire("other-job", token("token-b"), 15.0) is not None  # per instance ID


def test_release_is_token_checked(lease: Any) -> None:
    assert lease.acquire("job", token("token-a"), 15.0) is not None
    assert lease.release("job", token("token-b")) is False  # never someone else's lease
    assert lease.acquire("job", token("token-c"), 15.0) is None
    assert lease.release("job", token("token-a")) is True
    assert lease.release("job", token("token-a")) is False  # second release: nothing to do
    assert lease.acquire("job", token("token-c"), 15.0) is not None


def test_extend_is_token_checked(lease: Any) -> None:
    assert lease.acquire("job", token("token-a"), 15.0) is not None
    assert lease.extend("job", token("token-b"), 15.0) is False
    assert lease.extend("job", token("token-a"), 15.0) is True
    lease.release("job", token("token-a"))
    assert lease.extend("job", token("token-a"), 15.0) is False


def test_fencing_tokens_only_grow(lease: Any) -> None:
    seen = []
    for i in range(5):
        grant = lease.acquire("job", token(f"t{i}"), 15.0)
        assert grant is not None
        seen.append(grant.fencing_token)
        lease.release("job", token(f"t{i}"))
    assert seen == sorted(seen) and len(set(seen)) == 5


def _record(fence: int, *, sent: int = 1_700_000_000_000_000, ttl_us: int = 60_000_000) -> StartRecord:
    return StartRecord(fencing_token=fence, sent_at_us=sent, previous_created_us=sent - 5, expires_at_us=sent + ttl_us)


def test_start_record_is_returned_by_the_next_acquire(lease: Any) -> None:
    first = lease.acquire("job", token("token-a"), 15.0)
    assert first is not None and first.last_start is None  # nothing recorded yet
    record = _record(first.fencing_token)
    assert lease.release_with_record("job", token("token-a"), record, 60.0) is True
    second = lease.acquire("job", token("token-b"), 15.0)  # released: free at once
    assert second is not None and second.last_start == record
    assert second.fencing_token > first.fencing_token
    assert lease.release("job", token("token-b")) is True  # a plain release keeps the record
    third = lease.acquire("job", token("token-c"), 15.0)
    assert third is not None and third.last_start == record
    newer = _record(third.fencing_token, sent=1_700_000_001_000_000)
    assert lease.release_with_record("job", token("token-c"), newer, 60.0) is True
    fourth = lease.acquire("job", token("token-d"), 15.0)
    assert fourth is not None and fourth.last_start == newer  # replaced, never merged


def test_release_with_record_is_token_checked(lease: Any) -> None:
    grant = lease.acquire("job", token("token-a"), 15.0)
    assert grant is not None
    assert lease.release_with_record("job", token("token-b"), _record(99), 60.0) is False
    assert lease.acquire("job", token("token-c"), 15.0) is None  # still token-a's
    assert lease.release("job", token("token-a")) is True
    after = lease.acquire("job", token("token-c"), 15.0)
    assert after is not None and after.last_start is None  # the refused record was not stored


def test_a_stale_token_can_leave_no_record(lease: Any) -> None:
    assert lease.acquire("job", token("token-a"), 15.0) is not None
    assert lease.release("job", token("token-a")) is True
    assert lease.release_with_record("job", token("token-a"), _record(1), 60.0) is False  # free: not ours
    assert lease.record_start("job", token("token-a"), _record(1), 60.0) is False
    other = lease.acquire("job", token("token-b"), 15.0)
    assert other is not None and other.last_start is None
    assert lease.release_with_record("job", token("token-a"), _record(1), 60.0) is False  # someone else's
    assert lease.acquire("job", token("token-c"), 15.0) is None  # still token-b's


def test_record_start_keeps_the_lease(lease: Any) -> None:
    grant = lease.acquire("job", token("token-a"), 15.0)
    assert grant is not None
    record = _record(grant.fencing_token)
    assert lease.record_start("job", token("token-a"), record, 60.0) is True
    assert lease.acquire("job", token("token-b"), 15.0) is None  # still held
    assert lease.release("job", token("token-a")) is True
    after = lease.acquire("job", token("token-b"), 15.0)
    assert after is not None and after.last_start == record


def test_start_records_are_per_instance_id(lease: Any) -> None:
    grant = lease.acquire("job", token("token-a"), 15.0)
    assert grant is not None
    assert lease.release_with_record("job", token("token-a"), _record(grant.fencing_token), 60.0) is True
    other = lease.acquire("other-job", token("token-b"), 15.0)
    assert other is not None and other.last_start is None


@pytest.mark.parametrize("kind", ["redis", "redlock"])
def test_redis_start_record_expires_with_its_ttl(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lease = sync_backend(kind, tmp_path, request)
    try:
        grant = lease.acquire("job", token("token-a"), 15.0)
        assert lease.release_with_record("job", token("token-a"), _record(grant.fencing_token), 0.05) is True

        def record_gone() -> bool:
            again = lease.acquire("job", token("token-b"), 15.0)
            assert again is not None
            lease.release("job", token("token-b"))
            return again.last_start is None

        poll_until(record_gone, 30, "the start record to expire")
        grant = lease.acquire("job", token("token-c"), 15.0)
        assert lease.release_with_record("job", token("token-c"), _record(grant.fencing_token), 60.0) is True
        again = lease.acquire("job", token("token-d"), 15.0)
        assert again is not None and again.last_start_left is not None and 0 < again.last_start_left <= 60.0
    finally:
        lease.close()


def test_wait_for_release_returns_when_free(lease: Any) -> None:
    # Nobody holds it: returns without waiting the (600 s) timeout out.
    finishes(lambda: lease.wait_for_release("free-job", 600.0), within=30, what="waiting for a free lease")


def sync_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "file":
        return FileLease(tmp_path)
    if kind == "blob":
        emulator: Azurite = request.getfixturevalue("strict_singleton_azurite")
        return BlobLease(emulator.container_client("locks"))
    if kind == "redlock":
        nodes: list[RedisServer] = request.getfixturevalue("redlock_nodes")
        return lock_from_url("redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/0")
    server: RedisServer = request.getfixturevalue("strict_singleton_redis")
    return RedisLease(redis.Redis(port=server.port))


# Blob leases cost three HTTP round trips each: a smaller stress keeps the suite quick.
STRESS = {"file": (32, 50), "redis": (32, 50), "blob": (16, 10), "redlock": (16, 20)}
# The default run's share (a minute less on two cores); the full stress runs with -m slow.
QUICK_STRESS = {"file": (32, 50), "redis": (16, 25), "blob": (8, 5), "redlock": (8, 10)}


@pytest.mark.parametrize(
    "sizes", [pytest.param(QUICK_STRESS, id="quick"), pytest.param(STRESS, id="full", marks=pytest.mark.slow)]
)
def test_many_threads_one_holder(tmp_path: Path, request: pytest.FixtureRequest, sizes: dict[str, Any]) -> None:
    """filelock-style stress: 32 threads x 50 acquisitions, never two holders at once."""
    for kind in KINDS:
        backend = sync_backend(kind, tmp_path, request)
        n_threads, n_rounds = sizes[kind]
        holders = 0
        max_holders = 0
        guard = threading.Lock()
        acquired = 0

        def worker(i: int, backend: Any = backend, guard: threading.Lock = guard, n_rounds: int = n_rounds) -> None:
            nonlocal holders, max_holders, acquired
            for n in range(n_rounds):
                tok = token(f"{i}-{n}")
                while backend.acquire("stress", tok, 15.0) is None:
                    backend.wait_for_release("stress", 1.0)
                with guard:
                    holders += 1
                    max_holders = max(max_holders, holders)
                    acquired += 1
                with guard:
                    holders -= 1
                assert backend.release("stress", tok)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert (kind, max_holders, acquired) == (kind, 1, n_threads * n_rounds)
        backend.close()


def test_waiter_woken_by_release(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A waiter returns on release, long before its (long) timeout."""
    for kind in KINDS:
        backend = sync_backend(kind, tmp_path, request)
        assert backend.acquire("wake", token("holder"), 30.0) is not None
        refused, done = threading.Event(), threading.Event()

        def wait(backend: Any = backend, refused: threading.Event = refused, done: threading.Event = done) -> None:
            while backend.acquire("wake", token("waiter"), 30.0) is None:
                refused.set()
                backend.wait_for_release("wake", 30.0)
            done.set()

        t = threading.Thread(target=wait)
        t.start()
        assert refused.wait(10.0), f"{kind}: the waiter never tried"
        assert not done.is_set()  # still held: the waiter is waiting
        backend.release("wake", token("holder"))
        assert done.wait(10.0), f"{kind}: waiter was not admitted after release"
        t.join()
        backend.close()


def test_redis_lease_expires_and_others_get_it(strict_singleton_redis: RedisServer) -> None:
    lease = RedisLease(redis.Redis(port=strict_singleton_redis.port))
    assert lease.acquire("exp", "a", 0.05) is not None
    poll_until(lambda: lease.acquire("exp", "b", 15.0) is not None, 10, "the expired lease to become free")
    assert lease.extend("exp", "a", 15.0) is False  # the stale holder cannot extend it
    assert lease.release("exp", "a") is False  # nor release it
    assert lease.extend("exp", "b", 15.0) is True


def test_redis_keys_share_one_cluster_slot() -> None:
    lease = RedisLease(fakeredis.FakeRedis())
    for iid in ["job", "a}b", "{x}", "ünï/%?#"]:
        keys = lease._keys
        assert key_slot(keys.lock(iid).encode()) == key_slot(keys.fence(iid).encode())
        assert keys.instance_of_channel(keys.channel(iid)) == iid


def test_redis_scripts_on_fakeredis_unit() -> None:
    """Fast unit check of the Lua scripts (fakeredis proves logic, never concurrency)."""
    lease = RedisLease(fakeredis.FakeRedis())
    assert lease.acquire("u", "a", 1.0) == Grant(fencing_token=1, valid_for=1.0)
    assert lease.acquire("u", "b", 1.0) is None
    assert lease.release("u", "a") is True
    assert lease.acquire("u", "b", 1.0) == Grant(fencing_token=2, valid_for=1.0)


HOLDER = """
import sys
from strict_singleton.lock_backends import FileLease
lease = FileLease(sys.argv[1])
assert lease.acquire("crash", "6f1c1c52-93f4-4c6c-8a43-3b7d2a4f0c11", 15.0) is not None
print("held", flush=True)
sys.stdin.read()
"""


def test_file_lease_freed_when_holder_process_dies(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        lease = FileLease(tmp_path)
        assert lease.acquire("crash", token("parent"), 15.0) is None  # another process holds it
        child.kill()
        child.wait(10)
        grant = lease.acquire("crash", token("parent"), 15.0)
        assert grant is not None and grant.fencing_token == 2  # the counter survived the crash
    finally:
        if child.poll() is None:
            child.kill()
