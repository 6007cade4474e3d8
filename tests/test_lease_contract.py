"""One contract suite, parametrized over every lease backend, sync and async twins.

Each case drives the async backend through the same steps as the sync one, so both
run identical checks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends import AsyncFileLease, FileLease, Grant
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.lock_backends.base import REQUEST_RECORD_MAX, RequestRecord, StartRecord
from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.lock_backends.redlock import AsyncRedlockLease, RedlockLease
from strict_singleton.testing import RedisServer
from strict_singleton.testing.azurite import Azurite
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


# -- request records: a second, long-lived slot per instance ID (record_request) --------

DAY = 86400.0
ODD_REQUEST_ID = "order:42/a%20b%zz ünï 字 🙂"  # ':' '/' '%' (and what looks like an escape), non-ASCII


def _request(
    fence: int,
    request_id: str | None = "req-1",
    *,
    sent: int = 1_700_000_000_000_000,
    action: str = "start",
    event: str = "",
) -> RequestRecord:
    return RequestRecord(
        request_id=request_id,
        fencing_token=fence,
        sent_at_us=sent,
        previous_created_us=sent - 7,
        action=action,
        event=event,
        expires_at_us=sent + 86_400_000_000,
    )


def _holder(lease: Any, name: str, instance_id: str = "job") -> Grant:
    grant = lease.acquire(instance_id, token(name), 15.0)
    assert grant is not None, f"{name} could not acquire {instance_id!r}"
    return grant


def _next_request(lease: Any, name: str, instance_id: str = "job") -> RequestRecord | None:
    """The request record the next holder finds (it takes the lease and gives it back)."""
    grant = _holder(lease, name, instance_id)
    assert lease.release(instance_id, token(name)) is True
    return grant.last_request


def test_acquire_finds_no_request_record_on_a_fresh_id(lease: Any) -> None:
    first = _holder(lease, "token-a")
    assert first.last_request is None
    assert lease.release("job", token("token-a")) is True
    assert _next_request(lease, "token-b") is None  # a plain acquire and release write none either


@pytest.mark.parametrize(
    "request_id",
    [pytest.param("req-1", id="plain"), pytest.param(ODD_REQUEST_ID, id="odd"), pytest.param(None, id="tombstone")],
)
def test_record_request_round_trips_and_keeps_the_lease(lease: Any, request_id: str | None) -> None:
    grant = _holder(lease, "token-a")
    record = _request(grant.fencing_token, request_id, action="signal", event="pending")
    assert lease.record_request("job", token("token-a"), record, DAY) is True
    assert lease.acquire("job", token("token-b"), 15.0) is None  # the lease is kept
    assert lease.extend("job", token("token-a"), 15.0) is True
    assert lease.release("job", token("token-a")) is True
    found = _next_request(lease, "token-b")
    assert found == record
    assert found is not None and found.request_id == request_id
    assert _next_request(lease, "token-c") == record  # reading it does not consume it


def test_request_records_are_per_instance_id(lease: Any) -> None:
    grant = _holder(lease, "token-a")
    assert lease.record_request("job", token("token-a"), _request(grant.fencing_token), DAY) is True
    assert lease.release("job", token("token-a")) is True
    assert _next_request(lease, "token-b", "other-job") is None


def test_record_request_is_token_checked(lease: Any) -> None:
    grant = _holder(lease, "token-a")
    assert lease.record_request("job", token("token-b"), _request(99, "wrong-holder"), DAY) is False
    assert lease.acquire("job", token("token-c"), 15.0) is None  # still token-a's
    assert lease.release("job", token("token-a")) is True
    assert lease.record_request("job", token("token-a"), _request(grant.fencing_token, "released"), DAY) is False
    assert _next_request(lease, "token-c") is None  # neither refused record was stored
    # With a record stored, a refused write leaves it as it was.
    grant = _holder(lease, "token-d")
    kept = _request(grant.fencing_token, "kept")
    assert lease.record_request("job", token("token-d"), kept, DAY) is True
    assert lease.record_request("job", token("token-e"), _request(grant.fencing_token + 1, "refused"), DAY) is False
    assert lease.release("job", token("token-d")) is True
    assert lease.record_request("job", token("token-d"), _request(grant.fencing_token, "late"), DAY) is False
    other = _holder(lease, "token-f")
    assert other.last_request == kept
    assert lease.record_request("job", token("token-d"), _request(grant.fencing_token, "stale"), DAY) is False
    assert lease.acquire("job", token("token-g"), 15.0) is None  # the refused write left token-f's lease alone
    assert lease.release("job", token("token-f")) is True
    assert _next_request(lease, "token-g") == kept


def test_a_newer_request_record_replaces_the_older(lease: Any) -> None:
    grant = _holder(lease, "token-a")
    older = _request(grant.fencing_token, "first-request-with-a-longer-id-than-the-next-one", action="signal")
    newer = _request(grant.fencing_token, "second", sent=1_700_000_000_000_001, event="raised")
    assert lease.record_request("job", token("token-a"), older, DAY) is True
    assert lease.record_request("job", token("token-a"), newer, DAY) is True  # same holder, replaced
    assert lease.release("job", token("token-a")) is True
    assert _next_request(lease, "token-b") == newer  # replaced, never merged
    grant = _holder(lease, "token-c")
    tombstone = _request(grant.fencing_token, None)
    assert lease.record_request("job", token("token-c"), tombstone, DAY) is True  # a later holder, replaced
    assert lease.release("job", token("token-c")) is True
    assert _next_request(lease, "token-d") == tombstone


def test_no_other_call_erases_or_alters_the_request_record(lease: Any) -> None:
    grant = _holder(lease, "token-a")
    record = _request(grant.fencing_token, ODD_REQUEST_ID)
    assert lease.record_request("job", token("token-a"), record, DAY) is True
    assert lease.extend("job", token("token-a"), 15.0) is True
    assert lease.record_start("job", token("token-a"), _record(grant.fencing_token), 60.0) is True
    assert lease.release_with_record("job", token("token-a"), _record(grant.fencing_token), 60.0) is True
    second = _holder(lease, "token-b")  # acquire (which writes the fencing token) keeps it too
    assert second.last_request == record
    assert lease.release("job", token("token-b")) is True  # a plain release
    third = _holder(lease, "token-c")
    assert third.last_request == record
    assert lease.record_start("job", token("token-c"), _record(third.fencing_token), 60.0) is True
    assert lease.extend("job", token("token-c"), 15.0) is True
    assert lease.release_with_record("job", token("token-c"), _record(third.fencing_token), 60.0) is True
    assert _next_request(lease, "token-d") == record
    for i in range(3):  # refused calls on a free lease do not touch it either
        assert lease.release("job", token(f"nobody-{i}")) is False
        assert lease.release_with_record("job", token(f"nobody-{i}"), _record(1), 60.0) is False
        assert lease.record_start("job", token(f"nobody-{i}"), _record(1), 60.0) is False
    assert _next_request(lease, "token-e") == record


def test_start_and_request_records_do_not_clobber_each_other(lease: Any) -> None:
    grant = _holder(lease, "token-a")
    start = _record(grant.fencing_token)
    request = _request(grant.fencing_token, "r-1")
    assert lease.record_start("job", token("token-a"), start, 60.0) is True
    assert lease.record_request("job", token("token-a"), request, DAY) is True
    assert lease.release("job", token("token-a")) is True
    second = _holder(lease, "token-b")
    assert (second.last_start, second.last_request) == (start, request)
    newer_request = _request(second.fencing_token, "r-2", action="signal", event="not-raised")
    assert lease.record_request("job", token("token-b"), newer_request, DAY) is True  # only the request slot
    assert lease.release("job", token("token-b")) is True
    third = _holder(lease, "token-c")
    assert (third.last_start, third.last_request) == (start, newer_request)
    newer_start = _record(third.fencing_token, sent=1_700_000_002_000_000)
    assert lease.release_with_record("job", token("token-c"), newer_start, 60.0) is True  # only the start slot
    fourth = _holder(lease, "token-d")
    assert (fourth.last_start, fourth.last_request) == (newer_start, newer_request)
    assert lease.release("job", token("token-d")) is True


def _maximal(fence: int, chunk: str) -> RequestRecord:
    """A request record whose encoding is exactly REQUEST_RECORD_MAX bytes, mostly ``chunk``s."""
    empty = len(_request(fence, "").encode())  # "" encodes to nothing (decodes to a tombstone)
    unit = len(_request(fence, chunk).encode()) - empty
    count = (REQUEST_RECORD_MAX - empty) // unit
    request_id = chunk * count + "a" * (REQUEST_RECORD_MAX - empty - count * unit)
    record = _request(fence, request_id)
    assert len(record.encode()) == REQUEST_RECORD_MAX
    return record


@pytest.mark.parametrize("chunk", ["a", "é:/%"])
def test_a_request_record_of_the_maximal_size_round_trips(lease: Any, chunk: str) -> None:
    grant = _holder(lease, "token-a")
    record = _maximal(grant.fencing_token, chunk)
    start = _record(grant.fencing_token)
    assert lease.record_request("job", token("token-a"), record, DAY) is True
    assert lease.release_with_record("job", token("token-a"), start, 60.0) is True
    second = _holder(lease, "token-b")
    assert (second.last_start, second.last_request) == (start, record)
    shorter = _request(second.fencing_token, "short")
    assert lease.record_request("job", token("token-b"), shorter, DAY) is True  # no tail of the long one is left
    assert lease.release("job", token("token-b")) is True
    assert _next_request(lease, "token-c") == shorter


@pytest.mark.parametrize("kind", ["redis", "redlock"])
def test_redis_request_record_expires_with_its_ttl(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lease = sync_backend(kind, tmp_path, request)
    try:
        grant = _holder(lease, "token-a")
        assert lease.record_request("job", token("token-a"), _request(grant.fencing_token), 0.05) is True
        assert lease.release("job", token("token-a")) is True
        poll_until(lambda: _next_request(lease, "token-b") is None, 30, "the request record to expire")
        grant = _holder(lease, "token-c")
        assert lease.record_request("job", token("token-c"), _request(grant.fencing_token), DAY) is True
        keys = lease._keys
        assert keys.request("job").endswith(":request") and keys.request("job") in keys.acquire_keys("job")
        servers: list[RedisServer] = (
            request.getfixturevalue("redlock_nodes")
            if kind == "redlock"
            else [request.getfixturevalue("strict_singleton_redis")]
        )
        for server in servers:
            pttl = redis.Redis(port=server.port).pttl(keys.request("job"))
            assert 0 < pttl <= DAY * 1000  # kept for the caller's long TTL, by Redis's clock
    finally:
        lease.close()


def test_redis_acquire_reads_both_records_in_its_one_command(strict_singleton_redis: RedisServer) -> None:
    client = redis.Redis(port=strict_singleton_redis.port)
    lease = RedisLease(client)
    grant = _holder(lease, "token-a")  # the first acquire also reads maxmemory-policy, once
    record = _request(grant.fencing_token)
    assert lease.record_request("job", token("token-a"), record, DAY) is True
    assert lease.release("job", token("token-a")) is True
    sent: list[str] = []
    real = client.execute_command

    def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return real(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    again = _holder(lease, "token-b")
    assert sent == ["EVALSHA"]  # one round trip, as before the request record
    assert again.last_request == record
    lease.close()


FILE_RECORD_WIDTH = 100  # the start record's slot in a lock file, after the 20-digit counter


def test_file_lock_files_without_a_request_slot_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = FileLease(tmp_path)
    start = _record(7)
    # A file from before the request slot: the counter, then the padded start record.
    lease.lock_path("old").write_bytes(f"{6:020d}".encode() + start.encode().encode().ljust(FILE_RECORD_WIDTH))
    lease.lock_path("bare").write_bytes(f"{3:020d}".encode())  # an even older one: the counter only
    grant = lease.acquire("old", token("token-a"), 15.0)
    assert grant is not None and (grant.fencing_token, grant.last_start, grant.last_request) == (7, start, None)
    bare = lease.acquire("bare", token("token-a"), 15.0)
    assert bare is not None and (bare.fencing_token, bare.last_start, bare.last_request) == (4, None, None)
    for iid, fence in (("old", 7), ("bare", 4)):
        assert lease.record_request(iid, token("token-a"), _request(fence, f"{iid}-request"), DAY) is True
        assert lease.release(iid, token("token-a")) is True
    reads: list[int] = []
    real_pread = os.pread

    def counted(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counted)
    grant = lease.acquire("old", token("token-b"), 15.0)
    assert len(reads) == 1  # the counter and both records in one read
    assert grant is not None and grant.last_start == start and grant.last_request == _request(7, "old-request")
    bare = lease.acquire("bare", token("token-b"), 15.0)
    assert bare is not None and bare.last_start is None and bare.last_request == _request(4, "bare-request")
    assert bare.fencing_token == 5
    lease.close()


# -- Redlock: request records need a majority ---------------------------------------------


class _Flaky:
    """A redis client (sync or asyncio) whose scripts fail as if the node were unreachable while ``down``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.down = False

    def register_script(self, text: str) -> Any:
        script = self._client.register_script(text)

        def refuse() -> None:
            if self.down:
                raise redis.exceptions.ConnectionError("simulated: node unreachable")

        if isinstance(self._client, aioredis.Redis):

            async def call_async(*a: Any, **k: Any) -> Any:
                refuse()
                return await script(*a, **k)

            return call_async

        def call(*a: Any, **k: Any) -> Any:
            refuse()
            return script(*a, **k)

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _redlock(ports: list[int], api: str, *, flaky: bool = False) -> tuple[Any, list[Any]]:
    """A Redlock lease over ``ports`` (driven through SyncAdapter when async) and its node clients."""
    if api == "async":
        retry: Any = AsyncRetry(NoBackoff(), 1)
        clients: list[Any] = [
            aioredis.Redis(port=p, socket_connect_timeout=0.5, socket_timeout=0.5, retry=retry) for p in ports
        ]
    else:
        clients = [
            redis.Redis(port=p, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 1))
            for p in ports
        ]
    nodes = [_Flaky(c) for c in clients] if flaky else clients
    if api == "async":
        return SyncAdapter(AsyncRedlockLease(nodes, node_timeout=0.5)), nodes
    return RedlockLease(nodes, node_timeout=0.5), nodes


