"""What a start leaves for its operators: one log record, one span (with a tracer provider set)
and metrics (with a meter provider set), through the OpenTelemetry API only (the ``otel`` extra).

Log and span attributes: ``strict_singleton.instance_id``, ``strict_singleton.outcome`` (or
``strict_singleton.error``), ``strict_singleton.waited_s``, ``strict_singleton.lock_backend``,
``strict_singleton.fencing_token``. No secrets: backend names never carry credentials.

Metrics (the table in docs/observability.md) never carry the instance ID (unbounded
cardinality). Spans and metrics cost nothing while no provider is set: the global provider
is looked at on every start (so a provider set later takes effect at once) and a proxy or
no-op one means no instrument is made and nothing is recorded. Instruments are made once per
meter provider.

The drivers feed the metrics from what they already see: the call's answer or error, a lock
store operation that raised (also inside background finishes, where a failure is only logged),
and the :class:`~strict_singleton._flow.Notes` the flow writes (its waits and its ambiguity
watch), read when the start flow has ended, which may be after the call ended (a flow handed to
the background after an interruption).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from strict_singleton import _flow
from strict_singleton.result import StartResult

logger = logging.getLogger("strict_singleton")

try:  # optional dependency: the 'otel' extra
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None  # type: ignore[assignment]

try:
    from opentelemetry import metrics as _otel_metrics
except ImportError:  # pragma: no cover - depends on the environment
    _otel_metrics = None  # type: ignore[assignment]

# The global provider is a proxy until one is set. Its class is private to the API package: if
# a release moves it, the proxy is still told by its name, so metrics never silently stop.
_NO_METER_NAMES = frozenset({"NoOpMeterProvider", "_ProxyMeterProvider"})

_F = TypeVar("_F", bound=Callable[..., Any])
_failure_logged = False


def _never_raises(default: Any = None) -> Callable[[_F], _F]:
    """Telemetry must never change a start's answer, nor stop its clean-up: an exception from a
    provider, an instrument or a user's exemplar filter or view is logged (with its traceback,
    once per process; later ones at DEBUG) and swallowed, and ``default`` is returned."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            global _failure_logged
            try:
                return fn(*args, **kwargs)
            except Exception:
                level = logging.DEBUG if _failure_logged else logging.WARNING
                _failure_logged = True
                logger.log(level, "telemetry failed in %s; the start is not affected", fn.__qualname__, exc_info=True)
                return default

        return guarded  # type: ignore[return-value]

    return wrap


SPAN_NAME = "strict_singleton.start"
METER_NAME = "strict_singleton"

# Instrument names (docs/observability.md, "Metrics").
STARTS = "strict_singleton.starts"
START_DURATION = "strict_singleton.start.duration"
LEASE_WAIT = "strict_singleton.lease.wait.duration"
RECORD_WAIT = "strict_singleton.start_record.wait.duration"
WATCHES = "strict_singleton.ambiguity_watches"
LOCK_ERRORS = "strict_singleton.lock_store.errors"
FINISHES_PENDING = "strict_singleton.finishes.pending"

# Metric attributes.
LOCK_BACKEND = "strict_singleton.lock_backend"
OUTCOME = "strict_singleton.outcome"
ERROR_TYPE = "error.type"
OPERATION = "strict_singleton.lock_store.operation"
WATCH_RESULT = "strict_singleton.watch.result"
RECORD_RESULT = "strict_singleton.start_record.wait.result"

# Seconds; 0 is a bucket boundary of its own: most callers do not wait at all.
_BUCKETS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _histogram(meter: Any, name: str, description: str) -> Any:
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=_BUCKETS
        )
    except TypeError:  # opentelemetry-api before 1.23 takes no advisory buckets
        return meter.create_histogram(name, unit="s", description=description)


