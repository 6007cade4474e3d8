"""Redlock: a lease held on a majority of N independent Redis masters.

See :mod:`strict_singleton.lock_backends._redlock_common` for the quorum, validity and
fencing rules. Keys, scripts and tokens are the same as :class:`RedisLease`'s, so each
node holds an ordinary token-checked lease.

Records: ``record_start``/``release_with_record`` and ``record_request`` succeed only
once a majority of nodes stored the record while ``token`` held the lease there (each
node's write is token-checked, as on :class:`RedisLease`); ``acquire`` returns the
newest start record and the newest request record (highest fencing token) among the
nodes that granted it. Every later majority overlaps the one that stored a record, so
it sees that record or a newer one. A write that reaches too few nodes raises
``LockUnavailableError`` with the lease still held when the nodes that erred could
have made up the majority, else returns ``False``; the request record lives in its own
``:request`` key, which no other call writes or deletes.

Assumptions: the nodes are independent masters (not replicas of each other: replicas
lose locks on failover); a node that restarts should stay down for at least one TTL
or persist its data, else a majority may forget a held lease. Each node must meet the
requirements of :mod:`strict_singleton.lock_backends.redis` (``noeviction``, a slewed
clock): a node that drops a held key hands its vote to the next caller. Each node's
``maxmemory-policy`` is read once per lease object, at its first acquire, with a
WARNING for an evicting one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import Any

from strict_singleton.errors import LockUnavailableError
from strict_singleton.lock_backends._redis_common import (
    ACQUIRE_SCRIPT,
    DEFAULT_PREFIX,
    EXTEND_SCRIPT,
    RECORD_SCRIPT,
    RELEASE_SCRIPT,
    EvictionCheck,
    RedisKeys,
    parse_acquire,
    ttl_ms,
    validate_redis_ttl,
)
from strict_singleton.lock_backends._redlock_common import (
    DEFAULT_NODE_TIMEOUT,
    RAISE_FENCE_SCRIPT,
    NodeAnswers,
    describe_nodes,
    quorum,
    unavailable,
    validate_nodes,
    validity,
)
from strict_singleton.lock_backends._wakeups import RELEASES, wait_async, wait_sync
from strict_singleton.lock_backends.base import Grant, RequestRecord, StartRecord, newest
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease

POLL = 0.02  # waiters in other processes re-check this often (no pub/sub across a quorum)


class _RedlockBase:
    """Construction and naming shared by the sync and async Redlock leases."""

    _listener_class: type[Any]

    def __init__(
        self,
        clients: Sequence[Any],
        *,
        prefix: str = DEFAULT_PREFIX,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        name: str | None = None,
    ) -> None:
        self._name = name or describe_nodes(list(clients))
        self._nodes = validate_nodes(clients, node_timeout, self._name)
        self._keys = RedisKeys(prefix, self._name)
        self._timeout = float(node_timeout)
        self._scripts = [
            {
                "acquire": c.register_script(ACQUIRE_SCRIPT),
                "release": c.register_script(RELEASE_SCRIPT),
                "record": c.register_script(RECORD_SCRIPT),
                "extend": c.register_script(EXTEND_SCRIPT),
                "fence": c.register_script(RAISE_FENCE_SCRIPT),
            }
            for c in self._nodes
        ]
        # Waiters listen on one node's release channel (every node publishes on release);
        # if that node is down they fall back to short polling.
        self._listener = self._listener_class(self._nodes[0], prefix=prefix, name=f"{self._name}#0")
        self._eviction = [EvictionCheck() for _ in self._nodes]
        self._open()

    def _open(self) -> None:
        """Set up the I/O machinery of the sync or async twin."""

    def _policy_checks_due(self) -> set[int]:
        return {i for i, check in enumerate(self._eviction) if check.take()}

    def _policy_answers(self, due: set[int], results: list[tuple[bool, Any]]) -> None:
        for i in sorted(due):
            ok, value = results[i]
            self._eviction[i].answer(value if ok else None, error=None if ok else value, backend=f"{self._name}#{i}")

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, nodes={len(self._nodes)}, node_timeout={self._timeout})"

    def validate_ttl(self, ttl: float) -> None:
        validate_redis_ttl(ttl, self._name)


class RedlockLease(_RedlockBase):
    """A lease on a majority of independent Redis masters, for the sync starter.

    Args:
        clients: one ``redis.Redis`` per independent master (at least 3; 5 recommended).
            Give them socket timeouts: a node that hangs holds a worker thread until
            its client times out, although the quorum decision never waits for it.
        prefix: key prefix, as for :class:`RedisLease`.
        node_timeout: seconds each node gets to answer an acquire, extend or release
            before it counts as down (default 1 s).
        name: display name; defaults to ``redlock[host:port/db,...]``.
    """

    _listener_class = RedisLease

    def _open(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4 * len(self._nodes), thread_name_prefix="strict-singleton-redlock"
        )

    def _fan_out(self, call: Callable[[int], Any], timeout: float) -> list[tuple[bool, Any]]:
        """Run ``call(i)`` on every node at once; (ok, value-or-error) per node."""
        futures = [self._pool.submit(call, i) for i in range(len(self._nodes))]
        done, _ = concurrent.futures.wait(futures, timeout=timeout)
        out: list[tuple[bool, Any]] = []
        for f in futures:
            if f not in done:
                out.append((False, TimeoutError(f"no answer within {timeout * 1000:.0f} ms")))
            elif f.exception() is not None:
                out.append((False, f.exception()))
            else:
                out.append((True, f.result()))
        return out

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        due = self._policy_checks_due()
        if due:
            nodes = self._nodes
            read = self._fan_out(lambda i: nodes[i].config_get("maxmemory-policy") if i in due else None, self._timeout)
            self._policy_answers(due, read)
        keys = self._keys.acquire_keys(instance_id)
        started = time.monotonic()
        results = _parsed(
            self._fan_out(lambda i: self._scripts[i]["acquire"](keys=keys, args=[token, ttl_ms(ttl)]), self._timeout)
        )
        answers = _answers(results)
        verdict = answers.decide(len(self._nodes))
        if verdict == "granted":
            fence = max(answers.fences)
            granted = [i for i, (ok, v) in enumerate(results) if ok and v[0] > 0]
            raised = self._fan_out(
                lambda i: self._scripts[i]["fence"](keys=keys, args=[token, fence]) if i in granted else 0,
                self._timeout,
            )
            confirmed = sum(1 for ok, v in raised if ok and int(v) == 1)
            left = validity(ttl, time.monotonic() - started)
            if confirmed >= quorum(len(self._nodes)) and left > 0:
                return Grant(fencing_token=fence, valid_for=left, **_last_records(results))
            verdict = "held"  # too slow or lost nodes meanwhile: give it all back
        self.release(instance_id, token)
        if verdict == "unavailable":
            raise unavailable(answers, len(self._nodes), instance_id=instance_id, backend=self._name)
        return None

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        key = [self._keys.lock(instance_id)]
        results = self._fan_out(
            lambda i: self._scripts[i]["extend"](keys=key, args=[token, ttl_ms(ttl)]), self._timeout
        )
        return sum(1 for ok, v in results if ok and int(v) == 1) >= quorum(len(self._nodes))

    def release(self, instance_id: str, token: str) -> bool:
        key = [self._keys.lock(instance_id)]
        channel = self._keys.channel(instance_id)
        results = self._fan_out(lambda i: self._scripts[i]["release"](keys=key, args=[token, channel]), self._timeout)
        released = any(ok and int(v) == 1 for ok, v in results)
        if released:
            RELEASES.notify(f"{self._name}|{instance_id}")
        return released

    def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        args = [token, record.encode(), ttl_ms(ttl)]
        results = self._fan_out(lambda i: self._scripts[i]["record"](keys=keys, args=args), self._timeout)
        return _recorded(results, len(self._nodes), instance_id=instance_id, backend=self._name)

    def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        """The request record on a majority of nodes, each only while ``token`` holds it there (kept).

        ``True`` once a majority stored it; ``False`` when too few nodes hold the lease for
        ``token`` to make a majority; ``LockUnavailableError`` (the lease still held) when
        only the nodes that erred could have made up the majority.
        """
        keys = [self._keys.lock(instance_id), self._keys.request(instance_id)]
        args = [token, record.encode(), ttl_ms(ttl)]
        results = self._fan_out(lambda i: self._scripts[i]["record"](keys=keys, args=args), self._timeout)
        return _recorded(results, len(self._nodes), instance_id=instance_id, backend=self._name, what="request record")

    def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """Two steps, so a failure leaves the lease held: the record on a majority, then the release."""
        stored = self.record_start(instance_id, token, record, ttl)  # raises with the lease still ours
        self.release(instance_id, token)
        return stored

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        try:
            self._listener.wait_for_release(instance_id, timeout)
        except LockUnavailableError:
            wait_sync(f"{self._name}|{instance_id}", min(timeout, POLL))

    def close(self) -> None:
        self._listener.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class AsyncRedlockLease(_RedlockBase):
    """The asyncio twin of :class:`RedlockLease`, over ``redis.asyncio.Redis`` clients."""

    _listener_class = AsyncRedisLease

    async def _fan_out(self, call: Callable[[int], Any]) -> list[tuple[bool, Any]]:
        async def one(i: int) -> tuple[bool, Any]:
            try:
                return True, await asyncio.wait_for(call(i), self._timeout)
            except asyncio.TimeoutError:
                return False, TimeoutError(f"no answer within {self._timeout * 1000:.0f} ms")
            except Exception as exc:
                return False, exc

        return list(await asyncio.gather(*(one(i) for i in range(len(self._nodes)))))

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        due = self._policy_checks_due()
        if due:

            async def read_policy(i: int) -> Any:
                return await self._nodes[i].config_get("maxmemory-policy") if i in due else None

            self._policy_answers(due, await self._fan_out(read_policy))
        keys = self._keys.acquire_keys(instance_id)
        started = time.monotonic()
        results = _parsed(
            await self._fan_out(lambda i: self._scripts[i]["acquire"](keys=keys, args=[token, ttl_ms(ttl)]))
        )
        answers = _answers(results)
        verdict = answers.decide(len(self._nodes))
        if verdict == "granted":
            fence = max(answers.fences)
            granted = {i for i, (ok, v) in enumerate(results) if ok and v[0] > 0}

            async def raise_fence(i: int) -> Any:
                return await self._scripts[i]["fence"](keys=keys, args=[token, fence]) if i in granted else 0

            raised = await self._fan_out(raise_fence)
            confirmed = sum(1 for ok, v in raised if ok and int(v) == 1)
            left = validity(ttl, time.monotonic() - started)
            if confirmed >= quorum(len(self._nodes)) and left > 0:
                return Grant(fencing_token=fence, valid_for=left, **_last_records(results))
            verdict = "held"
        await self.release(instance_id, token)
        if verdict == "unavailable":
            raise unavailable(answers, len(self._nodes), instance_id=instance_id, backend=self._name)
        return None

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        key = [self._keys.lock(instance_id)]
        results = await self._fan_out(lambda i: self._scripts[i]["extend"](keys=key, args=[token, ttl_ms(ttl)]))
        return sum(1 for ok, v in results if ok and int(v) == 1) >= quorum(len(self._nodes))

    async def release(self, instance_id: str, token: str) -> bool:
        key = [self._keys.lock(instance_id)]
        channel = self._keys.channel(instance_id)
        results = await self._fan_out(lambda i: self._scripts[i]["release"](keys=key, args=[token, channel]))
        released = any(ok and int(v) == 1 for ok, v in results)
        if released:
            RELEASES.notify(f"{self._name}|{instance_id}")
        return released

    async def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.start(instance_id)]
        args = [token, record.encode(), ttl_ms(ttl)]
        results = await self._fan_out(lambda i: self._scripts[i]["record"](keys=keys, args=args))
        return _recorded(results, len(self._nodes), instance_id=instance_id, backend=self._name)

    async def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        keys = [self._keys.lock(instance_id), self._keys.request(instance_id)]
        args = [token, record.encode(), ttl_ms(ttl)]
        results = await self._fan_out(lambda i: self._scripts[i]["record"](keys=keys, args=args))
        return _recorded(results, len(self._nodes), instance_id=instance_id, backend=self._name, what="request record")

    async def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """Two steps, so a failure leaves the lease held: the record on a majority, then the release."""
        stored = await self.record_start(instance_id, token, record, ttl)  # raises with the lease still ours
        await self.release(instance_id, token)
        return stored

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        try:
            await self._listener.wait_for_release(instance_id, timeout)
        except LockUnavailableError:
            await wait_async(f"{self._name}|{instance_id}", min(timeout, POLL))

    async def close(self) -> None:
        await self._listener.close()


def _parsed(results: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """Acquire replies as (ok, (fence, start record, its PTTL, request record)); errors and
    replies that do not parse stay errors."""
    out: list[tuple[bool, Any]] = []
    for ok, value in results:
        if not ok:
            out.append((False, value))
            continue
        try:
            out.append((True, parse_acquire(value)))
        except (TypeError, ValueError) as exc:
            out.append((False, exc))
    return out


def _answers(results: list[tuple[bool, Any]]) -> NodeAnswers:
    fences: list[int] = []
    held = 0
    down: list[str] = []
    for i, (ok, value) in enumerate(results):
        if not ok:
            down.append(f"node {i}: {type(value).__name__}: {value}")
        elif value[0] > 0:
            fences.append(value[0])
        else:
            held += 1
    return NodeAnswers(fences=fences, held=held, down=down)


def _last_records(results: list[tuple[bool, Any]]) -> dict[str, Any]:
    """The newest start record among the granting nodes (any later majority overlaps the
    majority that stored it), the longest any of them keeps it, and the newest request
    record among them: ``Grant`` keyword arguments."""
    granted = [value for ok, value in results if ok and value[0] > 0]
    record = newest([value[1] for value in granted])
    lefts = [value[2] for value in granted if record is not None and value[1] == record and value[2] is not None]
    return {
        "last_start": record,
        "last_start_left": max(lefts) if lefts else None,
        "last_request": newest([value[3] for value in granted]),
    }


def _recorded(
    results: list[tuple[bool, Any]], n: int, *, instance_id: str, backend: str, what: str = "start record"
) -> bool:
    """Whether a majority stored the record under our token; raises if the nodes that erred leave it open.

    The record must sit on a majority so that every later majority, whose acquire
    returns the newest record among its nodes, includes a node that has it.
    """
    stored = sum(1 for ok, v in results if ok and int(v) == 1)
    if stored >= quorum(n):
        return True
    down = [f"node {i}: {type(v).__name__}: {v}" for i, (ok, v) in enumerate(results) if not ok]
    if stored + len(down) >= quorum(n):
        raise LockUnavailableError(
            f"{what} stored on {stored} of {n} Redlock nodes (a majority of {quorum(n)} is needed; "
            "the lease is still held): " + "; ".join(down),
            instance_id=instance_id,
            backend=backend,
        )
    return False


__all__ = ["AsyncRedlockLease", "RedlockLease"]
