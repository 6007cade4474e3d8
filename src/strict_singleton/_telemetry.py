"""One log record and (with ``opentelemetry-api`` installed) one span per start.

Attributes, on both: ``strict_singleton.instance_id``, ``strict_singleton.outcome``
(or ``strict_singleton.error``), ``strict_singleton.waited_s``,
``strict_singleton.lock_backend``, ``strict_singleton.fencing_token``. No secrets:
backend names never carry credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from strict_singleton.result import StartResult

logger = logging.getLogger("strict_singleton")

try:  # optional dependency: the 'otel' extra
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None  # type: ignore[assignment]

SPAN_NAME = "strict_singleton.start"


class StartObservation:
    """Collects what one start did, for the log record and the span."""

    def __init__(self) -> None:
        self.result: StartResult | None = None

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
def observe_start(instance_id: str, backend: str) -> Iterator[StartObservation]:
    span_cm: Any = None
    span: Any = None
    if _otel_trace is not None and _tracing_configured():
        span_cm = _otel_trace.get_tracer("strict_singleton").start_as_current_span(
            SPAN_NAME, record_exception=False, set_status_on_exception=False
        )
        span = span_cm.__enter__()
    obs = StartObservation()
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
        if span is not None:
            span.set_attributes(attrs)
            if error is not None:
                span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, type(error).__name__))
            span_cm.__exit__(None, None, None)
