"""The uncontended start path's shortcuts do what the long way did: the input serialized once
(still before any lease), the op table built once per starter, an owner token of the same form,
the printable-ASCII shortcut of the ID checks, ``StartCall.with_request``. No server needed."""

from __future__ import annotations

import asyncio
import dataclasses
import unicodedata
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.serialization import JsonDataConverter

from strict_singleton import AsyncSingletonStarter, SingletonStarter, StartOutcome, _flow
from strict_singleton._harness.strategies import AsyncUnsafeNoLease, UnsafeNoLease
from strict_singleton._starter_core import _new_token
from strict_singleton._validation import (
    _FORBIDDEN_CATEGORIES,
    StartCall,
    validate_instance_id,
    validate_request_id,
)
from strict_singleton.errors import InvalidArgumentError, InvalidInstanceIdError, LockUnavailableError
from strict_singleton.options import StarterOptions
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.transport import DurableTaskTransport


class CountingConverter(JsonDataConverter):
    """Counts serializations; raises for a value marked unserializable."""

    def __init__(self) -> None:
        super().__init__()
        self.serialized: list[Any] = []

    def serialize(self, value: Any) -> str:
        self.serialized.append(value)
        if value == "cannot":
            raise ValueError("refused")
        return str(super().serialize(value))


class FakeStub:
    """The client's gRPC stub, answering at once: no instance, then created."""

    def GetInstance(self, request: Any, timeout: float | None = None) -> Any:
        return pb.GetInstanceResponse(exists=False)

    def StartInstance(self, request: Any, timeout: float | None = None) -> Any:
        return pb.CreateInstanceResponse(instanceId=request.instanceId)

    def RaiseEvent(self, request: Any, timeout: float | None = None) -> Any:
        return pb.RaiseEventResponse()


class CountingLease(UnsafeNoLease):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.acquired = 0

    def acquire(self, instance_id: str, token: str, ttl: float) -> Any:
        self.acquired += 1
        return super().acquire(instance_id, token, ttl)

    # Keeps (discards) start records, so a start's finish is a release, not a visibility hold.
    def release_with_record(self, instance_id: str, token: str, record: Any, ttl: float) -> bool:
        return True

    def record_start(self, instance_id: str, token: str, record: Any, ttl: float) -> bool:
        return True


def sync_starter(converter: CountingConverter, lock: Any = None, **kwargs: Any) -> SingletonStarter:
    client = TaskHubGrpcClient(host_address="127.0.0.1:1", data_converter=converter)
    client._stub = FakeStub()  # type: ignore[assignment]
    return SingletonStarter(client, lock=lock if lock is not None else CountingLease(), lease_ttl=15, **kwargs)


def test_the_input_is_serialized_once_per_start() -> None:
    converter = CountingConverter()
    starter = sync_starter(converter, options=StarterOptions(background_finish=False))
    assert isinstance(starter._transport, DurableTaskTransport) and starter._transport.bounds_calls
    result = starter.start("orch", instance_id="once", input={"k": [1, 2]})
    assert result.outcome is StartOutcome.STARTED
    assert converter.serialized == [{"k": [1, 2]}]


def test_start_or_signal_serializes_the_input_and_the_event_data_before_the_lease() -> None:
    converter = CountingConverter()
    lock = CountingLease()
    starter = sync_starter(converter, lock=lock, options=StarterOptions(background_finish=False))
    call, _token = starter._prepare(
        orchestrator="orch", instance_id="sig", input="in", tags=None, version=None, signal=("ev", "data")
    )
    assert converter.serialized == ["in", "data"] and call.request is not None and lock.acquired == 0
    with pytest.raises(InvalidArgumentError, match="cannot be serialized"):
        starter.start_or_signal("orch", instance_id="sig", event_name="ev", event_data="cannot")
    assert lock.acquired == 0


def test_an_unserializable_input_is_refused_before_any_lease_with_the_same_message() -> None:
    converter = CountingConverter()
    lock = CountingLease()
    starter = sync_starter(converter, lock=lock)
    with pytest.raises(InvalidArgumentError) as caught:
        starter.start("orch", instance_id="bad", input="cannot")
    assert str(caught.value).startswith(
        "input cannot be serialized by the client's data converter: ValueError: refused"
    )
    assert caught.value.instance_id == "bad" and lock.acquired == 0
    assert converter.serialized == ["cannot"]


