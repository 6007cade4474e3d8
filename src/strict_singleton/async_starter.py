"""The asyncio starter: the same algorithm and guarantees as :class:`SingletonStarter`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strict_singleton import _flow
from strict_singleton._base import StarterBase
from strict_singleton._telemetry import observe_start
from strict_singleton._validation import MAX_INSTANCE_ID_LENGTH, StartCall
from strict_singleton.lock_backends.base import AsyncLeaseBackend
from strict_singleton.result import StartResult

if TYPE_CHECKING:
    from durabletask.client import AsyncTaskHubGrpcClient

_log = logging.getLogger("strict_singleton")


class AsyncSingletonStarter(StarterBase):
    """The asyncio twin of :class:`~strict_singleton.SingletonStarter`.

    Same arguments and guarantees; takes an ``AsyncTaskHubGrpcClient`` or
    ``AsyncDurableTaskSchedulerClient`` and an async lease backend (default:
    :class:`AsyncFileLease`). Background finishes are tasks on the running loop;
    ``await starter.aclose()`` (or ``async with``) waits for them. If the loop ends
    first, an unfinished lease is left to expire: never released early.
    """

    _is_async = True
    _sleep = staticmethod(asyncio.sleep)

    def __init__(
        self,
        client: AsyncTaskHubGrpcClient,
        *,
        lock: AsyncLeaseBackend | None = None,
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
            from strict_singleton.lock_backends.file import AsyncFileLease

            lock = AsyncFileLease()
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
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def start(
        self,
        orchestrator: Any,
        *,
        instance_id: str,
        input: Any = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
        start_at: datetime | None = None,
    ) -> StartResult:
        """See :meth:`SingletonStarter.start`."""
        call, token = self._prepare(orchestrator, instance_id, input, tags, version, start_at)
        with observe_start(call.instance_id, self._backend_name) as obs:
            flow = _flow.start_flow(call, self._config, backend=self._backend_name, clock=self._clock)
            outcome = await self._drive(flow, call, token)
            if outcome.hold is not None:
                await self._finish(call, token, outcome.hold)
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

    async def _finish(self, call: StartCall, token: str, hold: _flow.Hold) -> None:
        flow = _flow.finish_flow(call, self._config, hold, clock=self._clock)
        if not self._config.background_finish or self._closed:
            await self._drive(flow, call, token)
            return
        task = asyncio.get_running_loop().create_task(self._drive(flow, call, token))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _drive(self, flow: Any, call: StartCall, token: str) -> Any:
        send: Any = None
        error: Exception | None = None
        while True:
            try:
                op = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                return stop.value
            try:
                send, error = await self._execute(op, call, token), None
            except Exception as exc:
                send, error = None, exc

    async def _execute(self, op: _flow.Op, call: StartCall, token: str) -> Any:
        fn, args, kwargs = self._bind(op, call, token)
        return await fn(*args, **kwargs)
