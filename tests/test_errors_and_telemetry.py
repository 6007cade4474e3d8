"""The error tree pickles with its context; one log record and one span per start."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
from durabletask.client import TaskHubGrpcClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from strict_singleton import (
    BackendError,
    InvalidArgumentError,
    InvalidInstanceIdError,
    LeaseLostError,
    LockUnavailableError,
    ScheduleError,
    SingletonStarter,
    StrictSingletonError,
)
from strict_singleton.lock_backends import FileLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend

ERRORS = [
    InvalidArgumentError("bad", instance_id="i", backend="b"),
    InvalidInstanceIdError("bad id", instance_id="i"),
    LockUnavailableError("down", instance_id="i", backend="redis(h:1/0)"),
    LeaseLostError("lost", instance_id="i", backend="b"),
    BackendError("read failed", instance_id="i", backend="b"),
    ScheduleError("boom", instance_id="i", backend="b", maybe_scheduled=True, grpc_code="UNAVAILABLE"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_context(error: StrictSingletonError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.message, copy.instance_id, copy.backend, str(copy)) == (
        error.message,
        error.instance_id,
        error.backend,
        str(error),
    )
    assert isinstance(copy, StrictSingletonError)
    if isinstance(error, ScheduleError):
        assert isinstance(copy, ScheduleError)
        assert (copy.maybe_scheduled, copy.grpc_code) == (True, "UNAVAILABLE")


def test_invalid_input_errors_are_value_errors() -> None:
    assert issubclass(InvalidInstanceIdError, ValueError)
    assert issubclass(InvalidArgumentError, ValueError)


def test_one_log_record_per_start(
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    starter = SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(background_finish=False))
    with caplog.at_level(logging.INFO, logger="strict_singleton"):
        starter.start("orch", instance_id="logged")
        starter.start("orch", instance_id="logged")
    records = [r for r in caplog.records if r.name == "strict_singleton"]
    assert [r.strict_singleton["strict_singleton.outcome"] for r in records] == ["started", "already_running"]  # type: ignore[attr-defined]
    attrs = records[0].strict_singleton  # type: ignore[attr-defined]
    assert attrs["strict_singleton.instance_id"] == "logged"
    assert attrs["strict_singleton.lock_backend"].startswith("file(")
    assert "strict_singleton.waited_s" in attrs and attrs["strict_singleton.fencing_token"] == 1


def test_one_span_per_start(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    starter = SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions(background_finish=False))
    starter.start("orch", instance_id="traced")
    with pytest.raises(InvalidInstanceIdError):
        starter.start("orch", instance_id="")  # rejected before the span: no span
    spans = [s for s in exporter.get_finished_spans() if s.name == "strict_singleton.start"]
    assert len(spans) == 1
    assert spans[0].attributes is not None
    assert spans[0].attributes["strict_singleton.outcome"] == "started"
    assert spans[0].attributes["strict_singleton.instance_id"] == "traced"