def test_a_transport_of_the_callers_own_still_gets_the_input_checked() -> None:
    """Only the durabletask transport is known to serialize with the client's converter."""

    class OwnTransport:
        bounds_calls = True

        def prepare(self, call: StartCall, *, backend: str) -> StartCall:
            return call.with_request(object())  # built something, serialized nothing

        def read(self, instance_id: str, payloads: bool, *, timeout: float | None) -> Any:
            return None

        def schedule(self, call: StartCall, tags: dict[str, str], *, timeout: float | None) -> Any:
            return call.instance_id

        def terminate(self, instance_id: str, reason: str, *, timeout: float | None) -> Any:
            return None

        def raise_event(self, instance_id: str, event_name: str, data: Any, *, timeout: float | None) -> Any:
            return None

    lock = CountingLease()
    starter = SingletonStarter(OwnTransport(), lock=lock, lease_ttl=15)
    with pytest.raises(InvalidArgumentError, match="cannot be serialized"):
        starter.start("orch", instance_id="own", input=object())
    assert lock.acquired == 0


def test_with_request_carries_every_field() -> None:
    values: dict[str, Any] = {
        "instance_id": "iid",
        "orchestrator": "orch",
        "input": {"x": 1},
        "tags": {"a": "b"},
        "version": "v1",
        "start_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
        "request": None,
        "reuse": ReusePolicy.REJECT_DUPLICATE,
        "on_conflict": ConflictPolicy.TERMINATE_EXISTING,
        "terminate_timeout": 12.5,
        "signal": ("ev", [1]),
        "request_id": "rid",
    }
    assert set(values) == {f.name for f in dataclasses.fields(StartCall)}, "a new field: add it to with_request"
    call = StartCall(**values)
    marker = object()
    assert call.with_request(marker) == dataclasses.replace(call, request=marker)


def test_the_owner_token_is_a_version_4_uuid_in_its_text_form() -> None:
    tokens = {_new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        parsed = uuid.UUID(token)
        assert str(parsed) == token and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("code", range(128))
def test_the_ascii_shortcut_decides_as_the_character_categories_do(code: int) -> None:
    char = chr(code)
    forbidden = unicodedata.category(char) in _FORBIDDEN_CATEGORIES
    for text in (f"a{char}b", f"id-{char}-{'x' * 40}"):
        if forbidden:
            with pytest.raises(InvalidInstanceIdError, match="control character"):
                validate_instance_id(text)
            with pytest.raises(InvalidArgumentError):
                validate_request_id(text)
        else:
            assert validate_instance_id(text) == text
            assert validate_request_id(text) == text


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\ud800", "\x85", "\u200b"])
def test_non_ascii_ids_still_go_through_the_categories(char: str) -> None:
    text = f"a{char}b"
    if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
        with pytest.raises(InvalidInstanceIdError):
            validate_instance_id(text)
        with pytest.raises(InvalidArgumentError):
            validate_request_id(text)
    else:
        assert validate_instance_id(text) == text


def test_the_op_table_is_built_once_and_covers_every_operation() -> None:
    starter = sync_starter(CountingConverter())
    assert set(starter._binders) == set(_flow.CALLS)
    binders = starter._binders
    starter.start("orch", instance_id="table")
    starter.close()
    assert starter._binders is binders


def test_a_lock_method_patched_after_the_starter_was_built_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table binds the method name, not the method: a patch on the class still takes effect."""
    lock = CountingLease()
    starter = sync_starter(CountingConverter(), lock=lock, options=StarterOptions(background_finish=False))

    def refuse(self: Any, instance_id: str, token: str, ttl: float) -> Any:
        raise LockUnavailableError("patched", instance_id=instance_id, backend="counting")

    monkeypatch.setattr(CountingLease, "acquire", refuse)
    with pytest.raises(LockUnavailableError, match="patched"):
        starter.start("orch", instance_id="patched")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_namespaced_lock_error_names_the_instance_id_not_the_key(kind: str) -> None:
    seen: list[str] = []

    def refuse(instance_id: str) -> None:
        seen.append(instance_id)
        raise LockUnavailableError("down", instance_id=instance_id, backend="x")

    class Sync(UnsafeNoLease):
        def acquire(self, instance_id: str, token: str, ttl: float) -> Any:
            refuse(instance_id)

    class Async(AsyncUnsafeNoLease):
        async def acquire(self, instance_id: str, token: str, ttl: float) -> Any:
            refuse(instance_id)

    options = StarterOptions(namespace="hub")
    if kind == "sync":
        client = TaskHubGrpcClient(host_address="127.0.0.1:1")
        with pytest.raises(LockUnavailableError) as caught:
            SingletonStarter(client, lock=Sync(), options=options).start("orch", instance_id="iid")
    else:

        async def run() -> None:
            client = AsyncTaskHubGrpcClient(host_address="127.0.0.1:1")
            await AsyncSingletonStarter(client, lock=Async(), options=options).start("orch", instance_id="iid")

        with pytest.raises(LockUnavailableError) as caught:
            asyncio.run(run())
    assert caught.value.instance_id == "iid"
    assert seen and seen[0] != "iid" and seen[0].endswith("iid")
