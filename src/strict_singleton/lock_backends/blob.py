"""Azure Blob lease: one blob per instance ID, its lease ID as the owner token.

Guarantee: while a blob's lease is held, only the holder's lease ID can renew or
release it, and Azure refuses to lease it to anyone else. The starter tracks the
lease's validity itself (a successful renew after expiry does not prove the lease was
held throughout, so an expired lease is never renewed).

Assumptions: the storage account's own consistency (a lease operation is atomic per
blob). Leases last a whole number of seconds from 15 to 60, so ``lease_ttl`` must be
one of those (see :func:`lease_seconds`).

Fencing: the blob's metadata holds a counter that the holder increments under its
lease on every acquisition, so the token only grows per blob.

Records: the metadata also holds the last start record (``strictsingletonstart``:
``record_start``, ``release_with_record``) and the last request record
(``strictsingletonrequest``: ``record_request``), each written only under the held
lease (``False`` and nothing written otherwise). Setting metadata replaces all of it,
so every write (the acquire's fencing write, each record write) carries the other keys
forward unchanged: no call erases or alters the record it does not write. ``acquire``
returns both records from the metadata it reads anyway. Blob storage does not expire
them: readers check their ``expires_at_us``.

Setup is lazy and race-free: the container and the empty blob are created on first
use; "already exists" answers from concurrent creators are expected and ignored.

Secrets: names, errors and ``repr`` carry the account and container names only;
messages from the SDK are redacted of keys, SAS signatures and query strings, and
errors are raised without the SDK exception chained (its text may carry the URL).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, TypeVar

from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends._blob_common import (
    DEFAULT_PREFIX,
    HELD,
    NOT_OURS,
    acquired_metadata,
    describe_container,
    encode_instance_id,
    error_code,
    lease_seconds,
    recorded_metadata,
    unavailable,
    validate_prefix,
)
from strict_singleton.lock_backends._polled_waits import PolledWaits
from strict_singleton.lock_backends._wakeups import RELEASES, wait_async, wait_sync
from strict_singleton.lock_backends.base import Grant, RequestRecord, StartRecord

try:
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
    from azure.storage.blob import BlobLeaseClient, ContainerClient
    from azure.storage.blob.aio import BlobLeaseClient as AsyncBlobLeaseClient
    from azure.storage.blob.aio import ContainerClient as AsyncContainerClient
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from strict_singleton._extras import missing_extra_message

    raise ImportError(missing_extra_message("BlobLease", "azure", exc)) from exc


def on_acquire_error(exc: BaseException, attempt: int) -> str:
    """What a failed acquire means: "held" (someone else's lease), "create" (container or
    blob missing: create and retry) or "fail" (the store is unavailable)."""
    if isinstance(exc, ResourceExistsError):
        return "held" if error_code(exc) in HELD else "fail"
    if isinstance(exc, ResourceNotFoundError):
        return "create" if attempt < 2 else "fail"
    return "fail"


# Lease states in which another acquire would succeed ("breaking" still refuses one).
_FREE_STATES = frozenset({"available", "expired", "broken"})


def looks_free(props: Any) -> bool:
    """Whether blob properties show a lease nobody holds."""
    lease = getattr(props, "lease", None)
    state = getattr(lease, "state", None)
    return str(getattr(state, "value", state) or "available") in _FREE_STATES


def lease_gone(exc: BaseException) -> bool:
    """A renew or release refused because the lease is no longer ours (or the blob is gone)."""
    return error_code(exc) in NOT_OURS or isinstance(exc, ResourceNotFoundError)


class _BlobNaming:
    def __init__(self, container: Any, prefix: str, name: str | None) -> None:
        self.name = name or describe_container(container)
        self.prefix = validate_prefix(prefix, backend=self.name)

    def blob_name(self, instance_id: str) -> str:
        return self.prefix + encode_instance_id(instance_id)

    def wake_key(self, instance_id: str) -> str:
        return f"{self.name}|{self.blob_name(instance_id)}"


_L = TypeVar("_L", bound="_BlobLeaseBase")


class _BlobLeaseBase:
    """Construction, naming and errors shared by the sync and async Blob leases."""

    _client_class: type[Any]

    def __init__(
        self,
        container: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        create_container: bool = True,
        name: str | None = None,
    ) -> None:
        if not isinstance(container, self._client_class):
            wanted = f"{self._client_class.__module__}.{self._client_class.__name__}"
            raise InvalidArgumentError(f"{type(self).__name__} needs a {wanted}, got {type(container).__name__}")
        self._container = container
        self._naming = _BlobNaming(container, prefix, name)
        # What this object's callers know about each lease while they wait (one prober per key,
        # acquires known to fail skipped). Per object, not per process: what it remembers about a
        # lease is only ever learnt through this object's own store and calls.
        self._waits = PolledWaits()
        self._create_container = create_container
        self._owns_client = False  # True when built by from_connection_string
        # The metadata of each lease this object holds, as last written under it: only the
        # holder can write a leased blob's metadata (every write carries the lease ID), so
        # a record write needs no read first (setting metadata replaces all of it).
        self._held_metadata: dict[tuple[str, str], dict[str, str]] = {}
        self._held_lock = threading.Lock()

    def _remember(self, instance_id: str, token: str, metadata: dict[str, str] | None) -> None:
        with self._held_lock:
            if metadata is None:
                self._held_metadata.pop((instance_id, token), None)
            else:
                self._held_metadata[(instance_id, token)] = dict(metadata)

    def _remembered(self, instance_id: str, token: str) -> dict[str, str] | None:
        with self._held_lock:
            metadata = self._held_metadata.get((instance_id, token))
        return None if metadata is None else dict(metadata)

    @classmethod
    def from_connection_string(cls: type[_L], conn_str: str, *, container: str, **kwargs: Any) -> _L:
        """Build from a storage connection string; ``kwargs`` beyond ``prefix``,
        ``create_container`` and ``name`` go to the ``ContainerClient`` (e.g. ``retry_total``)."""
        own = {k: kwargs.pop(k) for k in ("prefix", "create_container", "name") if k in kwargs}
        if not container:
            raise InvalidArgumentError("container must be a non-empty container name")
        try:
            client = cls._client_class.from_connection_string(conn_str, container_name=container, **kwargs)
        except (ValueError, AzureError) as exc:
            raise InvalidArgumentError(f"bad storage connection string ({type(exc).__name__})") from None
        lease = cls(client, **own)
        lease._owns_client = True
        return lease

    @property
    def name(self) -> str:
        return self._naming.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, prefix={self._naming.prefix!r})"

    def validate_ttl(self, ttl: float) -> None:
        lease_seconds(ttl, backend=self.name)

    def blob_name(self, instance_id: str) -> str:
        return self._naming.blob_name(instance_id)

    def _probed(self, key: str, free: bool) -> bool:
        """Record a probe's finding; when free, wake this process's other waiters. True: stop waiting."""
        self._waits.probed(key, free=free)
        if free:
            RELEASES.notify(key)
        return free

    def _unavailable(self, exc: BaseException, instance_id: str, doing: str) -> Exception:
        return unavailable(exc, instance_id=instance_id, backend=self.name, doing=doing)


class BlobLease(_BlobLeaseBase):
    """A lease per instance ID as an Azure Blob lease, for the sync starter.

    Args:
        container: a ``azure.storage.blob.ContainerClient``; its credentials, retry
            policy and timeouts are the caller's choice.
        prefix: blob-name prefix (default ``strict-singleton/``).
        create_container: create the container on first use if it is missing
            (``False``: a missing container is ``LockUnavailableError``).
        name: display name; defaults to ``azblob(account/container)``.
    """

    _client_class = ContainerClient

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        seconds = lease_seconds(ttl, backend=self.name)
        key = self._naming.wake_key(instance_id)
        sent = False
        try:
            sent = self._waits.begin_acquire(key)
            if not sent:  # refused a moment ago, or a peer's acquire is in flight: no request
                return None
            return self._acquire(instance_id, token, seconds, key)
        finally:
            if sent:
                self._waits.end_acquire(key)

    def _acquire(self, instance_id: str, token: str, seconds: int, key: str) -> Grant | None:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        lease = BlobLeaseClient(blob, lease_id=token)
        for attempt in range(3):
            try:
                lease.acquire(lease_duration=seconds)
                break
            except AzureError as exc:
                action = on_acquire_error(exc, attempt)
                if action == "held":
                    self._waits.refused(key)
                    return None
                if action == "fail":
                    raise self._unavailable(exc, instance_id, "acquiring the lease") from None
                self._create(blob, instance_id, container_missing=error_code(exc) == "ContainerNotFound")
        try:
            fence, record, request, metadata = acquired_metadata(blob.get_blob_properties(lease=token).metadata)
            blob.set_blob_metadata(metadata, lease=token)
        except AzureError as exc:
            with contextlib.suppress(AzureError):
                lease.release()
            raise self._unavailable(exc, instance_id, "writing the fencing token") from None
        self._remember(instance_id, token, metadata)
        self._waits.acquired(key)
        return Grant(fencing_token=fence, valid_for=float(seconds), last_start=record, last_request=request)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            BlobLeaseClient(blob, lease_id=token).renew()
        except AzureError as exc:
            if lease_gone(exc):
                return False
            raise self._unavailable(exc, instance_id, "renewing the lease") from None
        return True

    def release(self, instance_id: str, token: str) -> bool:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            BlobLeaseClient(blob, lease_id=token).release()
        except AzureError as exc:
            if lease_gone(exc):
                self._remember(instance_id, token, None)
                return False
            raise self._unavailable(exc, instance_id, "releasing the lease") from None
        self._remember(instance_id, token, None)
        self._waits.released(self._naming.wake_key(instance_id))
        RELEASES.notify(self._naming.wake_key(instance_id))
        return True

    def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """Write ``record`` into the blob's metadata under our lease (kept).

        Blob storage keeps metadata until it is replaced: readers ignore the record
        once ``record.expires_at_us`` passed (allowing for clock skew). The request
        record is kept: the metadata this object wrote under the lease is written back with
        the record replaced (read first only for a lease it did not take).
        """
        return self._write_record(instance_id, token, record, "writing the start record")

    def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        """Write ``record`` into the blob's metadata under our lease (kept), keeping the start record.

        Kept until replaced: readers ignore it once ``record.expires_at_us`` passed.
        ``False`` (nothing written) when ``token`` does not hold the lease.
        """
        return self._write_record(instance_id, token, record, "writing the request record")

    def _write_record(self, instance_id: str, token: str, record: StartRecord | RequestRecord, doing: str) -> bool:
        # Both calls carry our lease ID: Azure refuses them unless we hold the lease, and
        # nobody else can write the metadata in between.
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            stored = self._remembered(instance_id, token)
            if stored is None:  # a lease this object did not take (or no longer knows): read it
                stored = blob.get_blob_properties(lease=token).metadata
            written = recorded_metadata(stored, record)
            blob.set_blob_metadata(written, lease=token)
        except AzureError as exc:
            if lease_gone(exc):
                self._remember(instance_id, token, None)
                return False
            raise self._unavailable(exc, instance_id, doing) from None
        self._remember(instance_id, token, written)
        return True

    def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """:meth:`record_start`, then release the lease."""
        if not self.record_start(instance_id, token, record, ttl):
            return False
        self.release(instance_id, token)
        return True

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        """Until the lease looks free or ``timeout`` passed: a release in this process wakes
        at once; another process's is found by one probing waiter per lease object, backing off
        (:mod:`~strict_singleton.lock_backends._polled_waits`)."""
        key = self._naming.wake_key(instance_id)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            probing = False
            try:
                probing = self._waits.claim_probe(key)
                if not probing:  # another waiter here probes: its word (or a release here) ends this wait
                    if wait_sync(key, min(left, self._waits.pause(key))):
                        return
                    continue
                if wait_sync(key, min(left, self._waits.pause(key))) or time.monotonic() >= deadline:
                    return
                # Recorded before the turn ends, so the backoff outlives the turn.
                if self._probed(key, self._probe_free(instance_id)):
                    return
            finally:
                if probing:
                    self._waits.end_probe(key)

    def _probe_free(self, instance_id: str) -> bool:
        try:
            props = self._container.get_blob_client(self.blob_name(instance_id)).get_blob_properties()
        except ResourceNotFoundError:
            return True
        except AzureError:  # the acquire that follows reports the store's state properly
            return True
        return looks_free(props)

    def close(self) -> None:
        if self._owns_client:  # otherwise the container client is the caller's
            self._container.close()

    def _create(self, blob: Any, instance_id: str, *, container_missing: bool) -> None:
        try:
            if container_missing:
                if not self._create_container:
                    raise LookupError("container does not exist and create_container=False")
                with contextlib.suppress(ResourceExistsError):
                    self._container.create_container()
            with contextlib.suppress(ResourceExistsError):
                blob.upload_blob(b"", overwrite=False)
        except ResourceNotFoundError:
            pass  # the container appeared missing again: the next attempt creates it
        except LookupError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self.name, doing="creating the lock blob") from None
        except AzureError as exc:
            if error_code(exc) not in NOT_OURS:  # "leased meanwhile" means it exists: fine
                raise self._unavailable(exc, instance_id, "creating the lock blob") from None


class AsyncBlobLease(_BlobLeaseBase):
    """The asyncio twin of :class:`BlobLease`, over ``azure.storage.blob.aio.ContainerClient``."""

    _client_class = AsyncContainerClient

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        seconds = lease_seconds(ttl, backend=self.name)
        key = self._naming.wake_key(instance_id)
        sent = False
        try:
            sent = self._waits.begin_acquire(key)
            if not sent:  # refused a moment ago, or a peer's acquire is in flight: no request
                return None
            return await self._acquire(instance_id, token, seconds, key)
        finally:
            if sent:
                self._waits.end_acquire(key)

    async def _acquire(self, instance_id: str, token: str, seconds: int, key: str) -> Grant | None:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        lease = AsyncBlobLeaseClient(blob, lease_id=token)
        for attempt in range(3):
            try:
                await lease.acquire(lease_duration=seconds)
                break
            except AzureError as exc:
                action = on_acquire_error(exc, attempt)
                if action == "held":
                    self._waits.refused(key)
                    return None
                if action == "fail":
                    raise self._unavailable(exc, instance_id, "acquiring the lease") from None
                await self._create(blob, instance_id, container_missing=error_code(exc) == "ContainerNotFound")
        try:
            props = await blob.get_blob_properties(lease=token)
            fence, record, request, metadata = acquired_metadata(props.metadata)
            await blob.set_blob_metadata(metadata, lease=token)
        except AzureError as exc:
            with contextlib.suppress(AzureError):
                await lease.release()
            raise self._unavailable(exc, instance_id, "writing the fencing token") from None
        self._remember(instance_id, token, metadata)
        self._waits.acquired(key)
        return Grant(fencing_token=fence, valid_for=float(seconds), last_start=record, last_request=request)

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            await AsyncBlobLeaseClient(blob, lease_id=token).renew()
        except AzureError as exc:
            if lease_gone(exc):
                return False
            raise self._unavailable(exc, instance_id, "renewing the lease") from None
        return True

    async def release(self, instance_id: str, token: str) -> bool:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            await AsyncBlobLeaseClient(blob, lease_id=token).release()
        except AzureError as exc:
            if lease_gone(exc):
                self._remember(instance_id, token, None)
                return False
            raise self._unavailable(exc, instance_id, "releasing the lease") from None
        self._remember(instance_id, token, None)
        self._waits.released(self._naming.wake_key(instance_id))
        RELEASES.notify(self._naming.wake_key(instance_id))
        return True

    async def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """Write ``record`` into the blob's metadata under our lease (kept).

        Blob storage keeps metadata until it is replaced: readers ignore the record
        once ``record.expires_at_us`` passed (allowing for clock skew). The request
        record is kept: the metadata this object wrote under the lease is written back with
        the record replaced (read first only for a lease it did not take).
        """
        return await self._write_record(instance_id, token, record, "writing the start record")

    async def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        """Write ``record`` into the blob's metadata under our lease (kept), keeping the start record."""
        return await self._write_record(instance_id, token, record, "writing the request record")

    async def _write_record(
        self, instance_id: str, token: str, record: StartRecord | RequestRecord, doing: str
    ) -> bool:
        blob = self._container.get_blob_client(self.blob_name(instance_id))
        try:
            stored = self._remembered(instance_id, token)
            if stored is None:  # a lease this object did not take (or no longer knows): read it
                stored = (await blob.get_blob_properties(lease=token)).metadata
            written = recorded_metadata(stored, record)
            await blob.set_blob_metadata(written, lease=token)
        except AzureError as exc:
            if lease_gone(exc):
                self._remember(instance_id, token, None)
                return False
            raise self._unavailable(exc, instance_id, doing) from None
        self._remember(instance_id, token, written)
        return True

    async def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """:meth:`record_start`, then release the lease."""
        if not await self.record_start(instance_id, token, record, ttl):
            return False
        await self.release(instance_id, token)
        return True

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        """As :meth:`BlobLease.wait_for_release`."""
        key = self._naming.wake_key(instance_id)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            probing = False
            try:
                probing = self._waits.claim_probe(key)
                if not probing:  # another waiter here probes: its word (or a release here) ends this wait
                    if await wait_async(key, min(left, self._waits.pause(key))):
                        return
                    continue
                if await wait_async(key, min(left, self._waits.pause(key))) or time.monotonic() >= deadline:
                    return
                if self._probed(key, await self._probe_free(instance_id)):
                    return
            finally:
                if probing:
                    self._waits.end_probe(key)

    async def _probe_free(self, instance_id: str) -> bool:
        try:
            props = await self._container.get_blob_client(self.blob_name(instance_id)).get_blob_properties()
        except ResourceNotFoundError:
            return True
        except AzureError:
            return True
        return looks_free(props)

    async def close(self) -> None:
        if self._owns_client:  # otherwise the container client is the caller's
            await self._container.close()

    async def _create(self, blob: Any, instance_id: str, *, container_missing: bool) -> None:
        try:
            if container_missing:
                if not self._create_container:
                    raise LookupError("container does not exist and create_container=False")
                with contextlib.suppress(ResourceExistsError):
                    await self._container.create_container()
            with contextlib.suppress(ResourceExistsError):
                await blob.upload_blob(b"", overwrite=False)
        except ResourceNotFoundError:
            pass
        except LookupError as exc:
            raise unavailable(exc, instance_id=instance_id, backend=self.name, doing="creating the lock blob") from None
        except AzureError as exc:
            if error_code(exc) not in NOT_OURS:
                raise self._unavailable(exc, instance_id, "creating the lock blob") from None


__all__ = ["AsyncBlobLease", "BlobLease"]
