"""The synchronous starter: exactly one STARTED per start wave on a fixed instance ID."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strict_singleton import _flow
from strict_singleton._defaults import DEFAULT_TERMINATE_TIMEOUT
from strict_singleton._finishers import Finishers
from strict_singleton._starter_core import StarterBase
from strict_singleton._telemetry import StartMetrics, observe_start, track_finishes
from strict_singleton._validation import StartCall
from strict_singleton.lock_backends.base import LeaseBackend
from strict_singleton.options import DEFAULT_LEASE_TTL, StarterOptions
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.result import StartResult
from strict_singleton.transport import Transport

if TYPE_CHECKING:
    from durabletask.client import TaskHubGrpcClient

_log = logging.getLogger("strict_singleton")


class SingletonStarter(StarterBase):
    """Starts an orchestration under a fixed instance ID at most once per start wave.

    Guarantee: among calls for one instance ID that overlap while no active instance
    exists, at most one returns STARTED, and it does so only if its own schedule call
    created the instance; every other call returns ALREADY_RUNNING (with the state it
    saw), BUSY (the lease stayed held longer than ``wait``), or raises a
    :class:`~strict_singleton.errors.StrictSingletonError` whose ``maybe_scheduled``
    says whether anything may have been scheduled. Calls for different instance IDs
    never wait on each other. Every lease this starter takes is released within a
    bounded time (see ``visibility_timeout`` and ``ambiguity_timeout``), also on
    leases that never expire by themselves.

    Assumptions: clocks advance at a bounded rate (1 % drift is allowed for); the lock
    store does not lose a held lease less than ``confirm_after`` seconds before the
    schedule call (earlier losses are caught by a token-checked confirmation); the
    Durable backend executes a schedule request within ``ambiguity_timeout`` of
    receiving it; the backend's clock is within ``clock_skew`` of ours. The residual
    windows are listed in docs/guarantees.md.

    Args:
        client: a ``TaskHubGrpcClient`` or ``DurableTaskSchedulerClient`` (sync), or any
            :class:`~strict_singleton.transport.Transport` (another way to reach the backend).
        lock: a sync lease backend; defaults to a :class:`FileLease` (one host).
        lease_ttl: seconds a lease lives unless renewed (default 30).
        wait: seconds a call waits for another holder before answering BUSY
            (default: ``lease_ttl``, so a crashed holder's lease can be outwaited).
        options: a :class:`~strict_singleton.options.StarterOptions`: the timings the
            guarantee depends on (``visibility_timeout``, ``ambiguity_timeout``,
            ``clock_skew``, ...), ``namespace`` and the rest, with named presets
            (``StarterOptions.LAGGING_HOST``, ``StarterOptions.STRONGLY_CONSISTENT``).
            ``starter.options`` is what it runs on, every default resolved.

    Every time argument must be a finite number of seconds of at most one day;
    anything else raises :class:`~strict_singleton.errors.InvalidArgumentError` here.
    """

    _is_async = False
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        client: TaskHubGrpcClient | Transport,
        *,
        lock: LeaseBackend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        wait: float | None = None,
        options: StarterOptions | None = None,
        _clock: Callable[[], float] | None = None,
        _wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        if lock is None:
            from strict_singleton.lock_backends.file import FileLease

            lock = FileLease()
        super().__init__(
            client, lock=lock, lease_ttl=lease_ttl, wait=wait, options=options, _clock=_clock, _wall_clock=_wall_clock
        )
        self._finishers = Finishers(self._run_in_background, name="strict-singleton-finish")
        self._closed = False
        self._gates = threading.local()  # the main thread's interrupt gate during a call (see _run)
        track_finishes(self)

    def start(
        self,
        orchestrator: Any,
        *,
        instance_id: str,
        input: Any = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
        start_at: datetime | None = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        on_conflict: ConflictPolicy = ConflictPolicy.USE_EXISTING,
        terminate_timeout: float = DEFAULT_TERMINATE_TIMEOUT,
        request_id: str | None = None,
    ) -> StartResult:
        """Start ``orchestrator`` as ``instance_id`` unless an active instance exists.

        ``on_conflict`` says what an active instance means (``USE_EXISTING``: the answer
        ALREADY_RUNNING; ``FAIL``: raise ``AlreadyRunningError``; ``TERMINATE_EXISTING``:
        terminate it, wait up to ``terminate_timeout`` seconds until it has ended, then
        start: ``result.replaced`` is what was terminated); ``reuse`` which
        finished instances may be replaced (others: ALREADY_COMPLETED). The schedule
        request carries the same reuse rule, for backends that dedupe atomically.

        ``request_id`` makes retries idempotent: before sending, the request ID is left
        in the lock store (and in the instance's tag ``strict_singleton.request_id``). A
        later call with the same request ID that finds the instance that request
        created (running or finished) returns STARTED with ``result.deduplicated`` and
        that instance in ``existing``, and starts nothing; this wins over ``on_conflict``
        and ``reuse`` (a retry never fails on, terminates or replaces its own instance).
        Retry with the same request ID to settle ``ScheduleError(maybe_scheduled=True)``.
        A call with a request ID always decides under the lease, and costs one more lock
        round trip before it sends. Remembered for ``request_ttl``, and only until a
        later start of this ID (the store keeps the latest request per ID).

        Returns a :class:`StartResult`; raises ``InvalidArgumentError`` (bad input,
        before any lease), ``LockUnavailableError`` / ``LeaseLostError`` /
        ``StatusReadError`` (nothing scheduled) or ``ScheduleError`` (see its
        ``maybe_scheduled``). If the call is interrupted (``KeyboardInterrupt``), the
        clean-up (release, or watching for an in-flight request first) goes on in a
        background thread and the interruption propagates.
        """
        call, token = self._prepare(
            orchestrator=orchestrator,
            instance_id=instance_id,
            input=input,
            tags=tags,
            version=version,
            start_at=start_at,
            reuse=reuse,
            on_conflict=on_conflict,
            terminate_timeout=terminate_timeout,
            request_id=request_id,
        )
        return self._run(call, token)

    def start_or_signal(
        self,
        orchestrator: Any,
        *,
        instance_id: str,
        event_name: str,
        event_data: Any = None,
        input: Any = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        request_id: str | None = None,
    ) -> StartResult:
        """Raise ``event_name`` to the active instance, or start one and raise it to the new one.

        Under the lease, like :meth:`start`: an active instance gets the event (outcome
        SIGNALED, ``existing`` set); otherwise a new instance is started and gets the
        event (STARTED). In a wave of overlapping calls one instance is created and each
        call's event is raised exactly once to it, or the call raises
        :class:`~strict_singleton.errors.SignalError`, whose ``maybe_delivered`` says
        whether it may have arrived (an event is never raised twice). A finished instance
        the ``reuse`` policy keeps gives ALREADY_COMPLETED and BUSY gives BUSY: neither
        raises the event. What no lease can fix: an event raised to an instance that then
        completes without consuming it is dropped by the backend (write the orchestrator
        as a loop that drains its events, or use continue-as-new).

        With ``request_id`` a retry of the same request starts nothing new and does not
        raise the event twice: if the earlier call raised it, the answer is its outcome
        with ``result.deduplicated``; if it surely did not, it is raised now; if it may
        have (the earlier call failed ambiguously or died while raising it),
        ``SignalError(maybe_delivered=True)`` and it is not raised again. Events raised to
        an existing instance are remembered beside the start, the newest that fit in the
        2 KiB record (31 of UUID size): a retry of one pushed out by later signals
        with other request IDs is taken for a new request (docs/guarantees.md).
        """
        call, token = self._prepare(
            orchestrator=orchestrator,
            instance_id=instance_id,
            input=input,
            tags=tags,
            version=version,
            reuse=reuse,
            signal=(event_name, event_data),
            request_id=request_id,
        )
        return self._run(call, token)

    def _run(self, call: StartCall, token: str) -> StartResult:
        """On the main thread, a ``KeyboardInterrupt`` may be raised at any bytecode; between two
        operations of the flow no clean-up could follow it (a lease held, no start record left).
        So during a call a SIGINT is let through only while a status read, a schedule, an event,
        a terminate or a wait is in progress (the driver then finishes the flow in the
        background, as for any interruption there); one that arrives between operations, or
        during a lock-store operation that changes what the lease backend holds, is held until
        the next operation begins, or the call ends."""
        if threading.current_thread() is not threading.main_thread():
            return self._run_here(call, token)
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous) or getattr(self._gates, "gate", None) is not None:
            return self._run_here(call, token)  # SIG_IGN / SIG_DFL raise nothing; or a call within a call
        gate = _Gate(previous)
        signal.signal(signal.SIGINT, gate.handler)
        self._gates.gate = gate
        try:
            return self._run_here(call, token)
        finally:
            self._gates.gate = None
            signal.signal(signal.SIGINT, previous)
            gate.deliver()

    def _run_here(self, call: StartCall, token: str) -> StartResult:
        with observe_start(call.instance_id, self._backend_name, self._clock) as obs:
            metrics = obs.metrics
            outcome = self._drive(self._start_flow(call, token, metrics), metrics=metrics)
            if outcome.hold is not None:
                self._finish(call, outcome.hold, metrics)
            if outcome.error is not None:
                raise outcome.error
            return obs.record(outcome.result)

    def close(self) -> None:
        """Wait for pending background finishes (releases, and visibility checks where needed)."""
        self._closed = True
        self._finishers.wait()

    def __enter__(self) -> SingletonStarter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver ------------------------------------------------------------

    def _pending_finishes(self) -> int:
        return self._finishers.pending

    def _finish(self, call: StartCall, hold: _flow.Hold, metrics: StartMetrics | None) -> None:
        flow = self._finish_flow(call, hold)
        if not self._config.background_finish or self._closed:
            self._drive(flow, metrics=metrics)
        else:
            self._in_background(flow, None, metrics)

    def _in_background(self, flow: Any, error: BaseException | None, metrics: StartMetrics | None) -> None:
        """Drive ``flow`` to its end on a worker that is free now (never queued behind others).

        If no thread can be started, it is driven here and now: the lease is never left
        behind, and the caller still gets its answer.
        """
        try:
            self._finishers.submit((flow, error, metrics))
        except RuntimeError as exc:
            _log.warning("no thread for a background finish (%s); finishing on the caller's thread", exc)
            self._run_in_background((flow, error, metrics))

    def _run_in_background(self, item: tuple[Any, BaseException | None, StartMetrics | None]) -> None:
        flow, error, metrics = item
        try:
            self._drive(flow, error, abandoned=error is not None, metrics=metrics)
        except BaseException as exc:  # the caller is gone: log, never raise into nowhere
            if not isinstance(exc, _flow.Abandoned):
                _log.warning("background clean-up failed: %r", exc)

    def _drive(
        self,
        flow: Any,
        error: BaseException | None = None,
        *,
        abandoned: bool = False,
        metrics: StartMetrics | None = None,
    ) -> Any:
        send: Any = None
        while True:
            try:
                op = flow.throw(error) if error is not None else flow.send(send)
            except BaseException as end:  # StopIteration: the flow's answer; anything else: its error
                if metrics is not None:
                    metrics.flow_ended()
                if isinstance(end, StopIteration):
                    return end.value
                raise
            try:
                send, error = self._execute(op), None
            except Exception as exc:
                send, error = None, exc
                if metrics is not None:
                    metrics.op_failed(op, exc)
            except BaseException:
                if not abandoned:  # KeyboardInterrupt, SystemExit: clean up off this thread
                    self._in_background(flow, _flow.Abandoned(), metrics)
                raise

    def _execute(self, op: _flow.Op) -> Any:
        kind = type(op)
        fn, args, kwargs = self._binders[kind](op)
        gate: _Gate | None = getattr(self._gates, "gate", None)
        if gate is None or kind in _ATOMIC_OPS:
            return fn(*args, **kwargs)
        try:
            gate.open()  # a SIGINT held since the last operation is raised here, before this one runs
            return fn(*args, **kwargs)
        finally:
            gate.is_open = False


# Lock-store operations that change what a lease backend holds (a descriptor, a key): not
# interrupted halfway (a lease taken but not yet registered would be held by nobody); a SIGINT
# that arrives meanwhile is held for the next operation. They are short (a local file call, or
# one round trip bounded by the store client's timeouts).
# A set of exact types (a flow yields the op classes themselves, as CALLS is keyed by them).
_ATOMIC_OPS = frozenset(
    kind for kind, call in _flow.CALLS.items() if call.target == "lock" and kind is not _flow.WaitRelease
)


class _Gate:
    """The main thread's SIGINT handler during a call: the previous handler runs (raising
    ``KeyboardInterrupt``) only while an operation is in progress, where the driver can hand the
    flow to the background; a signal that arrives otherwise is held for the next operation."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.is_open = False
        self.held: tuple[int, Any] | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.is_open:
            # One interruption per operation: a second SIGINT while the first unwinds through the
            # operation's own clean-up (a descriptor being closed, say) is held, not raised there.
            self.is_open = False
            self.previous(signum, frame)
        elif self.held is None:
            self.held = (signum, frame)

    def open(self) -> None:
        self.is_open = True
        self.deliver()

    def deliver(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            self.previous(*held)


__all__ = [
    "SingletonStarter",
]