def _close(lease: Any) -> None:
    if isinstance(lease, SyncAdapter):
        lease.shutdown()
    else:
        lease.close()


@pytest.fixture
def stoppable_nodes() -> Iterator[list[RedisServer]]:
    """Three private Redlock masters that a test may stop and start again."""
    servers = [RedisServer().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_redlock_request_record_on_too_few_nodes_fails_like_the_start_record(
    stoppable_nodes: list[RedisServer], api: str
) -> None:
    lease, _ = _redlock([s.port for s in stoppable_nodes], api)
    try:
        grant = _holder(lease, "token-a")
        stoppable_nodes[1].stop()
        stoppable_nodes[2].stop()
        # Two of three nodes down: they could have made the majority, so the store is unavailable.
        with pytest.raises(LockUnavailableError, match=r"request record stored on 1 of 3 Redlock nodes") as info:
            lease.record_request("job", token("token-a"), _request(grant.fencing_token), DAY)
        assert info.value.instance_id == "job"
        with pytest.raises(LockUnavailableError, match=r"start record stored on 1 of 3 Redlock nodes"):
            lease.record_start("job", token("token-a"), _record(grant.fencing_token), 60.0)
        # Back without their data: the lease is ours on node 0 only, so no majority can store it.
        stoppable_nodes[1].restart()
        stoppable_nodes[2].restart()
        assert lease.record_request("job", token("token-a"), _request(grant.fencing_token), DAY) is False
        assert lease.record_start("job", token("token-a"), _record(grant.fencing_token), 60.0) is False
    finally:
        _close(lease)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_redlock_request_record_on_a_majority_is_seen_by_other_majorities(
    redlock_nodes: list[RedisServer], api: str
) -> None:
    lease, nodes = _redlock([s.port for s in redlock_nodes], api, flaky=True)
    try:
        stored: list[RequestRecord] = []
        # Round 0 writes on all three nodes, each later one on a bare majority, and every
        # round first reads through a different majority, whose first or last node (in
        # node order) still has an older record: only the highest fencing token is right.
        for round_no, down in enumerate([(), (0,), (2,), (1,)]):
            for i, node in enumerate(nodes):
                node.down = i in down
            grant = _holder(lease, f"t{round_no}")
            if stored:
                assert grant.last_request == stored[-1], f"round {round_no}, nodes down: {down}"
            if round_no < 3:
                record = _request(grant.fencing_token, f"request-{round_no}")
                assert lease.record_request("job", token(f"t{round_no}"), record, DAY) is True
                stored.append(record)
            assert lease.release("job", token(f"t{round_no}")) is True
        for i, node in enumerate(nodes):
            node.down = i == 0  # the last record's majority was {0, 1}; this one is {1, 2}
        assert _next_request(lease, "last") == stored[-1]
    finally:
        _close(lease)


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
    for iid in ["job", "a}b", "{x}", "ünï/%?#", "}x", ""]:
        keys = lease._keys
        slots = {key_slot(k.encode()) for k in [*keys.acquire_keys(iid), keys.channel(iid)]}
        assert len(slots) == 1, iid  # lock, fence, start and request records, channel
        assert len(set(keys.acquire_keys(iid))) == 4
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
