"""Redis Cluster: every key of one instance ID lies in one slot, whatever the ID holds.

Cluster hashes only a key's hash tag, the text between its first ``{`` and the next
``}``, when that text is not empty. A Lua script whose keys lie in different slots is
refused, so the lock and fence keys of an ID must always share a slot.

The lease is driven on a real three-master cluster started by the module fixture.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio.cluster as aiocluster
import redis.cluster
import redis.exceptions
from redis.crc import key_slot

from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends import _redis_common
from strict_singleton.lock_backends._redis_common import DEFAULT_PREFIX, RedisKeys
from strict_singleton.lock_backends.base import Grant
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.testing.redis_cluster import RedisCluster3
from suite_helpers import poll_until, token

# IDs whose braces once split the lock and the fence key over two slots, and ordinary ones.
AWKWARD_IDS = ["}abc", "{x}y", "a}b{c", "{", "}", "}{", "{}", "}}", "a}", "}:lock", "ünï/%?#"]
PLAIN_IDS = ["job", "orders/2024-06", "a b"]
ASYNC_CLUSTER_PUBSUB = hasattr(aiocluster.RedisCluster, "pubsub")


def keys_of() -> RedisKeys:
    return RedisKeys(DEFAULT_PREFIX, "test")


@pytest.mark.parametrize("iid", AWKWARD_IDS + PLAIN_IDS + [""])
def test_every_key_of_an_id_hashes_to_one_slot(iid: str) -> None:
    keys = keys_of()
    slots = {key_slot(k.encode()) for k in (keys.lock(iid), keys.fence(iid), keys.channel(iid))}
    assert len(slots) == 1, f"{iid!r}: lock {keys.lock(iid)!r}, fence {keys.fence(iid)!r} in slots {slots}"
    assert keys.instance_of_channel(keys.channel(iid)) == iid
    assert keys.instance_of_channel(keys.channel(iid).encode()) == iid


def test_keys_are_distinct_for_distinct_ids() -> None:
    keys = keys_of()
    ids = [*AWKWARD_IDS, *PLAIN_IDS, ""]
    every = [k for iid in ids for k in (keys.lock(iid), keys.fence(iid), keys.channel(iid))]
    assert len(set(every)) == len(every)


def test_foreign_channels_map_to_no_instance() -> None:
    keys = keys_of()
    digest_form = keys.channel("}abc")
    assert digest_form.startswith(f"{DEFAULT_PREFIX}#{{") and digest_form.endswith(":released:}abc")
    for channel in [
        "other:{job}:released",
        f"{DEFAULT_PREFIX}{{job}}:lock",
        digest_form.replace(":released:}abc", ":released:}abd"),  # the digest is of another ID
        f"{DEFAULT_PREFIX}#{{}}:released:",
        DEFAULT_PREFIX,
    ]:
        assert keys.instance_of_channel(channel) is None, channel


def test_keys_of_ordinary_ids_are_unchanged() -> None:
    """Processes of older releases must keep locking the same key for the same ID."""
    keys = keys_of()
    assert keys.lock("job") == "strict-singleton:{job}:lock"
    assert keys.fence("job") == "strict-singleton:{job}:fence"
    assert keys.channel("job") == "strict-singleton:{job}:released"
    assert keys.lock("a}b{c") == "strict-singleton:{a}b{c}:lock"  # its tag "a" is never empty


@pytest.fixture
def long_quiet_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter that returns was woken by a release message, not by its quiet wait's end."""
    monkeypatch.setattr(_redis_common, "MAX_QUIET_WAIT", 120.0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster3]:
    with RedisCluster3() as c:
        yield c


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"  # the module shares one cluster: fresh keys per test


