"""The cost of telemetry per start: uncontended starts with no OpenTelemetry provider set, with a
meter provider (and an in-memory reader), and with a meter and a tracer provider, side by side.

One sync starter with a file lease against the in-memory Durable backend over gRPC in this
process (CPU-bound: the whole start is client, server and lock on two cores, so the ratio is an
upper bound of what telemetry adds to a start against a remote backend). The variants take turns
within each repetition, on fresh instance IDs; the providers are set through the global API as an
application sets them (the API's set-once globals are reset between variants, as the tests do).
Figures: the median over repetitions of the mean time per start, and its ratio to no provider.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VARIANTS = ("none", "metrics", "metrics+tracing")
WARM_UP = 5


@contextmanager
def _providers(variant: str) -> Iterator[Any]:
    """Set the global meter (and tracer) provider for ``variant``; put the API's globals back after."""
    import opentelemetry.metrics._internal as metrics_internal
    import opentelemetry.trace as trace_api
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    saved = (
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
        trace_api._TRACER_PROVIDER,
        trace_api._TRACER_PROVIDER_SET_ONCE,
    )
    metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE = None, Once()
    trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE = None, Once()
    meter_provider: Any = None
    tracer_provider: Any = None
    reader: Any = None
    try:
        if variant != "none":
            reader = InMemoryMetricReader()
            meter_provider = MeterProvider(metric_readers=[reader])
            metrics.set_meter_provider(meter_provider)
        if variant == "metrics+tracing":
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
            trace_api.set_tracer_provider(tracer_provider)
        yield reader
    finally:
        if meter_provider is not None:
            meter_provider.shutdown()
        if tracer_provider is not None:
            tracer_provider.shutdown()
        (
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE,
            trace_api._TRACER_PROVIDER,
            trace_api._TRACER_PROVIDER_SET_ONCE,
        ) = saved


def _counted_starts(reader: Any) -> int:
    data = reader.get_metrics_data()
    return sum(
        int(p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "strict_singleton.starts"
        for p in m.data.data_points
    )


def run(*, quick: bool, reps: int) -> dict[str, Any]:
    from durabletask.client import TaskHubGrpcClient

    from strict_singleton import SingletonStarter, StartOutcome
    from strict_singleton.lock_backends import FileLease
    from strict_singleton.testing import DurableTestBackend

    starts = 30 if quick else 300
    reps = 1 if quick else max(reps, 9)
    per_start_us: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS if v != "none"}
    with DurableTestBackend() as backend, tempfile.TemporaryDirectory(prefix="ss-bench-otel-") as tmp:
        client = TaskHubGrpcClient(host_address=backend.address)
        lock = FileLease(Path(tmp))
        for rep in range(reps):
            means: dict[str, float] = {}
            for variant in VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]:  # each variant first in turn: no order bias
                with _providers(variant) as reader, SingletonStarter(client, lock=lock) as starter:
                    prefix = f"{variant}-{uuid.uuid4().hex}"
                    for i in range(WARM_UP):  # the connection, the background worker, the instruments
                        starter.start("orch", instance_id=f"{prefix}-warm-{i}")
                    t = time.perf_counter()
                    for i in range(starts):
                        result = starter.start("orch", instance_id=f"{prefix}-{i}")
                        assert result.outcome is StartOutcome.STARTED
                    means[variant] = (time.perf_counter() - t) / starts * 1e6
                    starter.close()  # this variant's background releases, under its providers
                    if reader is not None:
                        assert _counted_starts(reader) == WARM_UP + starts, variant
                per_start_us[variant].append(means[variant])
            for variant in ratios:
                ratios[variant].append(means[variant] / means["none"])
        lock.close()
        client.close()
    return {
        "starts_per_variant": starts,
        "reps": reps,
        "per_start_us": per_start_us,
        "ratio": ratios,
        "median_per_start_us": {v: statistics.median(xs) for v, xs in per_start_us.items()},
        "median_ratio": {v: statistics.median(xs) for v, xs in ratios.items()},
        "median_added_us": {
            v: statistics.median(a - b for a, b in zip(per_start_us[v], per_start_us["none"], strict=True))
            for v in ratios
        },
    }


def render(result: dict[str, Any]) -> str:
    rows = ["| none | {:.0f} | - | 1.00 |".format(result["median_per_start_us"]["none"])]
    rows += [
        f"| {v} | {result['median_per_start_us'][v]:.0f} | {result['median_added_us'][v]:+.0f} | "
        f"{result['median_ratio'][v]:.3f} ({min(result['ratio'][v]):.3f}-{max(result['ratio'][v]):.3f}) |"
        for v in VARIANTS[1:]
    ]
    return (
        f"### Telemetry: cost per uncontended start ({result['starts_per_variant']} starts x "
        f"{result['reps']} repetitions per variant, side by side)\n\n"
        "| providers set | µs per start (median) | µs added (median of pairs) | ratio to none (spread) |\n"
        "|---|---|---|---|\n" + "\n".join(rows)
    )


__all__ = ["VARIANTS", "render", "run"]
