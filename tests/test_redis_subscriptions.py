"""Redis release wake-ups reach only the hosts waiting for that ID.

A lease's listener is subscribed to the release channels of exactly the IDs its process
is waiting for: no pattern subscription, one subscription per ID however many callers
wait for it, and none left once they stop waiting. Checked on real redis-servers (and a
real 3-primary Cluster), sync and async, by what the server reports (``PUBSUB NUMPAT``,
``NUMSUB``) and by which IDs the listener was told about.

``MAX_QUIET_WAIT`` is raised in these tests so that a waiter that returns was woken by a
message: otherwise it would sit out the quiet wait, far beyond every bound used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from strict_singleton.lock_backends import _redis_common
from strict_singleton.lock_backends._subscriptions import ChannelInterest
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.testing import RedisServer
from suite_helpers import poll_until, token

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def long_quiet_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redis_common, "MAX_QUIET_WAIT", 120.0)


def heard_by(lease: Any) -> list[str]:
    """Every instance ID the lease's listener is told was released (the real board still notifies)."""
    heard: list[str] = []
    notify = lease._waiters.notify

    def spy(key: str) -> None:
        heard.append(key)
        notify(key)

    lease._waiters.notify = spy
    return heard


def waiter_thread(lease: RedisLease, iid: str) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        lease.wait_for_release(iid, 120.0)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def numsub(admin: redis.Redis, channel: str) -> int:
    return int(dict(admin.pubsub_numsub(channel))[channel.encode()])


@pytest.fixture
def admin(strict_singleton_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=strict_singleton_redis.port)
    yield client
    client.close()


def test_a_host_is_subscribed_only_to_the_ids_it_waits_for(
    strict_singleton_redis: RedisServer, admin: redis.Redis
) -> None:
    holder = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="scoped:")
    host = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="scoped:")
    keys = host._keys
    heard = heard_by(host)
    try:
        for iid in ("a", "b", "}digest-form"):
            assert holder.acquire(iid, token("holder"), 60.0) is not None
        waiters = [waiter_thread(host, iid) for iid in ("a", "a", "a", "}digest-form")]
        both = sorted([keys.channel("a"), keys.channel("}digest-form")])
        poll_until(
            lambda: host._interest.channels(confirmed=True) == both,
            10,
            "the waiters' subscriptions to be confirmed",
        )
        assert admin.pubsub_numpat() == 0  # no pattern subscription anywhere
        assert numsub(admin, keys.channel("a")) == 1  # three callers, one subscription
        assert numsub(admin, keys.channel("b")) == 0  # nobody here waits for b

        assert holder.release("b", token("holder"))  # delivered to no one
        assert holder.release("a", token("holder"))
        for t, done in waiters[:3]:
            assert done.wait(10), "a waiter for a was not woken by its release"
            t.join()
        assert not waiters[3][1].is_set()  # the digest-form ID is still held
        poll_until(lambda: numsub(admin, keys.channel("a")) == 0, 10, "the last waiter for a to unsubscribe")
        assert "b" not in heard and "a" in heard

        assert holder.release("}digest-form", token("holder"))
        assert waiters[3][1].wait(10), "the digest-form waiter was not woken"
        poll_until(lambda: host._interest.channels() == [], 10, "every channel to be left")
        poll_until(lambda: admin.pubsub_channels("scoped:*") == [], 10, "no subscription left at the server")
    finally:
        holder.close()
        host.close()


def test_waiters_that_come_and_go_never_miss_a_release(strict_singleton_redis: RedisServer) -> None:
    """Subscribe and unsubscribe churn on one channel: every waiter that saw the lease held is
    woken by the release that follows (its SUBSCRIBE was confirmed before it looked)."""
    holder = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="churn:")
    host = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="churn:")
    try:
        for round_ in range(30):
            assert holder.acquire("c", token(f"h{round_}"), 60.0) is not None
            waiters = [waiter_thread(host, "c") for _ in range(1 + round_ % 4)]
            poll_until(lambda: host._interest.channels(confirmed=True) != [], 10, "a confirmed subscription")
            assert holder.release("c", token(f"h{round_}"))
            for t, done in waiters:
                assert done.wait(10), f"round {round_}: a waiter missed the release"
                t.join()
        poll_until(lambda: host._interest.channels() == [], 10, "every channel to be left")
    finally:
        holder.close()
        host.close()


