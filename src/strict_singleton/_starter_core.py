"""What the sync and async starters share: checking the client and lock, resolving options,
validating a call before any lease, and serving the flow's operations (:data:`_flow.CALLS`)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from strict_singleton import _flow
from strict_singleton._defaults import DEFAULT_TERMINATE_TIMEOUT
from strict_singleton._namespace import derived_namespace, lock_key, validate_namespace
from strict_singleton._telemetry import StartMetrics
from strict_singleton._validation import StartCall, StarterConfig, build_call, build_config, check_input, converter_of
from strict_singleton.errors import InvalidArgumentError, StrictSingletonError
from strict_singleton.lock_backends.base import RECORD_METHODS, LeaseBackend, supports_records, supports_requests
from strict_singleton.options import DEFAULT_LEASE_TTL, StarterOptions
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.transport import DurableTaskTransport, Transport

# What serves one operation: the callable, its positional and its keyword arguments.
Bound = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_NO_KWARGS: dict[str, Any] = {}  # shared: ``fn(*args, **kwargs)`` unpacks it into a fresh dict

_log = logging.getLogger("strict_singleton")

# The methods of the lease protocol, taken from the Protocol itself (not written twice).
_LEASE_METHODS = tuple(
    name for name, value in vars(LeaseBackend).items() if callable(value) and not name.startswith("_")
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _new_token() -> str:
    """An owner token: a random UUID (version 4) in its usual text form, 122 random bits from
    os.urandom, exactly what ``str(uuid.uuid4())`` gives; written out because building the
    ``UUID`` object costs more than twice as much, on every start."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _time_left(op: Any, clock: Callable[[], float]) -> float | None:
    """Seconds a backend call may take, read immediately before sending; raises NotSent when none."""
    if op.send_by is None:
        return None
    left: float = op.send_by - clock()
    if left <= 0:
        raise _flow.NotSent(f"send-by time passed {-left:.3f}s ago")
    return left


