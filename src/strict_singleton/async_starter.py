"""The asyncio starter: the same algorithm and guarantees as :class:`SingletonStarter`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strict_singleton import _flow
from strict_singleton._defaults import DEFAULT_TERMINATE_TIMEOUT
from strict_singleton._starter_core import StarterBase
from strict_singleton._telemetry import StartMetrics, observe_start, track_finishes
from strict_singleton._validation import StartCall
from strict_singleton.lock_backends.base import AsyncLeaseBackend
from strict_singleton.options import DEFAULT_LEASE_TTL, StarterOptions
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.result import StartResult
from strict_singleton.transport import Transport

if TYPE_CHECKING:
    from durabletask.client import AsyncTaskHubGrpcClient

_log = logging.getLogger("strict_singleton")


class AsyncSingletonStarter(StarterBase):
    """The asyncio twin of :class:`~strict_singleton.SingletonStarter`.

    Same options and guarantees; takes an ``AsyncTaskHubGrpcClient`` or
    ``AsyncDurableTaskSchedulerClient`` and an async lease backend (default:
    :class:`AsyncFileLease`). Background finishes are tasks on the running loop;
    ``await starter.aclose()`` (or ``async with``) waits for them.

    Cancellation: cancelling a ``start`` at any await point propagates to the caller
    at once; the clean-up goes on in a task of its own that the cancellation cannot
    reach: a held lease is released (token-checked), and if a schedule request may be
    in flight the lease is first kept while watching for the instance, exactly as
    after an ambiguous schedule failure. If the loop itself ends first, the lease is
    left to the store's expiry (the file lease: the OS frees it when the process ends).
    """

    _is_async = True
    _sleep = staticmethod(asyncio.sleep)

    def __init__(
        self,
        client: AsyncTaskHubGrpcClient | Transport,
        *,
        lock: AsyncLeaseBackend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        wait: float | None = None,
        options: StarterOptions | None = None,
        _clock: Callable[[], float] | None = None,
        _wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        if lock is None:
            from strict_singleton.lock_backends.file import AsyncFileLease

            lock = AsyncFileLease()
        super().__init__(
            client, lock=lock, lease_ttl=lease_ttl, wait=wait, options=options, _clock=_clock, _wall_clock=_wall_clock
        )
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False
        track_finishes(self)

    async def start(
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
        """See :meth:`SingletonStarter.start`."""
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
        return await self._run(call, token)

    async def start_or_signal(
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
        """See :meth:`SingletonStarter.start_or_signal`."""
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
        return await self._run(call, token)

    async def _run(self, call: StartCall, token: str) -> StartResult:
        with observe_start(call.instance_id, self._backend_name, self._clock) as obs:
            metrics = obs.metrics
            outcome = await self._drive(self._start_flow(call, token, metrics), metrics=metrics)
            if outcome.hold is not None:
                await self._finish(call, outcome.hold, metrics)
            if outcome.error is not None:
                raise outcome.error
            return obs.record(outcome.result)

    async def aclose(self) -> None:
        """Wait for pending background finishes (visibility checks and releases)."""
        self._closed = True
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def __aenter__(self) -> AsyncSingletonStarter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the driver ------------------------------------------------------------

    def _pending_finishes(self) -> int:
        return len(self._pending)

    async def _finish(self, call: StartCall, hold: _flow.Hold, metrics: StartMetrics | None) -> None:
        flow = self._finish_flow(call, hold)
        if not self._config.background_finish or self._closed:
            await self._drive(flow, metrics=metrics)
        else:
            self._in_background(flow, None, metrics)

    def _in_background(self, flow: Any, error: BaseException | None, metrics: StartMetrics | None) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(flow, error, metrics))
        self._pending.add(task)
        task.add_done_callback(self._after)

    def _after(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if task.cancelled():  # cancelled before its first step: nothing of it ran
            _log.warning(
                "a background finish was cancelled before it ran (the event loop ended without aclose()); "
                "its lease is left to expire and no start record is left (docs/guarantees.md, residual windows)"
            )

    async def _quietly(self, flow: Any, error: BaseException | None, metrics: StartMetrics | None) -> None:
        """Drive a finish or clean-up to its end; a cancellation (the event loop ending, as
        ``asyncio.run`` does with pending tasks) is absorbed and the flow goes on in this task,
        which the ending loop still awaits."""
        for _attempt in range(3):
            try:
                await self._drive(flow, error, abandoned=True, metrics=metrics)
                return
            except asyncio.CancelledError:
                error = _flow.Abandoned()  # thrown into the flow: it retries or cleans up
            except BaseException as exc:  # the caller is gone: log, never raise into nowhere
                if not isinstance(exc, _flow.Abandoned):
                    _log.warning("background clean-up failed: %r", exc)
                return
        _log.warning("background clean-up cancelled repeatedly; the lease is left to expire")

    async def _drive(
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
                send, error = await self._execute(op), None
            except Exception as exc:
                send, error = None, exc
                if metrics is not None:
                    metrics.op_failed(op, exc)
            except asyncio.CancelledError:
                if not abandoned:  # clean up in a task this cancellation cannot reach
                    self._in_background(flow, _flow.Abandoned(), metrics)
                raise

    async def _execute(self, op: _flow.Op) -> Any:
        fn, args, kwargs = self._binders[type(op)](op)
        return await fn(*args, **kwargs)


__all__ = [
    "AsyncSingletonStarter",
]
