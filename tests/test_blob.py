"""Azure Blob lease specifics, against the real Azurite emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobLeaseClient
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from hypothesis import given
from hypothesis import strategies as st

from strict_singleton import (
    AsyncSingletonStarter,
    InvalidArgumentError,
    InvalidInstanceIdError,
    LeaseLostError,
    LockUnavailableError,
    SingletonStarter,
)
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.lock_backends._blob_common import encode_instance_id, redact
from strict_singleton.lock_backends.blob import AsyncBlobLease, BlobLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend
from strict_singleton.testing.azurite import DEV_KEY, Azurite
from suite_helpers import FakeClock, token


def test_azurite_stopped_mid_suite_fails_closed_then_recovers(
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    strict_singleton_private_azurite: Azurite,
) -> None:
    lease = BlobLease(strict_singleton_private_azurite.container_client("locks"))
    with SingletonStarter(client, lock=lease, lease_ttl=15, options=StarterOptions(background_finish=False)) as starter:
        assert starter.start("orch", instance_id="before").started
        strict_singleton_private_azurite.stop()
        for i in range(8):
            with pytest.raises(LockUnavailableError) as info:
                starter.start("orch", instance_id=f"down-{i}")
            message = str(info.value)
            assert "azblob(devstoreaccount1/locks)" in message
            assert DEV_KEY not in message and "AccountKey" not in message
            assert info.value.__cause__ is None  # the SDK error (its text may carry a URL) is not chained
        assert strict_singleton_durable_backend.instance_count() == 1
        strict_singleton_private_azurite.start()  # same port, in-memory: the container is gone and is re-created lazily
        assert starter.start("orch", instance_id="after").started
    assert set(strict_singleton_durable_backend.ledger.snapshot().created) == {"before", "after"}


def test_azurite_stopped_async(
    strict_singleton_durable_backend: DurableTestBackend, strict_singleton_private_azurite: Azurite
) -> None:
    async def main() -> None:
        client = AsyncTaskHubGrpcClient(host_address=strict_singleton_durable_backend.address)
        container = strict_singleton_private_azurite.container_client("locks", asynchronous=True)
        async with AsyncSingletonStarter(client, lock=AsyncBlobLease(container), lease_ttl=15) as starter:
            assert (await starter.start("orch", instance_id="before")).started
            strict_singleton_private_azurite.stop()
            with pytest.raises(LockUnavailableError):
                await starter.start("orch", instance_id="down")
            strict_singleton_private_azurite.start()
            assert (await starter.start("orch", instance_id="after")).started
        await container.close()
        await client.close()

    asyncio.run(main())
    assert set(strict_singleton_durable_backend.ledger.snapshot().created) == {"before", "after"}


def test_lease_expiring_during_a_slow_read_means_no_schedule(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    clock = FakeClock()
    # the read "takes" 16 s of a 15 s lease
    strict_singleton_durable_backend.read_hook = lambda _iid: clock.advance(16.0)
    starter = SingletonStarter(
        client,
        lock=BlobLease(strict_singleton_azurite.container_client("locks")),
        lease_ttl=15,
        _clock=clock,
        options=StarterOptions(background_finish=False),
    )
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="slow")
    assert strict_singleton_durable_backend.instance_count() == 0
    strict_singleton_durable_backend.read_hook = None
    assert starter.start("orch", instance_id="slow").started  # our token-checked release freed it


def test_stolen_lease_is_noticed_by_renewal(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    lease = BlobLease(strict_singleton_azurite.container_client("locks"))
    blob = strict_singleton_azurite.container_client("locks").get_blob_client(lease.blob_name("stolen"))
    clock = FakeClock()
    thief = token("thief")

    def steal(_iid: str) -> None:
        BlobLeaseClient(blob).break_lease(lease_break_period=0)
        BlobLeaseClient(blob, lease_id=thief).acquire(lease_duration=15)
        clock.advance(6.0)  # past a third of the TTL: the starter renews before scheduling

    strict_singleton_durable_backend.read_hook = steal
    starter = SingletonStarter(client, lock=lease, lease_ttl=15, _clock=clock)
    with pytest.raises(LeaseLostError):
        starter.start("orch", instance_id="stolen")
    assert strict_singleton_durable_backend.instance_count() == 0
    BlobLeaseClient(blob, lease_id=thief).renew()  # the thief still holds it: nobody released it


@pytest.mark.parametrize(
    ("ttl", "message"),
    [(14, "15 to 60"), (61, "15 to 60"), (15.5, "whole number"), (10, "15 to 60"), (0, "> 0"), (-1, "> 0")],
)
def test_ttl_azure_cannot_honour_is_rejected(
    ttl: float, message: str, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SingletonStarter(client, lock=BlobLease(strict_singleton_azurite.container_client("locks")), lease_ttl=ttl)


@pytest.mark.parametrize("ttl", [15, 30, 60])
def test_ttl_azure_can_honour(
    ttl: int,
    strict_singleton_durable_backend: DurableTestBackend,
    client: TaskHubGrpcClient,
    strict_singleton_azurite: Azurite,
) -> None:
    starter = SingletonStarter(
        client, lock=BlobLease(strict_singleton_azurite.container_client("locks")), lease_ttl=ttl
    )
    assert starter.start("orch", instance_id=f"ttl-{ttl}").started
    starter.close()


AWKWARD_IDS = [
    "a/b",
    "what?",
    "hash#tag",
    "100%",
    "with inner spaces",
    "ünïcödé-日本語",
    "_5f",
    "trailing.",
    "..",
    "a\\b",
]


def test_awkward_ids_map_safely(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    lease = BlobLease(strict_singleton_azurite.container_client("locks"))
    with SingletonStarter(client, lock=lease, lease_ttl=15, options=StarterOptions(background_finish=False)) as starter:
        for iid in AWKWARD_IDS:
            result = starter.start("orch", instance_id=iid)
            assert result.started and result.fencing_token == 1
    names = {b.name for b in strict_singleton_azurite.container_client("locks").list_blobs()}
    assert names == {lease.blob_name(i) for i in AWKWARD_IDS}
    assert all(n.startswith("strict-singleton/id/") for n in names)


def test_ids_over_1024_characters(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    long_id = "x" * 1025
    lease = BlobLease(strict_singleton_azurite.container_client("locks"))
    starter = SingletonStarter(client, lock=lease, lease_ttl=15)
    with pytest.raises(InvalidInstanceIdError, match="maximum is 256"):
        starter.start("orch", instance_id=long_id)  # the default limit, before any lease
    roomy = SingletonStarter(
        client, lock=lease, lease_ttl=15, options=StarterOptions(max_instance_id_length=4000, background_finish=False)
    )
    assert roomy.start("orch", instance_id=long_id).started
    assert roomy.start("orch", instance_id="é" * 1025).started
    assert lease.blob_name(long_id).startswith("strict-singleton/sha256/")
    assert strict_singleton_durable_backend.ledger.snapshot().created[long_id] == 1


def decode(name: str) -> str | None:
    """The inverse of encode_instance_id's escaped form (None for the hashed form)."""
    if not name.startswith("id/"):
        return None
    text, out, i = name[3:], bytearray(), 0
    while i < len(text):
        if text[i] == "_":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode("utf-8")