class StarterBase:
    _is_async: bool
    _sleep: Callable[[float], Any]  # time.sleep or asyncio.sleep

    def __init__(
        self,
        client: Any,
        *,
        lock: Any,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        wait: float | None = None,
        options: StarterOptions | None = None,
        _clock: Callable[[], float] | None = None,
        _wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
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
        if options is None:
            options = StarterOptions()
        elif not isinstance(options, StarterOptions):
            raise InvalidArgumentError(
                f"options must be a StarterOptions, got {type(options).__name__}", backend=backend_name
            )
        self._transport = self._transport_for(client, kind)
        self._namespace: str = (
            derived_namespace(client)
            if options.namespace is None
            else validate_namespace(options.namespace, backend=backend_name)
        )
        config = build_config(options, lease_ttl=lease_ttl, wait=wait, backend=backend_name)
        self._options = options.resolved(config.lease_ttl).replace(namespace=self._namespace)
        lock.validate_ttl(config.lease_ttl)
        if supports_records(lock):
            for name in RECORD_METHODS:
                if inspect.iscoroutinefunction(getattr(lock, name)) != self._is_async:
                    raise InvalidArgumentError(
                        f"{type(lock).__name__}.{name} must be {kind} like its acquire", backend=backend_name
                    )
            config = dataclasses.replace(config, start_records=True)
        if supports_requests(lock):
            if inspect.iscoroutinefunction(lock.record_request) != self._is_async:
                raise InvalidArgumentError(
                    f"{type(lock).__name__}.record_request must be {kind} like its acquire", backend=backend_name
                )
            config = dataclasses.replace(config, request_records=True)
        self._config: StarterConfig = config
        self._client = client
        self._lock = lock
        self._backend_name: str = backend_name
        self._converter = converter_of(client)
        self._clock: Callable[[], float] = _clock if _clock is not None else time.monotonic
        self._wall_clock: Callable[[], datetime] = _wall_clock if _wall_clock is not None else _utcnow
        # The input is serialized once, by the transport, when it builds the request itself
        # (the durabletask transport, with this very converter); any other transport's call is
        # checked here as well (see _prepare).
        self._input_checked_by_transport = type(self._transport) is DurableTaskTransport
        # :data:`_flow.CALLS` resolved once for this starter (target, namespace), not per operation.
        self._binders: dict[type[Any], Callable[[Any], Bound]] = {
            kind: self._binder(call) for kind, call in _flow.CALLS.items()
        }
        if not self._transport.bounds_calls:
            _log.warning(
                "%s: this client's calls cannot carry a deadline (payload store or another "
                "durabletask version); a call that stalls past the lease is not cut short "
                "(docs/guarantees.md, residual windows)",
                type(client).__name__,
            )

    def _transport_for(self, client: Any, kind: str) -> Transport:
        """``client`` itself when it is a :class:`~strict_singleton.transport.Transport`, else a
        durabletask client wrapped in one."""
        # A real bool, not just an attribute: a mock client answers to every name.
        if isinstance(client, Transport) and isinstance(getattr(client, "bounds_calls", None), bool):
            if inspect.iscoroutinefunction(client.schedule) != self._is_async:
                raise InvalidArgumentError(
                    f"{type(self).__name__} needs a {kind} transport, got {type(client).__name__}"
                )
            return client
        schedule = getattr(client, "schedule_new_orchestration", None)
        if not callable(schedule) or not callable(getattr(client, "get_orchestration_state", None)):
            raise InvalidArgumentError(f"client {type(client).__name__} is not a Durable Task client")
        if inspect.iscoroutinefunction(schedule) != self._is_async:
            raise InvalidArgumentError(
                f"{type(self).__name__} needs a {kind} Durable Task client, got {type(client).__name__}"
            )
        return DurableTaskTransport(client, is_async=self._is_async)

    @property
    def options(self) -> StarterOptions:
        """The options this starter runs on, every default resolved (``namespace`` included)."""
        return self._options

    @property
    def lease_ttl(self) -> float:
        return self._config.lease_ttl

    @property
    def wait(self) -> float:
        """Seconds a call waits for another holder before answering BUSY."""
        return self._config.wait

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
        *,
        orchestrator: object,
        instance_id: object,
        input: object,
        tags: object,
        version: object,
        start_at: object = None,
        reuse: object = ReusePolicy.ALLOW_DUPLICATE,
        on_conflict: object = ConflictPolicy.USE_EXISTING,
        terminate_timeout: object = DEFAULT_TERMINATE_TIMEOUT,
        signal: tuple[object, object] | None = None,
        request_id: object = None,
    ) -> tuple[StartCall, str]:
        """Validate, build the request (serializing the input once), draw an owner token."""
        call = build_call(
            request_id=request_id,
            reuse=reuse,
            on_conflict=ConflictPolicy.USE_EXISTING if on_conflict is None else on_conflict,
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
        call = self._transport.prepare(call, backend=self._backend_name)
        if call.signal is not None:  # the event's data must serialize too, before any lease
            check_input(self._converter, call.signal[1], instance_id=call.instance_id, backend=self._backend_name)
        elif call.request is None or not self._input_checked_by_transport:
            # Building the request serialized the input already, with this converter, and raised
            # the same InvalidArgumentError if it could not: a second serialization would only
            # repeat it. Without a request (public-method path) or with another transport, check.
            check_input(self._converter, call.input, instance_id=call.instance_id, backend=self._backend_name)
        return call, _new_token()

    def _start_flow(self, call: StartCall, token: str, metrics: StartMetrics | None = None) -> _flow.Flow:
        return _flow.start_flow(
            call,
            self._config,
            token=token,
            backend=self._backend_name,
            clock=self._clock,
            wall_clock=self._wall_clock,
            notes=None if metrics is None else metrics.notes,
        )

    def _finish_flow(self, call: StartCall, hold: _flow.Hold) -> _flow.FinishFlow:
        return _flow.finish_flow(
            call, self._config, hold, clock=self._clock, wall_clock=self._wall_clock, backend=self._backend_name
        )

    def _pending_finishes(self) -> int:
        """Background finishes not yet run to their end (the ``strict_singleton.finishes.pending`` metric)."""
        raise NotImplementedError

    def _binder(self, call: _flow.Call) -> Callable[[Any], Bound]:
        """How to serve one kind of operation (:data:`_flow.CALLS`), decided once per starter: the
        drivers call ``self._binders[type(op)](op)`` and call or await what it returns. The
        target's method is still looked up per operation (a method patched on the class later is
        honoured, as before)."""
        # The closures hold what they serve, never ``self``: the table adds no reference cycle
        # through the starter (the telemetry's weak set of starters counts on prompt collection).
        arguments, method = call.arguments, call.method
        if call.target == "clock":
            sleep = self._sleep
            return lambda op: (sleep, arguments(op), _NO_KWARGS)
        if call.target == "backend":
            transport, clock = self._transport, self._clock

            def timed(op: Any) -> Bound:
                return getattr(transport, method), arguments(op), {"timeout": _time_left(op, clock)}

            return timed
        lock = self._lock
        if not self._namespace:
            return lambda op: (getattr(lock, method), arguments(op), _NO_KWARGS)
        namespace = self._namespace
        on_key = self._on_key_async if self._is_async else self._on_key

        def scoped(op: Any) -> Bound:
            instance_id, *rest = arguments(op)
            return on_key, (getattr(lock, method), instance_id, lock_key(namespace, instance_id), *rest), _NO_KWARGS

        return scoped

    @staticmethod
    def _on_key(fn: Callable[..., Any], instance_id: str, key: str, *args: Any) -> Any:
        """``fn`` on the namespaced ``key``; its errors name the instance ID, not the key."""
        try:
            return fn(key, *args)
        except StrictSingletonError as exc:
            if exc.instance_id == key:
                exc.instance_id = instance_id
            raise

    @staticmethod
    async def _on_key_async(fn: Callable[..., Any], instance_id: str, key: str, *args: Any) -> Any:
        """:meth:`_on_key` for an async lease backend."""
        try:
            return await fn(key, *args)
        except StrictSingletonError as exc:
            if exc.instance_id == key:
                exc.instance_id = instance_id
            raise
