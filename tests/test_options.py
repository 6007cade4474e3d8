"""One options value: StarterOptions is the single source of the starters' defaults, checked
when it is made; presets are plain values; a starter reports what it runs on; and the backend is
reached through a Transport a caller may supply."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, InvalidArgumentError, SingletonStarter, StartOutcome
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.options import DEFAULT_LEASE_TTL, StarterOptions
from strict_singleton.testing import DurableTestBackend
from strict_singleton.transport import DurableTaskTransport, Transport


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility_timeout", 0),
        ("visibility_timeout", math.nan),
        ("ambiguity_timeout", -1),
        ("confirm_after", math.inf),
        ("clock_skew", -0.1),
        ("request_ttl", 0),
        ("request_ttl", 10**400),
        ("schedule_margin", -1),
        ("max_instance_id_length", 0),
        ("max_instance_id_length", True),
        ("confirm_visible", 1),
        ("namespace", 7),
    ],
)
def test_a_bad_value_is_refused_when_the_options_are_made(field: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        StarterOptions(**{field: value})
    with pytest.raises(InvalidArgumentError, match=field):
        StarterOptions().replace(**{field: value})


def test_options_are_frozen_and_keyword_only() -> None:
    options = StarterOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.clock_skew = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        StarterOptions(1.0)  # type: ignore[misc]


def test_presets_are_values_and_derive_with_replace() -> None:
    assert StarterOptions.STRONGLY_CONSISTENT.confirm_visible is False
    lagging = StarterOptions.LAGGING_HOST
    assert (lagging.visibility_timeout, lagging.ambiguity_timeout) == (120.0, 120.0)
    tuned = lagging.replace(clock_skew=2.0)
    assert tuned.clock_skew == 2.0 and tuned.visibility_timeout == 120.0
    assert StarterOptions.LAGGING_HOST.clock_skew == 5.0  # the preset itself is unchanged


def test_derived_defaults_follow_the_lease() -> None:
    short = StarterOptions().resolved(6.0)
    assert (short.schedule_margin, short.visibility_timeout, short.ambiguity_timeout) == (2.0, 30.0, 30.0)
    long = StarterOptions().resolved(90.0)
    assert (long.schedule_margin, long.visibility_timeout, long.ambiguity_timeout) == (30.0, 90.0, 90.0)


def test_a_starter_reports_what_it_runs_on(client: TaskHubGrpcClient, tmp_path: Path) -> None:
    starter = SingletonStarter(client, lock=FileLease(tmp_path), options=StarterOptions.LAGGING_HOST)
    assert starter.lease_ttl == DEFAULT_LEASE_TTL and starter.wait == DEFAULT_LEASE_TTL
    assert starter.options == StarterOptions(
        schedule_margin=DEFAULT_LEASE_TTL / 3,
        visibility_timeout=120.0,
        ambiguity_timeout=120.0,
        namespace="",
    )
    quick = SingletonStarter(client, lock=FileLease(tmp_path), lease_ttl=3, wait=0)
    assert (quick.lease_ttl, quick.wait, quick.options.schedule_margin) == (3.0, 0.0, 1.0)


def test_the_margin_is_checked_against_the_lease(client: TaskHubGrpcClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="schedule_margin"):
        SingletonStarter(client, lock=FileLease(tmp_path), lease_ttl=1, options=StarterOptions(schedule_margin=1))
    assert not list(tmp_path.iterdir())


def test_options_go_in_the_options_value(client: TaskHubGrpcClient, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="visibility_timeout"):
        SingletonStarter(client, lock=FileLease(tmp_path), visibility_timeout=5)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match="StarterOptions"):
        SingletonStarter(client, lock=FileLease(tmp_path), options={"clock_skew": 1})  # type: ignore[arg-type]


class _CountingTransport:
    """A caller's own transport: the durabletask one, counting the calls it serves."""

    def __init__(self, client: Any, *, is_async: bool) -> None:
        self.inner = DurableTaskTransport(client, is_async=is_async)
        self.bounds_calls = self.inner.bounds_calls
        self.calls: list[str] = []

    def prepare(self, call: Any, *, backend: str) -> Any:
        return self.inner.prepare(call, backend=backend)

    def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:
        self.calls.append("read")
        return self.inner.read(instance_id, payloads, timeout=timeout)

    def schedule(self, call: Any, tags: dict[str, str], *, timeout: float | None) -> Any:
        self.calls.append("schedule")
        return self.inner.schedule(call, tags, timeout=timeout)

    def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> Any:
        self.calls.append("terminate")
        return self.inner.terminate(instance_id, reason, timeout=timeout)

    def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> Any:
        self.calls.append("raise_event")
        return self.inner.raise_event(instance_id, event_name, data, timeout=timeout)


class _AsyncCountingTransport(_CountingTransport):
    async def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:  # type: ignore[override]
        return await super().read(instance_id, payloads, timeout=timeout)

    async def schedule(self, call: Any, tags: dict[str, str], *, timeout: float | None) -> Any:  # type: ignore[override]
        return await super().schedule(call, tags, timeout=timeout)


def test_a_starter_sends_through_a_transport_it_is_given(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    client = TaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
    transport = _CountingTransport(client, is_async=False)
    assert isinstance(transport, Transport)
    starter = SingletonStarter(transport, lock=FileLease(tmp_path), options=StarterOptions(background_finish=False))
    assert starter.start("orch", instance_id="through").outcome is StartOutcome.STARTED
    assert starter.start("orch", instance_id="through").outcome is StartOutcome.ALREADY_RUNNING
    assert transport.calls == ["read", "schedule", "read"]
    assert strict_singleton_durable_backend.instance_count() == 1
    client.close()


def test_an_async_starter_sends_through_an_async_transport(
    strict_singleton_durable_backend: DurableTestBackend, tmp_path: Path
) -> None:
    async def scenario() -> list[str]:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        transport = _AsyncCountingTransport(client, is_async=True)
        with pytest.raises(InvalidArgumentError, match="sync transport"):
            SingletonStarter(transport, lock=FileLease(tmp_path))
        lock = AsyncFileLease(tmp_path)
        async with AsyncSingletonStarter(transport, lock=lock) as starter:
            result = await starter.start("orch", instance_id="through-async")
        await client.close()
        assert result.outcome is StartOutcome.STARTED
        return transport.calls

    assert asyncio.run(scenario()) == ["read", "schedule"]
    assert strict_singleton_durable_backend.instance_count() == 1