def test_async_host_is_subscribed_only_to_the_ids_it_waits_for(
    strict_singleton_redis: RedisServer, admin: redis.Redis
) -> None:
    async def main() -> None:
        holder = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="ascoped:")
        host = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="ascoped:")
        keys = host._keys
        heard = heard_by(host)
        try:
            for iid in ("a", "b"):
                assert await holder.acquire(iid, token("holder"), 60.0) is not None
            waits = [asyncio.create_task(host.wait_for_release("a", 120.0)) for _ in range(3)]
            for _ in range(1000):
                if host._interest.channels(confirmed=True) == [keys.channel("a")]:
                    break
                await asyncio.sleep(0.01)  # lets the listener task run; the loop bound fails the test
            assert host._interest.channels(confirmed=True) == [keys.channel("a")]
            assert admin.pubsub_numpat() == 0
            assert numsub(admin, keys.channel("a")) == 1
            assert numsub(admin, keys.channel("b")) == 0
            assert await holder.release("b", token("holder"))
            assert await holder.release("a", token("holder"))
            await asyncio.wait_for(asyncio.gather(*waits), 10)
            assert "b" not in heard and "a" in heard
            for _ in range(1000):
                if host._interest.channels() == [] and numsub(admin, keys.channel("a")) == 0:
                    break
                await asyncio.sleep(0.01)
            assert numsub(admin, keys.channel("a")) == 0
        finally:
            await holder.close()
            await host.close()

    asyncio.run(main())


def test_a_cancelled_async_waiter_leaves_its_channel(strict_singleton_redis: RedisServer, admin: redis.Redis) -> None:
    async def main() -> None:
        holder = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="acancel:")
        host = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="acancel:")
        try:
            assert await holder.acquire("x", token("holder"), 60.0) is not None
            for attempt in range(20):
                wait = asyncio.create_task(host.wait_for_release("x", 120.0))
                for _ in range(attempt % 3):
                    await asyncio.sleep(0)  # cancelled at different points of the join
                wait.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await wait
            for _ in range(1000):
                if host._interest.channels() == [] and numsub(admin, host._keys.channel("x")) == 0:
                    break
                await asyncio.sleep(0.01)
            assert host._interest.channels() == []
            assert numsub(admin, host._keys.channel("x")) == 0
        finally:
            await holder.close()
            await host.close()

    asyncio.run(main())


def test_a_lost_connection_falls_back_to_polling_and_recovers(strict_singleton_redis: RedisServer) -> None:
    """The listener's connection killed by the server: waiters are woken to re-check (and poll
    meanwhile), and the next wait subscribes on a new connection."""
    admin = redis.Redis(port=strict_singleton_redis.port)
    holder = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="lost:")
    host = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="lost:")
    try:
        assert holder.acquire("k", token("holder"), 60.0) is not None
        t, done = waiter_thread(host, "k")
        poll_until(lambda: host._interest.channels(confirmed=True) != [], 10, "a confirmed subscription")
        admin.client_kill_filter(_type="pubsub")
        assert done.wait(10), "the waiter was not woken when its listener's connection died"
        t.join()
        t, done = waiter_thread(host, "k")
        poll_until(lambda: host._interest.channels(confirmed=True) != [], 10, "a new confirmed subscription")
        assert holder.release("k", token("holder"))
        assert done.wait(10), "the waiter on the new connection was not woken"
        t.join()
    finally:
        admin.close()
        holder.close()
        host.close()


# -- the bookkeeping alone -------------------------------------------------------


class Flag:
    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


def test_one_subscribe_per_channel_and_one_unsubscribe_when_the_last_leaves() -> None:
    interest: ChannelInterest[Flag] = ChannelInterest()
    first, send = interest.join("c", Flag())
    assert send
    second, send_again = interest.join("c", Flag())
    assert second is first and not send_again
    assert interest.confirmed("c") is first
    assert interest.confirmed("c") is None  # a re-subscription after a reconnect: not ours
    assert not interest.leave("c", interest.generation)
    assert interest.leave("c", interest.generation)
    assert interest.channels() == []


def test_a_confirmation_owed_to_departed_waiters_is_not_taken_for_a_later_subscribe() -> None:
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE sent before any reply: the first confirmation belongs
    to the first SUBSCRIBE; only the second says the new waiter is subscribed."""
    interest: ChannelInterest[Flag] = ChannelInterest()
    gone, _ = interest.join("c", Flag())
    assert interest.leave("c", interest.generation)
    new, send = interest.join("c", Flag())
    assert send and new is not gone
    assert interest.confirmed("c") is gone
    assert interest.channels(confirmed=True) == []
    assert interest.confirmed("c") is new
    assert interest.channels(confirmed=True) == ["c"]


def test_a_reset_releases_every_waiter_and_ignores_the_old_generation() -> None:
    interest: ChannelInterest[Flag] = ChannelInterest()
    old = interest.generation
    pending, _ = interest.join("c", Flag())
    gone, _ = interest.join("d", Flag())
    assert interest.leave("d", old)
    assert set(map(id, interest.reset())) == {id(pending), id(gone)}
    assert not interest.leave("c", old)  # a waiter of the dead connection changes nothing
    fresh, send = interest.join("c", Flag())
    assert send and fresh is not pending


@pytest.mark.parametrize(
    "steps",
    [
        "jjcllj",
        "jlj",
        "jljlj",
        "jjlljc",
        "jcljcl",
        "jljclc",
    ],
)
def test_confirmations_in_send_order_set_only_live_subscriptions(steps: str) -> None:
    """Model check against a server that processes commands in order: whenever the bookkeeping
    says a channel's subscription is confirmed, the server has it subscribed."""
    interest: ChannelInterest[Flag] = ChannelInterest()
    sent: list[str] = []  # commands not yet answered, in order
    server_subscribed = False
    waiters = 0
    for step in steps:
        if step == "j":
            _, send = interest.join("c", Flag())
            waiters += 1
            if send:
                sent.append("sub")
        elif step == "l" and waiters:
            waiters -= 1
            if interest.leave("c", interest.generation):
                sent.append("unsub")
        elif step == "c" and sent:
            command = sent.pop(0)
            server_subscribed = command == "sub"
            if command == "sub":
                interest.confirmed("c")
        if interest.channels(confirmed=True):
            assert server_subscribed, f"{steps}: told live while the server is not subscribed"
    while sent:  # answer the rest
        command = sent.pop(0)
        server_subscribed = command == "sub"
        if command == "sub":
            interest.confirmed("c")
        if interest.channels(confirmed=True):
            assert server_subscribed


