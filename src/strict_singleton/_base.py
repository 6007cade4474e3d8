"""What the sync and async starters share: options, validation, request building, op binding."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypedDict

from strict_singleton import _deadline, _flow
from strict_singleton._namespace import derived_namespace, lock_key, validate_namespace
from strict_singleton._validation import StartCall, StarterConfig, build_call, build_config, check_input, converter_of
from strict_singleton.errors import InvalidArgumentError, StrictSingletonError
from strict_singleton.lock_backends.base import RECORD_METHODS, LeaseBackend, supports_records, supports_requests
from strict_singleton.policies import ReusePolicy

# The methods of the lease protocol, taken from the Protocol itself (not written twice).
_log = logging.getLogger("strict_singleton")

_LEASE_METHODS = tuple(
    name for name, value in vars(LeaseBackend).items() if callable(value) and not name.startswith("_")
)


class StarterOptions(TypedDict, total=False):
    """The keyword options both starters take (all optional). See :class:`SingletonStarter`."""

    lease_ttl: float
    wait: float | None
    schedule_margin: float | None
    visibility_timeout: float | None
    ambiguity_timeout: float | None
    confirm_after: float | None
    clock_skew: float | None
    request_ttl: float | None
    confirm_visible: bool
    background_finish: bool
    max_instance_id_length: int
    fetch_payloads: bool
    clock: Callable[[], float] | None
    wall_clock: Callable[[], datetime] | None
    namespace: str | None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class StarterBase:
    _is_async: bool
    _sleep: Callable[[float], Any]  # time.sleep or asyncio.sleep
    # The client's own schedule method takes the send-by deadline (``timeout=``): no warning.
    _deadline_in_client: bool = False

    def __init__(self, client: Any, *, lock: Any, **options: Any) -> None:
        backend_name = getattr(lock, "name", None) or type(lock).__name__
        kind = "async" if self._is_async else "sync"
        missing = [name for name in _LEASE_METHODS if not callable(getattr(lock, name, None))]
        if missing:
            raise InvalidArgumentError(
                f"lock {lock!r} has no {', '.join(missing)}(); it is not a lease backend", backend=backend_name
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
        unknown = sorted(set(options) - set(StarterOptions.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments: {', '.join(unknown)}")
        clock = options.pop("clock", None)
        wall_clock = options.pop("wall_clock", None)
        namespace = options.pop("namespace", None)
        self._namespace: str = (
            derived_namespace(client) if namespace is None else validate_namespace(namespace, backend=backend_name)
        )
        self._config: StarterConfig = build_config(
            lease_ttl=options.pop("lease_ttl", 30.0),
            confirm_visible=options.pop("confirm_visible", True),
            background_finish=options.pop("background_finish", True),
            max_instance_id_length=options.pop("max_instance_id_length", 256),
            fetch_payloads=options.pop("fetch_payloads", True),
            backend=backend_name,
            **options,
        )
        lock.validate_ttl(self._config.lease_ttl)
        if supports_records(lock):
            for name in RECORD_METHODS:
                if inspect.iscoroutinefunction(getattr(lock, name)) != self._is_async:
                    raise InvalidArgumentError(
                        f"{type(lock).__name__}.{name} must be {kind} like its acquire", backend=backend_name
                    )
            self._config = dataclasses.replace(self._config, start_records=True)
        if supports_requests(lock):
            if inspect.iscoroutinefunction(lock.record_request) != self._is_async:
                raise InvalidArgumentError(
                    f"{type(lock).__name__}.record_request must be {kind} like its acquire", backend=backend_name
                )
            self._config = dataclasses.replace(self._config, request_records=True)
        self._client = client
        self._lock = lock
        self._backend_name: str = backend_name
        self._converter = converter_of(client)
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._wall_clock: Callable[[], datetime] = wall_clock if wall_clock is not None else _utcnow
        self._policies = {policy: policy.request_policy() for policy in ReusePolicy}
        self._with_deadline = _deadline.supports_deadline(client, is_async=self._is_async)
        if not self._with_deadline and not self._deadline_in_client:
            _log.warning(
                "%s: this client's schedule call cannot carry a deadline (payload store or another "
                "durabletask version); a schedule that stalls past the lease is not cut short "
                "(docs/guarantees.md, residual windows)",
                type(client).__name__,
            )

    @property
    def config(self) -> StarterConfig:
        return self._config

    @property
    def lock(self) -> Any:
        return self._lock

    @property
    def namespace(self) -> str:
        """The task hub this starter's leases and records are kept under ('' : shared)."""
        return self._namespace

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
        reuse: object = ReusePolicy.ALLOW_DUPLICATE,
        on_conflict: object = None,
        terminate_timeout: object = 30.0,
        signal: tuple[object, object] | None = None,
        request_id: object = None,
    ) -> tuple[StartCall, str]:
        """Validate, build the request (serializing the input once), draw an owner token."""
        call = build_call(
            request_id=request_id,
            reuse=reuse,
            on_conflict="use_existing" if on_conflict is None else on_conflict,
            terminate_timeout=terminate_timeout,
            signal=signal,
            orchestrator=orchestrator,
            instance_id=instance_id,
            input=input,
            tags=tags,
            version=version,
            start_at=start_at,
            converter=None,
            max_instance_id_length=self._config.max_instance_id_length,
            backend=self._backend_name,
        )
        if call.request_id is not None and not self._config.request_records:
            raise InvalidArgumentError(
                f"request_id needs a lock backend that keeps request records (record_request); "
                f"{type(self._lock).__name__} does not: every backend shipped with strict-singleton does",
                instance_id=call.instance_id,
                backend=self._backend_name,
            )
        if self._with_deadline:
            request = _deadline.build_request(
                self._client, call, self._policies[call.reuse], backend=self._backend_name
            )
            call = dataclasses.replace(call, request=request)
        if call.signal is not None:  # the event's data must serialize too, before any lease
            check_input(self._converter, call.signal[1], instance_id=call.instance_id, backend=self._backend_name)
        else:
            check_input(self._converter, call.input, instance_id=call.instance_id, backend=self._backend_name)
        return call, str(uuid.uuid4())  # owner token: 122 random bits from os.urandom

    def _start_flow(self, call: StartCall, token: str) -> _flow.Flow:
        return _flow.start_flow(
            call, self._config, token=token, backend=self._backend_name, clock=self._clock, wall_clock=self._wall_clock
        )

    def _finish_flow(self, call: StartCall, hold: _flow.Hold) -> _flow.FinishFlow:
        return _flow.finish_flow(
            call, self._config, hold, clock=self._clock, wall_clock=self._wall_clock, backend=self._backend_name
        )

    def _timeout(self, op: _flow.Schedule | _flow.RaiseEvent | _flow.Terminate | _flow.Read) -> float | None:
        """Seconds the RPC may take, read immediately before sending; raises NotSent when none."""
        if op.send_by is None:
            return None
        left = op.send_by - self._clock()
        if left <= 0:
            raise _flow.NotSent(f"send-by time passed {-left:.3f}s ago")
        return left

    def _bind(self, op: _flow.Op) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The client or lock method that executes ``op``; drivers call or await it."""
        if isinstance(op, _flow.Read):
            return self._bind_read(op)
        fn, args, kwargs = self._bind_other(op)
        if self._namespace and isinstance(op, _flow.LOCK_OPS):
            return self._scoped(fn, args[0]), (lock_key(self._namespace, args[0]), *args[1:]), kwargs
        return fn, args, kwargs

    def _scoped(self, fn: Callable[..., Any], instance_id: str) -> Callable[..., Any]:
        """``fn`` on the namespaced key; its errors name the instance ID, not the key."""
        key = lock_key(self._namespace, instance_id)

        def named(exc: StrictSingletonError) -> None:
            if exc.instance_id == key:
                exc.instance_id = instance_id

        if self._is_async:

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except StrictSingletonError as exc:
                    named(exc)
                    raise

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except StrictSingletonError as exc:
                named(exc)
                raise

        return call

    def _bind_other(self, op: _flow.Op) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        if isinstance(op, _flow.Acquire):
            return self._lock.acquire, (op.instance_id, op.token, op.ttl), {}
        if isinstance(op, _flow.Extend):
            return self._lock.extend, (op.instance_id, op.token, op.ttl), {}
        if isinstance(op, _flow.Release):
            return self._lock.release, (op.instance_id, op.token), {}
        if isinstance(op, _flow.ReleaseRecording):
            return self._lock.release_with_record, (op.instance_id, op.token, op.record, op.ttl), {}
        if isinstance(op, _flow.RecordStart):
            return self._lock.record_start, (op.instance_id, op.token, op.record, op.ttl), {}
        if isinstance(op, _flow.RecordRequest):
            return self._lock.record_request, (op.instance_id, op.token, op.record, op.ttl), {}
        if isinstance(op, _flow.WaitRelease):
            return self._lock.wait_for_release, (op.instance_id, op.timeout), {}
        if isinstance(op, _flow.Sleep):
            return self._sleep, (op.seconds,), {}
        if isinstance(op, (_flow.RaiseEvent, _flow.Terminate)):
            return self._bind_under_lease(op)
        if isinstance(op, _flow.Schedule):
            return self._bind_schedule(op)
        raise AssertionError(f"unknown operation {op!r}")

    def _bind_read(self, op: _flow.Read) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """A status read; made under the lease, refused past its send-by time and sent with the
        time left as its deadline where the client lets us set one."""
        kwargs: dict[str, Any] = {"fetch_payloads": op.payloads}
        timeout = self._timeout(op)
        if timeout is not None and self._with_deadline:
            read = _deadline.read_async if self._is_async else _deadline.read_sync
            return read, (self._client, op.instance_id, op.payloads, max(timeout, 0.001)), {}
        if timeout is not None and self._deadline_in_client:
            kwargs["timeout"] = timeout
        return self._client.get_orchestration_state, (op.instance_id,), kwargs

    def _bind_under_lease(
        self, op: _flow.RaiseEvent | _flow.Terminate
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """An event or a terminate made under the lease: refused once its send-by time has
        passed (``NotSent``), else sent with the time left as its deadline where the client
        lets us set one (the durabletask stub; ``timeout=`` on clients that take it)."""
        timeout = self._timeout(op)
        if isinstance(op, _flow.RaiseEvent):
            args: tuple[Any, ...] = (op.instance_id, op.event_name)
            kwargs: dict[str, Any] = {"data": op.data}
        else:
            args, kwargs = (op.instance_id,), {"output": op.reason}
        if timeout is None:
            method = "raise_orchestration_event" if isinstance(op, _flow.RaiseEvent) else "terminate_orchestration"
            return getattr(self._client, method), args, kwargs
        if self._with_deadline:
            send = _deadline.send_async if self._is_async else _deadline.send_sync
            return send, (self._client, _deadline.build_op_request(self._client, op), max(timeout, 0.001)), {}
        if self._deadline_in_client:
            kwargs["timeout"] = timeout
        method = "raise_orchestration_event" if isinstance(op, _flow.RaiseEvent) else "terminate_orchestration"
        return getattr(self._client, method), args, kwargs

    def _bind_schedule(self, op: _flow.Schedule) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        call = op.call
        timeout = self._timeout(op)
        if call.request is not None:
            request = call.request
            request.tags.clear()
            request.tags.update(op.tags)
            send = _deadline.send_async if self._is_async else _deadline.send_sync
            # The timeout was read just now; the RPC sets its deadline when called, next.
            return send, (self._client, request, max(timeout, 0.001) if timeout is not None else None), {}
        kwargs = {
            "input": call.input,
            "instance_id": call.instance_id,
            "start_at": call.start_at,
            "reuse_id_policy": self._policies[call.reuse],
            "tags": op.tags,
            "version": call.version,
        }
        return self._client.schedule_new_orchestration, (call.orchestrator,), kwargs
