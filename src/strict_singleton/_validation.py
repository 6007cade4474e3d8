"""Argument checks that run before any lease is taken. Pure: no I/O."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from durabletask import task
from durabletask.client import OrchestrationStatus
from durabletask.serialization import DataConverter, JsonDataConverter

from strict_singleton._defaults import DEFAULT_TERMINATE_TIMEOUT
from strict_singleton.errors import InvalidArgumentError, InvalidInstanceIdError
from strict_singleton.lock_backends.base import MAX_REQUEST_ID_BYTES, stored_request_id
from strict_singleton.policies import ConflictPolicy, ReusePolicy, coerce

if TYPE_CHECKING:
    from strict_singleton.options import StarterOptions

MAX_INSTANCE_ID_LENGTH = 256
# Tags under this prefix are written by strict-singleton; callers may not set them.
RESERVED_TAG_PREFIX = "strict_singleton."
FENCING_TAG = "strict_singleton.fencing_token"
REQUEST_ID_TAG = "strict_singleton.request_id"
# Request IDs are kept in every lock store (percent-encoded, at most 2 KiB there).
MAX_REQUEST_ID_LENGTH = 128

_FORBIDDEN_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control chars, lone surrogates, line/paragraph separators


def _plain(text: str) -> bool:
    """Printable ASCII only: then no character is in a forbidden category (Cs, Zl and Zp are
    outside ASCII; ASCII's Cc characters are not printable). A C-speed shortcut for the usual ID
    before the per-character look-up, which decides everything else."""
    return text.isascii() and text.isprintable()


def validate_instance_id(instance_id: object, *, max_length: int = MAX_INSTANCE_ID_LENGTH) -> str:
    """Return ``instance_id`` if it is a usable fixed ID, else raise :class:`InvalidInstanceIdError`.

    A usable ID is a non-empty ``str`` of at most ``max_length`` characters, without
    leading or trailing whitespace, control characters, lone surrogates or line
    separators. Everything else (``/``, ``%``, non-ASCII letters, spaces inside) is
    allowed: each lock backend maps IDs onto its own key space.
    """
    if not isinstance(instance_id, str):
        raise InvalidInstanceIdError(f"instance_id must be a str, got {type(instance_id).__name__}")
    shown = instance_id if len(instance_id) <= 80 else instance_id[:77] + "..."
    if not instance_id:
        raise InvalidInstanceIdError("instance_id must not be empty", instance_id=instance_id)
    if len(instance_id) > max_length:
        raise InvalidInstanceIdError(
            f"instance_id is {len(instance_id)} characters long; the maximum is {max_length}", instance_id=shown
        )
    if instance_id != instance_id.strip():
        raise InvalidInstanceIdError("instance_id must not start or end with whitespace", instance_id=shown)
    if _plain(instance_id):
        return instance_id
    for position, char in enumerate(instance_id):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidInstanceIdError(
                f"instance_id contains a control character (U+{ord(char):04X}) at position {position}",
                instance_id=shown.encode("unicode_escape").decode("ascii"),
            )
    return instance_id


# Longest duration any time argument may have. Lock stores overflow far beyond it
# (Redis PX in milliseconds, thread waits), and no start should ever wait a day.
MAX_SECONDS = 86_400.0


def _is_seconds(value: object) -> bool:
    """A finite number of seconds no longer than MAX_SECONDS (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        seconds = float(value)  # an int too large for a float raises OverflowError
    except OverflowError:
        return False
    return math.isfinite(seconds) and abs(seconds) <= MAX_SECONDS


def _seconds(name: str, value: object, *, low: float, strict: bool, backend: str | None) -> float:
    ok = _is_seconds(value) and (float(value) > low if strict else float(value) >= low)  # type: ignore[arg-type]
    if not ok:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise InvalidArgumentError(
            f"{name} must be a number of seconds {bound} and at most {MAX_SECONDS:g}, got {value!r}", backend=backend
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StarterConfig:
    """The settings one starter's flows run on: its options resolved for its lease, and what its
    lock store can keep (start and request records). Built once, by :func:`build_config`."""

    lease_ttl: float
    wait: float
    schedule_margin: float
    visibility_timeout: float
    confirm_visible: bool
    background_finish: bool
    max_instance_id_length: int
    fetch_payloads: bool
    ambiguity_timeout: float
    confirm_after: float
    clock_skew: float
    request_ttl: float
    start_records: bool = False  # the lock store keeps start records (set from the lock, not an option)
    request_records: bool = False  # the lock store keeps request records (set from the lock)

    @property
    def renew_after(self) -> float:
        """Renew a lease once it is older than a third of its TTL."""
        return self.lease_ttl / 3.0

    @property
    def send_reserve(self) -> float:
        """Validity kept back from the schedule call's deadline, to renew after a timeout."""
        return max(self.schedule_margin / 2.0, self.lease_ttl * 0.05)


def check_options(options: StarterOptions) -> None:
    """The checks a :class:`~strict_singleton.options.StarterOptions` value needs on its own
    (``schedule_margin`` against the lease is checked by :func:`build_config`)."""
    backend = None  # an options value belongs to no lock store yet
    for name, strict in (("visibility_timeout", True), ("ambiguity_timeout", True)):
        value = getattr(options, name)
        if value is not None:
            _seconds(name, value, low=0, strict=strict, backend=backend)
    if options.schedule_margin is not None and not (
        _is_seconds(options.schedule_margin) and float(options.schedule_margin) >= 0
    ):
        raise InvalidArgumentError(
            f"schedule_margin must be >= 0 and below 90% of lease_ttl, got {options.schedule_margin!r}"
        )
    _seconds("confirm_after", options.confirm_after, low=0, strict=False, backend=backend)
    _seconds("clock_skew", options.clock_skew, low=0, strict=False, backend=backend)
    _seconds("request_ttl", options.request_ttl, low=0, strict=True, backend=backend)
    length = options.max_instance_id_length
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise InvalidArgumentError(f"max_instance_id_length must be a positive int, got {length!r}")
    for name in ("confirm_visible", "background_finish", "fetch_payloads"):
        if not isinstance(getattr(options, name), bool):
            raise InvalidArgumentError(f"{name} must be a bool, got {getattr(options, name)!r}")
    if options.namespace is not None and not isinstance(options.namespace, str):
        raise InvalidArgumentError(f"namespace must be a str, got {type(options.namespace).__name__}")


def build_config(options: StarterOptions, *, lease_ttl: object, wait: object, backend: str) -> StarterConfig:
    """The settings a flow runs on: ``options`` resolved for ``lease_ttl`` and checked against it."""
    ttl = _seconds("lease_ttl", lease_ttl, low=0, strict=True, backend=backend)
    wait_s = _seconds("wait", ttl if wait is None else wait, low=0, strict=False, backend=backend)
    resolved = options.resolved(ttl)
    margin = resolved.schedule_margin
    assert margin is not None and resolved.visibility_timeout is not None and resolved.ambiguity_timeout is not None
    if not margin < ttl * 0.9:
        raise InvalidArgumentError(
            f"schedule_margin must be >= 0 and below 90% of lease_ttl ({ttl!r}), got {options.schedule_margin!r}",
            backend=backend,
        )
    return StarterConfig(
        lease_ttl=ttl,
        wait=wait_s,
        schedule_margin=margin,
        visibility_timeout=resolved.visibility_timeout,
        confirm_visible=resolved.confirm_visible,
        background_finish=resolved.background_finish,
        max_instance_id_length=resolved.max_instance_id_length,
        fetch_payloads=resolved.fetch_payloads,
        ambiguity_timeout=resolved.ambiguity_timeout,
        confirm_after=float(resolved.confirm_after),
        clock_skew=float(resolved.clock_skew),
        request_ttl=float(resolved.request_ttl),
    )


@dataclass(frozen=True, slots=True)
class StartCall:
    """One validated start request."""

    instance_id: str
    orchestrator: Any  # task.Orchestrator | str, as schedule_new_orchestration takes it
    input: Any
    tags: dict[str, str]
    version: str | None
    start_at: datetime | None
    # The schedule request built before any lease is taken (serialization can be slow,
    # and must not eat into the lease); None when the client's public method is used.
    request: Any = None
    reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE
    on_conflict: ConflictPolicy = ConflictPolicy.USE_EXISTING
    terminate_timeout: float = DEFAULT_TERMINATE_TIMEOUT
    signal: tuple[str, Any] | None = None  # start_or_signal: (event name, event data)
    request_id: str | None = None  # idempotent retries: see RequestRecord

    def with_request(self, request: Any) -> StartCall:
        """This call carrying ``request``. Written out, not ``dataclasses.replace``: this runs on
        every start, and ``replace`` costs twice as much (it walks the fields by name); a test
        checks that every field is carried over."""
        return StartCall(
            self.instance_id,
            self.orchestrator,
            self.input,
            self.tags,
            self.version,
            self.start_at,
            request,
            self.reuse,
            self.on_conflict,
            self.terminate_timeout,
            self.signal,
            self.request_id,
        )


def converter_of(client: object) -> DataConverter:
    """The client's own data converter (durabletask keeps it private), else the SDK default."""
    converter = getattr(client, "_data_converter", None)
    return converter if converter is not None else JsonDataConverter()


def build_call(
    *,
    orchestrator: object,
    instance_id: object,
    input: object,
    tags: object,
    version: object,
    start_at: object,
    converter: DataConverter | None,
    max_instance_id_length: int,
    backend: str,
    reuse: object = ReusePolicy.ALLOW_DUPLICATE,
    on_conflict: object = ConflictPolicy.USE_EXISTING,
    terminate_timeout: object = DEFAULT_TERMINATE_TIMEOUT,
    signal: tuple[object, object] | None = None,
    request_id: object = None,
) -> StartCall:
    """Validate one start. ``converter=None`` skips the input check (the caller
    serializes the input itself, once, while building the request)."""
    iid = validate_instance_id(instance_id, max_length=max_instance_id_length)

    def bad(message: str) -> InvalidArgumentError:
        return InvalidArgumentError(message, instance_id=iid, backend=backend)

    if isinstance(orchestrator, str):
        if not orchestrator.strip() or orchestrator != orchestrator.strip():
            raise bad(f"orchestrator name must be non-empty without surrounding whitespace, got {orchestrator!r}")
    elif callable(orchestrator):
        try:
            task.get_name(orchestrator)  # the name durabletask registers and schedules it under
        except Exception as exc:
            raise bad(
                f"cannot derive an orchestrator name from {type(orchestrator).__name__} {orchestrator!r} "
                f"({type(exc).__name__}); pass the name it is registered under as a str"
            ) from exc
    else:
        raise bad(f"orchestrator must be a function or a name, got {type(orchestrator).__name__}")
    if tags is None:
        tag_map: dict[str, str] = {}
    elif isinstance(tags, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        tag_map = dict(tags)
        reserved = sorted(k for k in tag_map if k.startswith(RESERVED_TAG_PREFIX))
        if reserved:
            raise bad(f"tags under {RESERVED_TAG_PREFIX!r} are reserved for strict-singleton: {reserved}")
    else:
        raise bad("tags must be a mapping of str to str")
    if version is not None and (not isinstance(version, str) or not version):
        raise bad(f"version must be a non-empty str or None, got {version!r}")
    if start_at is not None and not isinstance(start_at, datetime):
        raise bad(f"start_at must be a datetime or None, got {type(start_at).__name__}")
    reuse_policy = coerce(reuse, ReusePolicy)
    if reuse_policy is None:
        raise bad(f"reuse must be a ReusePolicy ({', '.join(m.name for m in ReusePolicy)}), got {reuse!r}")
    conflict_policy = coerce(on_conflict, ConflictPolicy)
    if conflict_policy is None:
        raise bad(
            f"on_conflict must be a ConflictPolicy ({', '.join(m.name for m in ConflictPolicy)}), got {on_conflict!r}"
        )
    terminate_s = _seconds("terminate_timeout", terminate_timeout, low=0, strict=True, backend=backend)
    if conflict_policy is ConflictPolicy.TERMINATE_EXISTING and not reuse_policy.allows(OrchestrationStatus.TERMINATED):
        raise bad(
            "on_conflict=TERMINATE_EXISTING needs a reuse policy that replaces Terminated instances, "
            f"not {reuse_policy.name}"
        )
    event: tuple[str, Any] | None = None
    if signal is not None:
        name, data = signal
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise bad(f"event_name must be a non-empty str without surrounding whitespace, got {name!r}")
        event = (name, data)
    rid = validate_request_id(request_id, instance_id=iid, backend=backend)
    if converter is not None:
        check_input(converter, input, instance_id=iid, backend=backend)
    return StartCall(
        instance_id=iid,
        orchestrator=orchestrator,
        input=input,
        tags=tag_map,
        version=version,
        start_at=start_at,
        reuse=reuse_policy,
        on_conflict=conflict_policy,
        terminate_timeout=terminate_s,
        signal=event,
        request_id=rid,
    )


def validate_request_id(request_id: object, *, instance_id: str | None = None, backend: str = "") -> str | None:
    """``None``, or a non-empty printable ``str`` of at most 128 characters without
    surrounding whitespace that takes at most ``MAX_REQUEST_ID_BYTES`` (256) bytes as request
    records store it (percent-encoded UTF-8); else :class:`InvalidArgumentError`."""
    if request_id is None:
        return None
    if (
        not isinstance(request_id, str)
        or not request_id
        or request_id != request_id.strip()
        or len(request_id) > MAX_REQUEST_ID_LENGTH
        or not (_plain(request_id) or all(unicodedata.category(c) not in _FORBIDDEN_CATEGORIES for c in request_id))
    ):
        shown = request_id if not isinstance(request_id, str) else request_id[:80].encode("unicode_escape").decode()
        raise InvalidArgumentError(
            f"request_id must be None or a non-empty str of at most {MAX_REQUEST_ID_LENGTH} characters, without "
            f"surrounding whitespace or control characters, got {shown!r}",
            instance_id=instance_id,
            backend=backend,
        )
    stored = len(stored_request_id(request_id))
    if stored > MAX_REQUEST_ID_BYTES:
        raise InvalidArgumentError(
            f"request_id takes {stored} bytes as request records store it (percent-encoded UTF-8: characters "
            f"outside A-Z a-z 0-9 _ . ~ - take 3 bytes per UTF-8 byte); the maximum is {MAX_REQUEST_ID_BYTES} "
            f"(128 ASCII letters and digits, 28 CJK characters, 21 emoji)",
            instance_id=instance_id,
            backend=backend,
        )
    return request_id


def check_input(converter: DataConverter, input: object, *, instance_id: str, backend: str) -> str | None:
    """Serialize ``input`` as the client will, or raise InvalidArgumentError."""
    try:
        return converter.serialize(input)
    except Exception as exc:
        raise InvalidArgumentError(
            f"input cannot be serialized by the client's data converter: {type(exc).__name__}: {exc}",
            instance_id=instance_id,
            backend=backend,
        ) from exc


def config_of(*, lease_ttl: object, wait: object = None, backend: str = "", **options: Any) -> StarterConfig:
    """:func:`build_config` from flat settings, for configurations written out in full (the
    explorer's, unit tests' flows)."""
    from strict_singleton.options import StarterOptions

    return build_config(StarterOptions(**options), lease_ttl=lease_ttl, wait=wait, backend=backend)
