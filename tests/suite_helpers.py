"""Constants and helpers shared by the test modules (importable by name; conftest is not)."""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from strict_singleton.testing import RedisServer

T = TypeVar("T")

LOCK_KINDS = ["file", "redis", "blob", "redlock"]


def token(name: str) -> str:
    """A stable owner token for readable tests (Blob lease IDs must be GUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"strict-singleton-test/{name}"))


class FakeClock:
    """An injectable monotonic clock that tests move forward by hand (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class WatchedLock:
    """A real lease backend, watched (a spy, not a stand-in: every call reaches the backend).

    Each ``wait_for_release`` records its timeout in ``waits`` and sets ``waiting`` as it
    begins; each release (plain, or leaving a start record) records its instance ID in
    ``releases``. With a ``clock``, the clock is advanced by the timeout when the real wait
    returns, so a starter built with that clock counts exactly the time it asked to wait.
    Wraps sync and async backends alike (an async backend gets an async ``wait_for_release``).
    """

    def __new__(cls, lock: Any, clock: FakeClock | None = None) -> WatchedLock:
        if cls is WatchedLock and inspect.iscoroutinefunction(lock.wait_for_release):
            cls = AsyncWatchedLock
        return super().__new__(cls)

    def __init__(self, lock: Any, clock: FakeClock | None = None) -> None:
        self.lock = lock
        self.clock = clock
        self.waits: list[float] = []
        self.waiting = threading.Event()
        self.releases: list[str] = []  # instance IDs the starter released

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lock, name)

    def _begin(self, timeout: float) -> None:
        self.waits.append(timeout)
        self.waiting.set()

    def _end(self, timeout: float) -> None:
        if self.clock is not None:
            self.clock.advance(timeout)

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        self._begin(timeout)
        self.lock.wait_for_release(instance_id, timeout)
        self._end(timeout)

    def release(self, instance_id: str, token: str) -> bool:
        self.releases.append(instance_id)
        return bool(self.lock.release(instance_id, token))

    def release_with_record(self, instance_id: str, token: str, record: Any, ttl: float) -> bool:
        self.releases.append(instance_id)
        return bool(self.lock.release_with_record(instance_id, token, record, ttl))


class AsyncWatchedLock(WatchedLock):
    async def wait_for_release(self, instance_id: str, timeout: float) -> None:  # type: ignore[override]
        self._begin(timeout)
        await self.lock.wait_for_release(instance_id, timeout)
        self._end(timeout)

    async def release(self, instance_id: str, token: str) -> bool:  # type: ignore[override]
        self.releases.append(instance_id)
        return bool(await self.lock.release(instance_id, token))

    async def release_with_record(  # type: ignore[override]
        self, instance_id: str, token: str, record: Any, ttl: float
    ) -> bool:
        self.releases.append(instance_id)
        return bool(await self.lock.release_with_record(instance_id, token, record, ttl))


def poll_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Bounded polling on a condition (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def finishes(fn: Callable[[], T], *, within: float, what: str) -> T:
    """``fn()`` on a helper thread; its result once it returns, or AssertionError if it has
    not returned within ``within`` seconds (a bound on a condition, not a timing claim:
    pick ``within`` far from both the expected and the failing duration)."""
    done = threading.Event()
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name=f"finishes-{what}").start()
    if not done.wait(within):
        raise AssertionError(f"{what} did not finish within {within} s")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def wait_for_finish(ctx: Any, _: Any) -> Any:
    """An orchestrator that stays running until it gets a "finish" event."""
    done = yield ctx.wait_for_external_event("finish")
    return done


@contextlib.contextmanager
def running_worker(address: str, *orchestrators: Any) -> Iterator[Any]:
    """A real TaskHubGrpcWorker executing ``orchestrators`` against the backend at ``address``."""
    from durabletask.worker import TaskHubGrpcWorker

    worker = TaskHubGrpcWorker(host_address=address)
    for orchestrator in orchestrators:
        worker.add_orchestrator(orchestrator)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def fire_threads_async(n: int, fn: Callable[[int], Any], *, timeout: float = 60.0) -> Callable[[], list[Any]]:
    """:func:`~strict_singleton.testing.swarm.fire_threads` on a helper thread: returns at once
    (the calls may be blocked, e.g. on a lease the test holds); the returned function waits
    for them and gives their records."""
    from strict_singleton.testing.swarm import fire_threads

    out: list[list[Any]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fire_threads(n, fn, timeout=timeout))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="swarm-driver", daemon=True)
    thread.start()

    def records() -> list[Any]:
        thread.join(timeout + 5)
        if failed:
            raise failed[0]
        if not out:
            raise AssertionError(f"the {n} calls did not end within {timeout} s")
        return out[0]

    return records


def starter_kwargs(**settings: Any) -> dict[str, Any]:
    """A starter's keyword arguments from flat settings: ``lock``, ``lease_ttl``, ``wait`` and the
    private clocks as they are, every other one gathered into ``options=StarterOptions(...)``
    (for tests parametrized over settings of both kinds)."""
    from strict_singleton.options import StarterOptions

    direct = {"lock", "lease_ttl", "wait", "_clock", "_wall_clock"}
    kwargs = {k: v for k, v in settings.items() if k in direct}
    rest = {k: v for k, v in settings.items() if k not in direct}
    if rest:
        kwargs["options"] = StarterOptions(**rest)
    return kwargs


def flow_config(*, start_records: bool = True, request_records: bool = False, **settings: Any) -> Any:
    """The settings an in-memory flow runs on: a 1 s lease, finishing inline, backend "sim", and
    whether the simulated store keeps start and request records; ``settings`` as
    :class:`~strict_singleton.options.StarterOptions` fields (plus ``lease_ttl`` and ``wait``)."""
    import dataclasses

    from strict_singleton._validation import config_of

    full = {"lease_ttl": 1.0, "background_finish": False, "backend": "sim", **settings}
    return dataclasses.replace(config_of(**full), start_records=start_records, request_records=request_records)


class ConfiguredRedis(RedisServer):
    """A private redis-server with extra command-line settings (later ones override the defaults)."""

    def __init__(self, *settings: str, password: str | None = None) -> None:
        super().__init__(password=password)
        self.settings = list(settings)

    def command(self) -> list[str]:
        return [*super().command(), *self.settings]