class Instruments:
    """The instruments of one meter provider (made once per provider: :func:`_instruments`)."""

    def __init__(self, provider: Any) -> None:
        from strict_singleton import __version__

        meter = provider.get_meter(METER_NAME, __version__)
        self.starts = meter.create_counter(
            STARTS, unit="{start}", description="Starts (start and start_or_signal calls), by outcome"
        )
        self.duration = _histogram(meter, START_DURATION, "How long a start call took, as seen by its caller")
        self.lease_wait = _histogram(meter, LEASE_WAIT, "How long a start waited for another holder's lease")
        self.record_wait = _histogram(
            meter, RECORD_WAIT, "How long a lease holder re-read until an earlier start's record showed"
        )
        self.watches = meter.create_counter(
            WATCHES, unit="{watch}", description="Watches for the instance after an ambiguous schedule failure"
        )
        self.lock_errors = meter.create_counter(
            LOCK_ERRORS, unit="{error}", description="Lock store operations that raised"
        )
        self.pending = meter.create_observable_up_down_counter(
            FINISHES_PENDING,
            callbacks=[_observe_pending],
            unit="{finish}",
            description="Background finishes (releases, visibility holds, clean-ups) not yet run to their end",
        )


_by_provider: weakref.WeakKeyDictionary[Any, Instruments] = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def _instruments() -> Instruments | None:
    """The instruments of the global meter provider; ``None`` while none is set (proxy or no-op).

    Checked on every start, so a provider set later takes effect at once.
    """
    if _otel_metrics is None:
        return None
    provider = _otel_metrics.get_meter_provider()
    if type(provider).__name__ in _NO_METER_NAMES:
        return None
    try:
        found = _by_provider.get(provider)
    except TypeError:  # a provider that takes no weak reference: not cached
        return Instruments(provider)
    if found is None:
        with _by_provider_lock:
            found = _by_provider.get(provider)
            if found is None:
                found = _by_provider[provider] = Instruments(provider)
    return found


# Starters whose background finishes the pending gauge counts (weakly: a dropped starter leaves it).
_starters: weakref.WeakSet[Any] = weakref.WeakSet()
_starters_lock = threading.Lock()


def track_finishes(starter: Any) -> None:
    """Count ``starter``'s pending background finishes (``_pending_finishes()``) in the gauge."""
    with _starters_lock:
        _starters.add(starter)


@_never_raises(default=())
def _observe_pending(_options: Any) -> Iterable[Any]:
    with _starters_lock:
        starters = list(_starters)
    totals: dict[str, int] = {}
    for starter in starters:
        totals[starter._backend_name] = totals.get(starter._backend_name, 0) + starter._pending_finishes()
    return [_otel_metrics.Observation(n, {LOCK_BACKEND: name}) for name, n in totals.items()]


class StartMetrics:
    """One start's metrics: recorded when the call ends (:meth:`call_ended`), when its start
    flow ends (:meth:`flow_ended`, once), and whenever a lock store operation raises
    (:meth:`op_failed`, also in the start's background finish)."""

    __slots__ = ("_began", "_clock", "_flow_done", "_inst", "backend", "notes")

    def __init__(self, inst: Instruments, backend: str, clock: Callable[[], float]) -> None:
        self._inst = inst
        self.backend = backend
        self._clock = clock
        self._began = clock()
        self._flow_done = False
        self.notes = _flow.Notes()

    @_never_raises()
    def op_failed(self, op: _flow.Op, exc: BaseException) -> None:
        call = _flow.call_of(op)
        if call.target == "lock":
            attrs = {LOCK_BACKEND: self.backend, OPERATION: call.method, ERROR_TYPE: type(exc).__name__}
            self._inst.lock_errors.add(1, attrs)

    @_never_raises()
    def call_ended(self, result: StartResult | None, error: BaseException | None) -> None:
        if result is not None:
            attrs = {LOCK_BACKEND: self.backend, OUTCOME: result.outcome.value}
        elif error is not None:
            attrs = {LOCK_BACKEND: self.backend, OUTCOME: "error", ERROR_TYPE: type(error).__name__}
        else:  # pragma: no cover - a call ends with an answer or an error
            return
        self._inst.starts.add(1, attrs)
        self._inst.duration.record(max(0.0, self._clock() - self._began), attrs)
        if self.notes.lease_asked:
            self._inst.lease_wait.record(self.notes.lease_waited, attrs)

    @_never_raises()
    def flow_ended(self) -> None:
        """The start flow ended (answer, error, or its clean-up in the background): what it noted."""
        if self._flow_done:
            return
        self._flow_done = True
        notes = self.notes
        if notes.record_wait_began is not None:
            ended = notes.record_wait_ended
            result = "error" if ended is None else "shown" if notes.record_shown else "expired"
            waited = (ended if ended is not None else self._clock()) - notes.record_wait_began
            self._inst.record_wait.record(max(0.0, waited), {LOCK_BACKEND: self.backend, RECORD_RESULT: result})
        if notes.watch is not None:
            result = "interrupted" if notes.watch == "watching" else notes.watch
            self._inst.watches.add(1, {LOCK_BACKEND: self.backend, WATCH_RESULT: result})