@given(st.text(min_size=1, max_size=300))
def test_blob_name_mapping_is_injective(instance_id: str) -> None:
    encoded = encode_instance_id(instance_id)
    decoded = decode(encoded)
    assert decoded is None or decoded == instance_id  # decodable, hence injective
    assert len(encoded) <= 1000 and all(c.isascii() for c in encoded)


def test_no_secret_in_names_reprs_or_errors(strict_singleton_azurite: Azurite) -> None:
    lease = BlobLease.from_connection_string(strict_singleton_azurite.connection_string, container="locks")
    for text in (lease.name, repr(lease)):
        assert DEV_KEY not in text and "AccountKey" not in text
    with pytest.raises(InvalidArgumentError) as info:
        BlobLease.from_connection_string("AccountKey=hunter2;garbage", container="locks")
    assert "hunter2" not in str(info.value)
    sas = "https://acct.blob.core.windows.net/c/b?sv=2024-01-01&sig=SECRETSIG%3D&se=2030"
    assert "SECRETSIG" not in redact(f"failed: GET {sas}")
    assert "abc123" not in redact("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc123;")
    lease.close()


def test_missing_container_without_permission_to_create(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    lease = BlobLease(strict_singleton_azurite.container_client("absent"), create_container=False)
    with pytest.raises(LockUnavailableError, match="create_container=False"):
        SingletonStarter(client, lock=lease, lease_ttl=15).start("orch", instance_id="x")
    assert strict_singleton_durable_backend.instance_count() == 0


def test_fencing_token_lives_in_blob_metadata(
    strict_singleton_durable_backend: DurableTestBackend, client: TaskHubGrpcClient, strict_singleton_azurite: Azurite
) -> None:
    lease = BlobLease(strict_singleton_azurite.container_client("locks"))
    with SingletonStarter(client, lock=lease, lease_ttl=15, options=StarterOptions(background_finish=False)) as starter:
        tokens = []
        for _ in range(3):
            result = starter.start("orch", instance_id="fenced")
            tokens.append(result.fencing_token)
            strict_singleton_durable_backend.finish_instance("fenced")
    assert tokens == [1, 2, 3]
    assert [
        t["strict_singleton.fencing_token"] for t in strict_singleton_durable_backend.ledger.snapshot().tags["fenced"]
    ] == [
        "1",
        "2",
        "3",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("azblob://", "AZURE_STORAGE_CONNECTION_STRING"),
        ("azurite://127.0.0.1:1/", "container"),
        ("azurite://h:x/c", "bad port"),
    ],
)
def test_blob_lock_urls(url: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(InvalidArgumentError, match=message):
        lock_from_url(url)


def test_azblob_without_container(monkeypatch: pytest.MonkeyPatch, strict_singleton_azurite: Azurite) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", strict_singleton_azurite.connection_string)
    with pytest.raises(InvalidArgumentError, match="exactly one container"):
        lock_from_url("azblob://")
    lease = lock_from_url("azblob://locks")
    assert lease.name == "azblob(devstoreaccount1/locks)"
    lease.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_record_write_under_a_lease_this_object_took_makes_no_read(
    strict_singleton_azurite: Azurite, asynchronous: bool
) -> None:
    """Setting metadata replaces all of it; the holder knows what it wrote under its lease, so
    leaving a start record (the release after every start) is one write, not a read and a write.
    A lease object that did not take the lease reads first, and the records survive either way."""
    from strict_singleton.lock_backends.base import RequestRecord, StartRecord

    methods: list[str] = []

    def hook(request: object) -> None:
        methods.append(request.http_request.method)  # type: ignore[attr-defined]

    start = StartRecord(fencing_token=1, sent_at_us=1, previous_created_us=None, expires_at_us=2**50)
    request = RequestRecord("r", 1, 1, None, "start", "", 2**50)

    clients: list[Any] = []

    async def scenario() -> list[Any]:
        def client() -> Any:
            made = strict_singleton_azurite.container_client("meta", asynchronous=asynchronous, raw_request_hook=hook)
            clients.append(made)
            return made

        lease, other = (
            (AsyncBlobLease if asynchronous else BlobLease)(client()),
            (AsyncBlobLease if asynchronous else BlobLease)(client()),
        )

        async def call(fn: Any, *args: Any) -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result

        assert await call(lease.acquire, "m1", "t1", 15) is not None
        methods.clear()
        assert await call(lease.record_request, "m1", "t1", request, 60)
        assert await call(lease.release_with_record, "m1", "t1", start, 60)
        own = list(methods)
        assert await call(lease.acquire, "m1", "t2", 15) is not None
        methods.clear()
        assert await call(other.record_start, "m1", "t2", start, 60)  # a lease `other` did not take
        foreign = list(methods)
        await call(lease.release, "m1", "t2")
        grant = await call(lease.acquire, "m1", "t3", 15)
        await call(lease.release, "m1", "t3")
        for made in clients:
            await call(made.close)
        return [own, foreign, grant]

    own, foreign, grant = asyncio.run(scenario())
    assert "HEAD" not in own and own.count("PUT") == 3, own  # two metadata writes and the release
    assert "HEAD" in foreign, foreign
    assert grant.last_start == start and grant.last_request == request
