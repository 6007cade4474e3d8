"""What the sync and async starters share: construction, validation, request building."""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable
from typing import Any

from strict_singleton import _flow
from strict_singleton._deadline import deadline_call
from strict_singleton._flow import reuse_policy
from strict_singleton._validation import StartCall, StarterConfig, build_call, build_config, converter_of
from strict_singleton.errors import InvalidArgumentError

# Patched by tests (like redis-py's lock module) to exercise TTL edges without sleeping.
monotonic: Callable[[], float] = time.monotonic


class StarterBase:
    _is_async: bool
    _sleep: Callable[[float], Any]  # time.sleep or asyncio.sleep

    def __init__(
        self,
        client: Any,
        *,
        lock: Any,
        lease_ttl: float,
        wait: float | None,
        schedule_margin: float | None,
        visibility_timeout: float | None,
        confirm_visible: bool,
        background_finish: bool,
        max_instance_id_length: int,
        fetch_payloads: bool,
        clock: Callable[[], float] | None,
    ) -> None:
        backend_name = getattr(lock, "name", None) or type(lock).__name__
        kind = "async" if self._is_async else "sync"
        for attr in ("acquire", "extend", "release", "wait_for_release", "validate_ttl", "close"):
            if not callable(getattr(lock, attr, None)):
                raise InvalidArgumentError(
                    f"lock {lock!r} has no {attr}(); it is not a lease backend", backend=backend_name
                )
        if inspect.iscoroutinefunction(lock.acquire) != self._is_async:
            raise InvalidArgumentError(
                f"{type(self).__name__} needs a {kind} lease backend, got {type(lock).__name__}", backend=backend_name
            )
        schedule = getattr(client, "schedule_new_orchestration", None)
        if not callable(schedule) or not callable(getattr(client, "get_orchestration_state", None)):
            raise InvalidArgumentError(f"client {type(client).__name__} is not a Durable Task client")
        if inspect.iscoroutinefunction(schedule) != self._is_async:
            raise InvalidArgumentError(
                f"{type(self).__name__} needs a {kind} Durable Task client, got {type(client).__name__}"
            )
        self._config: StarterConfig = build_config(
            lease_ttl=lease_ttl,
            wait=wait,
            schedule_margin=schedule_margin,
            visibility_timeout=visibility_timeout,
            confirm_visible=confirm_visible,
            background_finish=background_finish,
            max_instance_id_length=max_instance_id_length,
            fetch_payloads=fetch_payloads,
            backend=backend_name,
        )
        lock.validate_ttl(self._config.lease_ttl)
        self._client = client
        self._lock = lock
        self._backend_name: str = backend_name
        self._converter = converter_of(client)
        self._clock: Callable[[], float] = clock if clock is not None else (lambda: monotonic())
        self._policy = reuse_policy()

    @property
    def config(self) -> StarterConfig:
        return self._config

    @property
    def lock(self) -> Any:
        return self._lock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lock={self._lock!r}, lease_ttl={self._config.lease_ttl})"

    def _prepare(
        self,
        orchestrator: object,
        instance_id: object,
        input: object,
        tags: object,
        version: object,
        start_at: object,
    ) -> tuple[StartCall, str]:
        call = build_call(
            orchestrator=orchestrator,
            instance_id=instance_id,
            input=input,
            tags=tags,
            version=version,
            start_at=start_at,
            converter=self._converter,
            max_instance_id_length=self._config.max_instance_id_length,
            backend=self._backend_name,
        )
        return call, str(uuid.uuid4())  # owner token: 122 random bits from os.urandom

    def _bind(
        self, op: _flow.Op, call: StartCall, token: str
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The client or lock method that executes ``op``; drivers call or await it."""
        iid = call.instance_id
        if isinstance(op, _flow.Read):
            payloads = self._config.fetch_payloads and op.payloads
            return self._client.get_orchestration_state, (iid,), {"fetch_payloads": payloads}
        if isinstance(op, _flow.Acquire):
            return self._lock.acquire, (iid, token, self._config.lease_ttl), {}
        if isinstance(op, _flow.Schedule):
            kwargs = {
                "input": call.input,
                "instance_id": iid,
                "start_at": call.start_at,
                "reuse_id_policy": self._policy,
                "tags": op.tags,
                "version": call.version,
            }
            if op.deadline is not None:
                send = deadline_call(self._client, call.orchestrator, kwargs, op.deadline, is_async=self._is_async)
                if send is not None:
                    return send, (), {}
            return self._client.schedule_new_orchestration, (call.orchestrator,), kwargs
        if isinstance(op, _flow.Release):
            return self._lock.release, (iid, token), {}
        if isinstance(op, _flow.Extend):
            return self._lock.extend, (iid, token, self._config.lease_ttl), {}
        if isinstance(op, _flow.WaitRelease):
            return self._lock.wait_for_release, (iid, op.timeout), {}
        if isinstance(op, _flow.Sleep):
            return self._sleep, (op.seconds,), {}
        raise AssertionError(f"unknown operation {op!r}")