@_never_raises()
def start_metrics(backend: str, clock: Callable[[], float]) -> StartMetrics | None:
    """A start's metrics, or ``None`` (nothing to do) while no meter provider is set."""
    inst = _instruments()
    return None if inst is None else StartMetrics(inst, backend, clock)


class StartObservation:
    """Collects what one start did, for the log record, the span and the metrics."""

    def __init__(self, metrics: StartMetrics | None) -> None:
        self.result: StartResult | None = None
        self.metrics = metrics

    def record(self, result: StartResult) -> StartResult:
        self.result = result
        return result


def _tracing_configured() -> bool:
    """False while no tracer provider is set (every span would be a no-op): skip the span's cost.

    Checked on every start, so a provider set later takes effect at once.
    """
    provider = _otel_trace.get_tracer_provider()
    return not isinstance(provider, (_otel_trace.ProxyTracerProvider, _otel_trace.NoOpTracerProvider))


@contextmanager
def observe_start(instance_id: str, backend: str, clock: Callable[[], float]) -> Iterator[StartObservation]:
    span_cm, span = _begin_span()
    obs = StartObservation(start_metrics(backend, clock))
    attrs: dict[str, Any] = {"strict_singleton.instance_id": instance_id, "strict_singleton.lock_backend": backend}
    error: BaseException | None = None
    try:
        yield obs
    except BaseException as exc:
        error = exc
        raise
    finally:
        if obs.result is not None:
            attrs["strict_singleton.outcome"] = obs.result.outcome.value
            attrs["strict_singleton.waited_s"] = round(obs.result.waited, 6)
            attrs["strict_singleton.elapsed_s"] = round(obs.result.elapsed, 6)
            if obs.result.fencing_token is not None:
                attrs["strict_singleton.fencing_token"] = obs.result.fencing_token
            logger.info(
                "start instance_id=%r outcome=%s waited=%.3fs lock_backend=%s",
                instance_id,
                obs.result.outcome.value,
                obs.result.waited,
                backend,
                extra={"strict_singleton": dict(attrs)},
            )
        elif error is not None:
            attrs["strict_singleton.error"] = type(error).__name__
            logger.info(
                "start instance_id=%r error=%s lock_backend=%s",
                instance_id,
                type(error).__name__,
                backend,
                extra={"strict_singleton": dict(attrs)},
            )
        if obs.metrics is not None:
            obs.metrics.call_ended(obs.result, error)
        if span is not None:
            _end_span(span_cm, span, attrs, error)


@_never_raises(default=(None, None))
def _begin_span() -> tuple[Any, Any]:
    """The start's span and its context manager, or ``(None, None)`` while no tracer provider is set."""
    if _otel_trace is None or not _tracing_configured():
        return None, None
    span_cm = _otel_trace.get_tracer("strict_singleton").start_as_current_span(
        SPAN_NAME, record_exception=False, set_status_on_exception=False
    )
    return span_cm, span_cm.__enter__()


@_never_raises()
def _end_span(span_cm: Any, span: Any, attrs: dict[str, Any], error: BaseException | None) -> None:
    span.set_attributes(attrs)
    if error is not None:
        span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, type(error).__name__))
    span_cm.__exit__(None, None, None)
