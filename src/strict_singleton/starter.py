"""The synchronous starter: exactly one STARTED per start wave on a fixed instance ID."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strict_singleton import _flow
from strict_singleton._base import StarterBase
from strict_singleton._telemetry import observe_start
from strict_singleton._validation import MAX_INSTANCE_ID_LENGTH, StartCall
from strict_singleton.lock_backends.base import LeaseBackend
from strict_singleton.result import StartResult

if TYPE_CHECKING:
    from durabletask.client import TaskHubGrpcClient


class SingletonStarter(StarterBase):
    """Starts an orchestration under a fixed instance ID at most once per start wave.

    Guarantee: among calls for one instance ID that overlap while no active instance
    exists, at most one returns STARTED, and it does so only if its own schedule call
    succeeded; every other call returns ALREADY_RUNNING (with the state it saw), BUSY
    (the lease stayed held longer than ``wait``), or raises a
    :class:`~strict_singleton.errors.StrictSingletonError` that says whether anything
    was scheduled. Calls for different instance IDs never wait on each other.

    Assumptions: ``lease_ttl`` is longer than a read plus a schedule call (the starter
    renews and checks validity, and refuses to schedule on a lease that may have
    expired); clocks advance at a bounded rate (1 % drift is allowed for); the lock
    store does not lose a held lease (see the README for what happens if it does).

    Args:
        client: a ``TaskHubGrpcClient`` or ``DurableTaskSchedulerClient`` (sync).
        lock: a sync lease backend; defaults to a :class:`FileLease` (one host).
        lease_ttl: seconds a lease lives unless renewed.
        wait: seconds a call waits for another holder before answering BUSY
            (default: ``lease_ttl``, so a crashed holder's lease can be outwaited).
        schedule_margin: validity (seconds) that must be left before scheduling;
            default ``lease_ttl / 3``.
        visibility_timeout: how long to hold the lease after scheduling until the new
            instance shows in a status read (default ``lease_ttl``).
        confirm_visible: hold the lease until the new instance is visible (default on;
            turn off only for backends whose reads are strongly consistent).
        background_finish: confirm visibility and release in a background thread,
            so the caller gets its answer as soon as the schedule call returns. The
            lease stays held until then. :meth:`close` waits for pending finishes.
        max_instance_id_length: longest accepted instance ID.
        fetch_payloads: fetch inputs and outputs in status reads (for ``existing``).
        clock: a monotonic clock in seconds (for tests).
    """

    _is_async = False
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        client: TaskHubGrpcClient,
        *,
        lock: LeaseBackend | None = None,
        lease_ttl: float = 30.0,
        wait: float | None = None,
        schedule_margin: float | None = None,
        visibility_timeout: float | None = None,
        confirm_visible: bool = True,
        background_finish: bool = True,
        max_instance_id_length: int = MAX_INSTANCE_ID_LENGTH,
        fetch_payloads: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if lock is None:
            from strict_singleton.lock_backends.file import FileLease

            lock = FileLease()
        super().__init__(
            client,
            lock=lock,
            lease_ttl=lease_ttl,
            wait=wait,
            schedule_margin=schedule_margin,
            visibility_timeout=visibility_timeout,
            confirm_visible=confirm_visible,
            background_finish=background_finish,
            max_instance_id_length=max_instance_id_length,
            fetch_payloads=fetch_payloads,
            clock=clock,
        )
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._closed = False

    def start(
        self,
        orchestrator: Any,
        *,
        instance_id: str,
        input: Any = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
        start_at: datetime | None = None,
    ) -> StartResult:
        """Start ``orchestrator`` as ``instance_id`` unless an active instance exists.

        Returns a :class:`StartResult`; raises ``InvalidArgumentError`` (bad input,
        before any lease), ``LockUnavailableError`` / ``LeaseLostError`` /
        ``BackendError`` (nothing scheduled) or ``ScheduleError`` (see its
        ``maybe_scheduled``).
        """
        call, token = self._prepare(orchestrator, instance_id, input, tags, version, start_at)
        with observe_start(call.instance_id, self._backend_name) as obs:
            flow = _flow.start_flow(call, self._config, backend=self._backend_name, clock=self._clock)
            outcome = self._drive(flow, call, token)
            if outcome.hold is not None:
                self._finish(call, token, outcome.hold)
            return obs.record(outcome.result)

    def close(self) -> None:
        """Wait for pending background finishes (visibility checks and releases)."""
        self._closed = True
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> SingletonStarter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver ------------------------------------------------------------

    def _finish(self, call: StartCall, token: str, hold: _flow.Hold) -> None:
        flow = _flow.finish_flow(call, self._config, hold, clock=self._clock)
        if not self._config.background_finish or self._closed:
            self._drive(flow, call, token)
            return
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="strict-singleton-finish")
            self._executor.submit(self._drive, flow, call, token)

    def _drive(self, flow: Any, call: StartCall, token: str) -> Any:
        send: Any = None
        error: Exception | None = None
        while True:
            try:
                op = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                return stop.value
            try:
                send, error = self._execute(op, call, token), None
            except Exception as exc:
                send, error = None, exc

    def _execute(self, op: _flow.Op, call: StartCall, token: str) -> Any:
        fn, args, kwargs = self._bind(op, call, token)
        return fn(*args, **kwargs)