@pytest.mark.redis
@pytest.mark.parametrize("iid", AWKWARD_IDS + PLAIN_IDS[:1])
def test_lease_on_a_real_cluster_sync(cluster: RedisCluster3, iid: str, long_quiet_wait: None) -> None:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=5)
    lease = RedisLease(client, prefix=fresh_prefix())
    try:
        assert lease.acquire(iid, token("a"), 15.0) == Grant(fencing_token=1, valid_for=15.0)
        assert lease.acquire(iid, token("b"), 15.0) is None
        assert lease.extend(iid, token("a"), 15.0) is True
        assert lease.extend(iid, token("b"), 15.0) is False
        assert lease.release(iid, token("b")) is False

        woke = threading.Event()
        waiter = threading.Thread(target=lambda: (lease.wait_for_release(iid, 120.0), woke.set()), daemon=True)
        waiter.start()
        poll_until(lambda: lease._interest.channels(confirmed=True) != [], 10, "the waiter's subscription")
        assert lease._live, "the release listener did not subscribe on the cluster"
        assert lease.release(iid, token("a")) is True
        assert woke.wait(10.0), "the release message never reached the waiter"  # not its 120 s quiet wait
        waiter.join()

        lease.wait_for_release(iid, 10.0)  # free: returns without waiting out the timeout
        assert lease.acquire(iid, token("b"), 15.0) == Grant(fencing_token=2, valid_for=15.0)
        assert client.pttl(lease._keys.lock(iid)) > 0
    finally:
        lease.close()
        client.close()


@pytest.mark.redis
@pytest.mark.parametrize("iid", AWKWARD_IDS[:5])
def test_lease_on_a_real_cluster_async(cluster: RedisCluster3, iid: str, long_quiet_wait: None) -> None:
    async def main() -> None:
        client: Any = aiocluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=5)
        lease = AsyncRedisLease(client, prefix=fresh_prefix())
        try:
            assert await lease.acquire(iid, token("a"), 15.0) == Grant(fencing_token=1, valid_for=15.0)
            assert await lease.acquire(iid, token("b"), 15.0) is None
            assert await lease.extend(iid, token("a"), 15.0) is True
            assert await lease.extend(iid, token("b"), 15.0) is False
            if ASYNC_CLUSTER_PUBSUB:  # newer in redis-py; without it waiters poll
                waiter = asyncio.create_task(lease.wait_for_release(iid, 120.0))
                for _ in range(1000):
                    if lease._interest.channels(confirmed=True):
                        break
                    await asyncio.sleep(0.01)  # lets the listener run; the loop bound fails the test
                assert lease._live, "the release listener did not subscribe on the cluster"
                assert await lease.release(iid, token("a")) is True
                await asyncio.wait_for(waiter, 10.0)  # woken by the message, not its 120 s quiet wait
            else:
                assert await lease.release(iid, token("a")) is True
            await lease.wait_for_release(iid, 10.0)
            assert await lease.acquire(iid, token("b"), 15.0) == Grant(fencing_token=2, valid_for=15.0)
        finally:
            await lease.close()
            await client.aclose()

    asyncio.run(main())


@pytest.mark.redis
def test_cluster_errors_are_lock_unavailable() -> None:
    """redis-py's RedisClusterException is no RedisError: it must not escape raw."""
    with RedisCluster3() as private:
        port = private.ports[0]
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2)
        lease = RedisLease(client)
        try:
            assert lease.acquire("job", token("a"), 15.0) is not None
            private.stop()
            with pytest.raises(LockUnavailableError) as caught:
                lease.acquire("other", token("a"), 15.0)
            # The cluster's own error, whatever redis-py calls it in this release, chained as the cause.
            assert isinstance(caught.value.__cause__, redis.exceptions.RedisClusterException), caught.value.__cause__
            assert not caught.value.maybe_scheduled
            assert caught.value.instance_id == "other" and caught.value.backend == lease.name
            assert f"[backend={lease.name}]" in str(caught.value)
            assert lease.name == f"redis-cluster(127.0.0.1:{port})"
        finally:
            lease.close()
            client.close()
