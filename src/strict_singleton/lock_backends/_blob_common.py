"""The parts of the Blob lease that do no I/O, shared by the sync and async classes."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends.base import RequestRecord, StartRecord, require_positive_ttl

DEFAULT_PREFIX = "strict-singleton/"
MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60
FENCE_METADATA_KEY = "strictsingletonfence"
START_METADATA_KEY = "strictsingletonstart"  # the last start record (see release_with_record)
REQUEST_METADATA_KEY = "strictsingletonrequest"  # the last request record (see record_request)
# Setting metadata replaces all of it: every write carries these keys forward.
KEPT_METADATA_KEYS = (FENCE_METADATA_KEY, START_METADATA_KEY, REQUEST_METADATA_KEY)
# Blob names may be 1,024 characters; leave room for the prefix and the folder.
MAX_ENCODED_LENGTH = 900
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def encode_instance_id(instance_id: str) -> str:
    """Map an instance ID to a blob-name segment, injectively.

    IDs whose escaped form fits are stored under ``id/<escaped>``: every character
    outside ``[A-Za-z0-9-]`` becomes ``_`` plus the two-digit lowercase hex of each of
    its UTF-8 bytes (``/`` -> ``_2f``, ``_`` -> ``_5f``, ``é`` -> ``_c3_a9``). ``_``
    always starts an escape, so decoding is unambiguous and the mapping is injective.
    Longer IDs are stored under ``sha256/<hex digest of the UTF-8 ID>``: a separate
    folder, so the two forms never collide (the hashed form is injective up to
    SHA-256 collisions).
    """
    escaped = "".join(c if c in _SAFE else "".join(f"_{b:02x}" for b in c.encode("utf-8")) for c in instance_id)
    if len(escaped) <= MAX_ENCODED_LENGTH:
        return f"id/{escaped}"
    return f"sha256/{hashlib.sha256(instance_id.encode('utf-8')).hexdigest()}"


def validate_prefix(prefix: str, *, backend: str) -> str:
    if not isinstance(prefix, str) or not prefix or not prefix.isprintable() or len(prefix) > 100 or "\\" in prefix:
        raise InvalidArgumentError(
            f"prefix must be printable, 1-100 characters, no backslash; got {prefix!r}", backend=backend
        )
    return prefix


def lease_seconds(ttl: float, *, backend: str) -> int:
    """The Azure lease duration for a TTL: a whole number of seconds from 15 to 60.

    Azure cannot honour anything else (finite leases are 15-60 s; infinite leases are
    refused here because an orphaned one never expires), so other TTLs are rejected
    instead of silently rounded.
    """
    require_positive_ttl(ttl, backend=backend)
    if ttl != int(ttl) or not MIN_LEASE_SECONDS <= ttl <= MAX_LEASE_SECONDS:
        raise InvalidArgumentError(
            f"lease_ttl must be a whole number of seconds from {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS} "
            f"for Azure Blob leases, got {ttl!r}",
            backend=backend,
        )
    return int(ttl)


def error_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


# Lease answers that mean "someone else holds it" or "it is no longer ours": not store failures.
HELD = frozenset({"LeaseAlreadyPresent"})
NOT_OURS = frozenset(
    {
        "LeaseIdMismatchWithLeaseOperation",
        "LeaseNotPresentWithLeaseOperation",
        "LeaseIdMismatchWithBlobOperation",
        "LeaseNotPresentWithBlobOperation",
        "LeaseLost",
        "LeaseIdMissing",
        "LeaseIsBrokenAndCannotBeRenewed",
        "LeaseIsBreakingAndCannotBeAcquired",
    }
)

_SECRETS = [
    re.compile(r"(AccountKey=)[^;\s]+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature=)[^;\s]+", re.IGNORECASE),
    re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE),
    re.compile(r"(\?)[^\s'\"]*(?:sv|sig|se|sp)=[^\s'\"]*", re.IGNORECASE),
    re.compile(r"(Authorization:\s*)\S+.*", re.IGNORECASE),
]


def redact(text: str) -> str:
    """Strip account keys, SAS signatures and query strings from a message."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "<redacted>", text)
    return text


def unavailable(exc: BaseException, *, instance_id: str | None, backend: str, doing: str) -> LockUnavailableError:
    status = getattr(exc, "status_code", None)
    code = error_code(exc)
    first_line = redact(str(exc).splitlines()[0] if str(exc) else "")[:200]
    detail = ", ".join(p for p in (f"status {status}" if status else "", code) if p)
    return LockUnavailableError(
        f"blob lock store unavailable while {doing}: {type(exc).__name__}"
        + (f" ({detail})" if detail else "")
        + (f": {first_line}" if first_line else ""),
        instance_id=instance_id,
        backend=backend,
    )


def describe_container(container: Any) -> str:
    """``azblob(account/container)``: never the key or a SAS token."""
    account = getattr(container, "account_name", None) or "?"
    name = getattr(container, "container_name", None) or "?"
    return f"azblob({account}/{name})"


def parse_fence(metadata: dict[str, str] | None) -> int:
    try:
        return int((metadata or {}).get(FENCE_METADATA_KEY, "0"))
    except ValueError:
        return 0


def parse_start(metadata: dict[str, str] | None) -> StartRecord | None:
    return StartRecord.decode((metadata or {}).get(START_METADATA_KEY))


def parse_request(metadata: dict[str, str] | None) -> RequestRecord | None:
    return RequestRecord.decode((metadata or {}).get(REQUEST_METADATA_KEY))


def _kept(metadata: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (metadata or {}).items() if k in KEPT_METADATA_KEYS and v}


def acquired_metadata(
    metadata: dict[str, str] | None,
) -> tuple[int, StartRecord | None, RequestRecord | None, dict[str, str]]:
    """(new fencing token, the stored start record, the stored request record, the metadata
    to write back) after an acquire.

    Setting metadata replaces all of it, so both records are written back unchanged.
    """
    fence = parse_fence(metadata) + 1
    kept = _kept(metadata)
    kept[FENCE_METADATA_KEY] = str(fence)
    return fence, parse_start(metadata), parse_request(metadata), kept


def recorded_metadata(metadata: dict[str, str] | None, record: StartRecord | RequestRecord) -> dict[str, str]:
    """The metadata a holder writes to leave ``record``: what is stored (``metadata``, read
    under its lease) with that one record replaced; the other record is kept unchanged and
    the fencing counter never goes down."""
    kept = _kept(metadata)
    kept[FENCE_METADATA_KEY] = str(max(parse_fence(metadata), record.fencing_token))
    kept[START_METADATA_KEY if isinstance(record, StartRecord) else REQUEST_METADATA_KEY] = record.encode()
    return kept