def test_a_dropped_connection_leaves_no_subscription_behind(strict_singleton_redis: RedisServer) -> None:
    """redis-py would reconnect the listener's connection and re-subscribe every channel it
    remembers; instead the listener stops, its connection closes, and nothing stays subscribed."""
    admin = redis.Redis(port=strict_singleton_redis.port)
    holder = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="drop:")
    host = RedisLease(redis.Redis(port=strict_singleton_redis.port), prefix="drop:")
    try:
        for iid in ("a", "b"):
            assert holder.acquire(iid, token("holder"), 60.0) is not None
        for round_ in range(5):
            waiters = [waiter_thread(host, iid) for iid in ("a", "b", "b")]
            poll_until(lambda: len(host._interest.channels(confirmed=True)) == 2, 10, "both subscriptions")
            admin.client_kill_filter(_type="pubsub")
            for t, done in waiters:
                assert done.wait(10), f"round {round_}: a waiter was not woken when its connection died"
                t.join()
            poll_until(lambda: admin.pubsub_channels("drop:*") == [], 10, "no subscription left at the server")
        assert host._interest.channels() == []
    finally:
        admin.close()
        holder.close()
        host.close()


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8])
def test_a_cancelled_async_wait_raises_cancelled(strict_singleton_redis: RedisServer, steps: int) -> None:
    """Cancelled at any point of its wait, a wait ends with CancelledError at once: not after
    its quiet wait (120 s here), and not by returning as if nothing happened."""

    async def main() -> None:
        holder = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="acx:")
        host = AsyncRedisLease(aioredis.Redis(port=strict_singleton_redis.port), prefix="acx:")
        try:
            assert await holder.acquire("x", token("holder"), 60.0) is not None
            await host.wait_for_release("warm-up", 0.01)  # the listener runs, connected
            wait = asyncio.create_task(host.wait_for_release("x", 120.0))
            for _ in range(steps):
                await asyncio.sleep(0)
            wait.cancel()
            done, _ = await asyncio.wait({wait}, timeout=10)
            assert done, "the cancelled wait did not end"
            assert wait.cancelled(), "the cancellation was lost: the wait returned normally"
        finally:
            await holder.close()
            await host.close()

    asyncio.run(main())


def test_a_restart_while_a_waiter_leaves_leaves_no_subscription_behind() -> None:
    """The server frozen while the last waiter of an ID leaves (its UNSUBSCRIBE unprocessed),
    then restarted on the same port: nothing may come back subscribed."""
    with RedisServer() as server:
        holder = RedisLease(redis.Redis(port=server.port), prefix="restart:")
        # No client retries: against the frozen server the waiter's PTTL fails after one socket
        # timeout (redis-py's default retries, each reconnecting, can take far longer under load).
        quick = redis.Redis(port=server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        host = RedisLease(quick, prefix="restart:")
        try:
            assert holder.acquire("a", token("holder"), 60.0) is not None
            t, done = waiter_thread_with_timeout(host, "a", 1.0)
            poll_until(lambda: host._interest.channels(confirmed=True) != [], 10, "a confirmed subscription")
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                assert done.wait(60), "the waiter did not leave"
                t.join()
            finally:
                os.kill(server.pid, signal.SIGCONT)
            server.restart()
            admin = redis.Redis(port=server.port)
            try:
                t, done = waiter_thread_with_timeout(host, "other", 0.01)  # the listener's next use
                assert done.wait(30)
                t.join()
                poll_until(lambda: admin.pubsub_channels("restart:*") == [], 10, "no subscription after the restart")
                assert host._interest.channels() == []
            finally:
                admin.close()
        finally:
            holder.close()
            host.close()


def waiter_thread_with_timeout(lease: RedisLease, iid: str, timeout: float) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):  # a store error is an acceptable end here; hanging is not
            lease.wait_for_release(iid, timeout)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done
