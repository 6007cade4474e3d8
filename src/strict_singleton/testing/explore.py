"""A deterministic explorer: the real start flow run through interleavings and faults.

N starters each run the real ``start_flow`` / ``finish_flow`` generators of
``strict_singleton._flow`` (the very code both starters drive) with the real starter
configuration, fencing tags and reuse policy, against the in-memory world of
:mod:`strict_singleton.testing.world` (virtual clock, lock store with TTLs, Durable
backend with a ledger). A scheduler owns every source of nondeterminism and picks, at
each step, one of:

* ``A``, ``B``, ... : that starter executes its pending operation (a lock or backend
  call, a sleep, a wait); the answer reaches it at once.
* ``sA`` (slow read): A's status read executes now, its answer is withheld; ``rA``
  delivers it later. Any steps may run in between.
* ``kA`` (slow read, key lost): as ``sA``, and while the answer is withheld the lock
  store loses A's key and more than ``confirm_after`` passes (finding 5 of issue 9).
* ``dA`` (delayed request): A's schedule request passes the send-by check and is sent,
  but is held inside the backend; A's call ends with DEADLINE_EXCEEDED at its deadline;
  ``lA`` lands the request later (in the safe configurations, always before
  ``ambiguity_timeout`` has passed since it was sent).
* ``xA`` (dropped answer): A's schedule executes but its answer is lost (UNAVAILABLE).
* ``uA`` (unsent): A's schedule never reaches the backend, yet A sees UNAVAILABLE.
* ``p`` (pause): the clock jumps past the lease TTL (a process pause, a wall-clock step).
* ``L`` (lost key): the lock store forgets every key (a restart without persistence).
* ``cA`` (crash): A's process dies with its schedule request queued in the backend.
* ``gA`` (stall after the check): A's schedule passes the send-by check, then the clock
  jumps past the TTL before the request leaves (the documented residual window).
* ``zA`` / ``yA`` (cancelled): the caller goes away (asyncio cancellation, KeyboardInterrupt)
  at A's pending operation, before it ran (``z``) or after it ran with its answer lost
  (``y``): ``Abandoned`` is thrown in there, at any yield of any flow, as the drivers do,
  and A's flow goes on with its clean-up.
* for an event or a terminate (``RaiseEvent``, ``Terminate``): ``sA`` (slow: it executes
  now, its answer is withheld), ``xA`` (it executes, its answer is lost), ``uA`` (it never
  arrives; A sees UNAVAILABLE).
* ``oA`` (lock-store outage): A's lock operation fails with ``LockUnavailableError``
  without reaching the store; ``fA`` (failing read): A's status read fails.
* ``F`` (the active instance completes), where the configuration allows it.

Exploration is a depth-first search over these choices with *preemption bounding*
(CHESS: a schedule may switch away from a runnable starter at most ``preemptions``
times), a bound on faults, and *state hashing*: a state (the world, every starter's
history of answers, the clock, the budgets left) reached a second time is not explored
again, which merges interleavings that commute. Generators cannot be copied, so every
path is replayed from the start (stateless model checking). A seeded random mode samples
larger configurations. Every run is a *schedule string* (``"A A dB B lB ..."``) that
:func:`replay` runs again step by step.

Invariants, checked after every step: at most one STARTED (per request); a STARTED only
by a starter whose own schedule created an instance (its fencing tag); no active instance
overwritten; each request ID creates at most one instance; no call's event raised twice;
only an instance some ``TERMINATE_EXISTING`` call found running when it began is ever
terminated, and such a call never answers ALREADY_RUNNING while that instance still runs;
every starter ends with an answer or an error of the library's error tree (a cancelled one
ends when its clean-up does); at the end, after the documented windows, nobody holds the
lease (the ID is startable).

Configurations (:data:`CONFIGS`) say which faults are enabled, and are either *safe*
(0 violations is the claim) or *residual* (a documented window: the explorer must find
a counterexample). Mutants (:data:`MUTANTS`) break one piece of the flow each and must
be caught.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from strict_singleton import _flow
from strict_singleton._validation import FENCING_TAG, StartCall, StarterConfig, build_config
from strict_singleton.errors import LockUnavailableError, StrictSingletonError, TerminateError
from strict_singleton.lock_backends.base import RequestRecord
from strict_singleton.policies import ConflictPolicy
from strict_singleton.result import StartOutcome
from strict_singleton.testing.world import Profile, RpcError, World

IID = "singleton"
NAMES = "ABCDEFGH"


@dataclass(frozen=True)
class Config:
    """One explored configuration: the world, the starters and the enabled faults."""

    name: str
    profile: Profile = "overwrite"
    starters: int = 2
    faults: frozenset[str] = frozenset()
    max_faults: int = 2
    preemptions: int = 2
    lease_ttl: float = 1.0
    visibility_lag: float = 0.0
    visibility_timeout: float = 1.0
    ambiguity_timeout: float = 1.0
    expiring: bool = True
    lenient_renew: bool = False  # the store renews an expired, unclaimed lease (as Azure Blob does)
    late_land: bool = False  # delayed requests may land after ambiguity_timeout
    records: bool = True  # the store keeps start records (every shipped backend); False: the visibility hold
    request_ids: tuple[str | None, ...] = ()  # per starter (A, B, ...): its request_id; empty: none
    signals: bool = False  # every starter calls start_or_signal, its event's data its request ID (or name)
    on_conflict: str = "use_existing"  # every starter's ConflictPolicy (its value)
    preexisting: float | None = None  # an active instance created this many seconds before the calls began
    completions: int = 0  # times the active instance may complete during a run (choice ``F``)
    whole_seconds: bool = False  # creation times of one-second resolution (Durable Functions)
    seed_signals: tuple[str, ...] = ()  # signal entries the store's request record holds before the calls
    safe: bool = True
    claim: str = ""

    def starter_config(self) -> StarterConfig:
        return replace(self._built(), start_records=self.records, request_records=True)

    def request_id(self, index: int) -> str | None:
        return self.request_ids[index] if index < len(self.request_ids) else None

    def _built(self) -> StarterConfig:
        return build_config(
            lease_ttl=self.lease_ttl,
            confirm_visible=True,
            background_finish=False,
            max_instance_id_length=256,
            fetch_payloads=False,
            ambiguity_timeout=self.ambiguity_timeout,
            visibility_timeout=self.visibility_timeout,
            wait=self.lease_ttl * 2 + self.ambiguity_timeout + self.visibility_timeout,  # outwaits any hold
            backend="sim",
        )


SAFE_FAULTS = frozenset({"slow", "slowlose", "delay", "drop", "unsent", "pause"})

# Request IDs of the largest size a request record stores (252 of MAX_REQUEST_ID_BYTES once
# percent-encoded: 28 CJK characters), distinct in their last character.
_BIG = tuple("日" * 27 + chr(0x4E00 + i) for i in range(10))

CONFIGS: dict[str, Config] = {
    c.name: c
    for c in [
        Config(
            "overwrite",
            faults=SAFE_FAULTS,
            claim="rows 1-3, 11-16: no lock-store loss; pauses anywhere but while a request is in flight",
        ),
        Config("atomic", profile="atomic", faults=SAFE_FAULTS, claim="as overwrite, on a host that dedupes"),
        Config(
            "eventual",
            visibility_lag=0.3,
            faults=SAFE_FAULTS,
            claim="an overwriting host whose status reads lag (below visibility_timeout), with start records; "
            "no pause between the schedule's answer and the recording release",
        ),
        Config(
            "eventual-no-records",
            visibility_lag=0.3,
            records=False,
            faults=frozenset({"slow", "slowlose", "delay", "drop"}),
            claim="as eventual, with a store that keeps no start records: the lease is held until visible",
        ),
        Config(
            "eventual-long-lag",
            visibility_lag=1.5,
            visibility_timeout=3.0,
            faults=frozenset({"slow", "delay", "drop"}),
            max_faults=2,
            claim="status reads lag longer than the lease (below visibility_timeout): the next holder renews "
            "while it waits; an ambiguous start is recorded before its watch (the attack review's F3)",
        ),
        Config(
            "requests",
            starters=3,
            request_ids=("r1", None, "r1"),
            faults=frozenset({"delay", "drop", "unsent", "pause"}),
            max_faults=2,
            preemptions=1,
            claim="row 23: request IDs; C retries A's request (concurrently or later), B starts without one; "
            "STARTED only for one request per wave, and a deduplicated STARTED only for its request's instance",
        ),
        Config(
            "requests-signal",
            starters=3,
            request_ids=("r1", "r2", "r1"),
            signals=True,
            faults=frozenset({"delay", "drop", "pause"}),
            max_faults=2,
            preemptions=1,
            claim="row 23: start_or_signal with request IDs; C retries A's request, B signals with another: "
            "one STARTED per request, and no request's event raised twice",
        ),
        Config(
            "signals",
            signals=True,
            visibility_lag=1.5,
            visibility_timeout=3.0,
            faults=frozenset({"event", "cancel", "delay", "drop"}),
            max_faults=2,
            claim="row 25: start_or_signal waves on a host whose reads lag longer than the lease; the event's "
            "RPC slow, lost or unsent, any call cancelled at any yield: one STARTED, nothing overwritten, "
            "every event raised at most once",
        ),
        Config(
            "signals-cancel",
            signals=True,
            visibility_lag=0.3,
            faults=frozenset({"cancel", "outage", "failread", "pause"}),
            max_faults=2,
            claim="start_or_signal with cancellation at every yield, lock-store outages and failing reads",
        ),
        Config(
            "requests-replaced",
            starters=2,
            request_ids=("r1", "r1"),
            preexisting=0.0,
            completions=2,
            faults=frozenset({"delay", "drop", "cancel"}),
            max_faults=1,
            preemptions=1,
            claim="row 23: a request replaces a finished instance, its own instance finishes, then it is "
            "retried: each request ID creates at most one instance",
        ),
        Config(
            "one-second",
            starters=2,
            request_ids=("r1", "r1"),
            preexisting=0.0,
            completions=2,
            whole_seconds=True,
            faults=frozenset({"delay", "drop"}),
            max_faults=1,
            preemptions=1,
            claim="row 23 on a client whose creation times have one-second resolution (Durable Functions): "
            "a retry never runs its request twice",
        ),
        Config(
            "requests-cancel",
            starters=3,
            request_ids=("r1", None, "r1"),
            signals=True,
            faults=frozenset({"cancel", "event", "outage"}),
            max_faults=1,
            preemptions=1,
            claim="row 23: start_or_signal with request IDs, any call cancelled at any yield, events failing, "
            "lock-store outages: no request's event raised twice, no request run twice",
        ),
        Config(
            "records-full",
            starters=3,
            request_ids=(_BIG[0], _BIG[1], _BIG[1]),
            signals=True,
            preexisting=0.0,
            seed_signals=_BIG[2:],
            faults=frozenset({"drop", "cancel"}),
            max_faults=1,
            preemptions=1,
            claim="row 23: request IDs of the largest stored size signalling an instance whose request record "
            "is full: the entry a call has just written is never the one left out",
        ),
        Config(
            "terminate-young",
            on_conflict="terminate_existing",
            preexisting=0.1,
            faults=frozenset({"event", "cancel", "slowlose", "delay"}),
            max_faults=2,
            preemptions=1,
            claim="row 26: TERMINATE_EXISTING waves over an instance started a moment before (younger than "
            "clock_skew): it is replaced once, no other instance is terminated, also with a terminate held in "
            "the backend past its deadline or a read under the lease slower than the lease while its key is lost",
        ),
        Config(
            "file",
            expiring=False,
            faults=frozenset({"slow", "delay", "drop", "pause"}),
            claim="a lease that never expires (the file lease): bounded holds",
        ),
        Config(
            "residual-store-loss",
            faults=frozenset({"lose"}),
            max_faults=1,
            safe=False,
            claim="row 7 / residual window: the lock store forgets a held lease (overwrite host)",
        ),
        Config(
            "residual-late-land",
            faults=frozenset({"delay"}),
            max_faults=1,
            late_land=True,
            safe=False,
            claim="residual window: a request executes after ambiguity_timeout",
        ),
        Config(
            "residual-stall-after-check",
            faults=frozenset({"stall"}),
            max_faults=1,
            safe=False,
            claim="residual window: a pause between the send-by check and the request leaving",
        ),
        Config(
            "residual-pause-in-flight",
            ambiguity_timeout=3.0,
            faults=frozenset({"delay", "pause"}),
            max_faults=2,
            safe=False,
            claim="residual window: a pause past the send reserve while a timed-out request is still in flight",
        ),
        Config(
            "residual-crash-in-flight",
            faults=frozenset({"crash"}),
            max_faults=1,
            safe=False,
            claim="residual window: the starter dies while its request is queued in the backend",
        ),
        Config(
            "residual-visibility-timeout",
            visibility_lag=2.0,
            visibility_timeout=0.5,
            faults=frozenset(),
            max_faults=0,
            safe=False,
            claim="residual window: a new instance shows in reads later than visibility_timeout",
        ),
        Config(
            "residual-pause-in-hold",
            visibility_lag=2.0,
            visibility_timeout=5.0,
            faults=frozenset({"pause"}),
            max_faults=1,
            safe=False,
            claim="residual window: a pause past the lease between the schedule's answer and the release "
            "that leaves the start record",
        ),
    ]
}


# -- mutants -------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    config: str  # the safe configuration that must catch it
    patch: Callable[[], contextlib.AbstractContextManager[Any]]
    world: dict[str, Any] = field(default_factory=dict)
    starter: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The flow logs warnings a real deployment wants; thousands of simulated runs do not."""
    log = logging.getLogger("strict_singleton")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _no_patch() -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _keep_without_confirmation() -> contextlib.AbstractContextManager[Any]:
    real = _flow._keep

    def keep(ctx: Any, lease: Any, *, confirm: bool) -> Any:
        if confirm:
            yield from _nothing()
            return None
        return (yield from real(ctx, lease, confirm=confirm))

    return _patched(_flow, "_keep", keep)


def _nothing() -> Iterator[Any]:
    yield from ()


def _release_on_ambiguity() -> contextlib.AbstractContextManager[Any]:
    def watch(ctx: Any, lease: Any) -> Any:
        yield from _nothing()
        return None, None

    return _patched(_flow, "_watch", watch)


def _renew_after_expiry() -> contextlib.AbstractContextManager[Any]:
    real_remaining = _flow.LeaseClock.remaining

    def remaining(self: Any, now: float) -> float | None:
        value = real_remaining(self, now)
        return value if value is None or value > 0 else 1e-9  # "still valid": renew it anyway

    return _patched(_flow.LeaseClock, "remaining", remaining)


def _claim_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    def confirm(ctx: Any, lease: Any) -> Any:
        yield from _nothing()
        return None

    return _patched(_flow, "_confirm", confirm)


def _ignore_start_record() -> contextlib.AbstractContextManager[Any]:
    def await_record(ctx: Any, lease: Any, record: Any, state: Any) -> Any:
        yield from _nothing()
        return state

    return _patched(_flow, "_await_record", await_record)


def _no_record_before_watch() -> contextlib.AbstractContextManager[Any]:
    def record_start(ctx: Any, lease: Any, ttl: float) -> Any:
        yield from _nothing()

    return _patched(_flow, "_record_start", record_start)


def _no_tombstone() -> contextlib.AbstractContextManager[Any]:
    real = _flow._write_start

    def write_start(ctx: Any, request_id: Any, **kw: Any) -> Any:
        if request_id is None:  # a start without a request ID leaves the earlier record in place
            yield from _nothing()
            return None
        return (yield from real(ctx, request_id, **kw))

    return _patched(_flow, "_write_start", write_start)


def _retry_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    def confirm_retry(ctx: Any, lease: Any) -> Any:
        yield from _nothing()

    return _patched(_flow, "_confirm_retry", confirm_retry)


def _signal_displaces_start() -> contextlib.AbstractContextManager[Any]:
    real = _flow._base_record

    def base_record(ctx: Any) -> Any:
        return replace(real(ctx), request_id=None)  # a signal forgets the start it does not create

    return _patched(_flow, "_base_record", base_record)


def _dedupe_unseen() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow, "_shows_request", lambda state, record, skew: True)


def _record_drops_newest() -> contextlib.AbstractContextManager[Any]:
    real = RequestRecord.encode

    def encode(self: RequestRecord) -> str:
        return real(replace(self, signals=tuple(reversed(self.signals))))  # the newest entries are left out first

    return _patched(RequestRecord, "encode", encode)


def _plain_release_on_cancel() -> contextlib.AbstractContextManager[Any]:
    def let_go(ctx: Any) -> Any:
        ctx.progress.started = None
        if ctx.progress.may_hold:
            yield from _flow._release(ctx)  # no start record, whatever happened before

    return _patched(_flow, "_let_go", let_go)


def _event_before_record() -> contextlib.AbstractContextManager[Any]:
    real = _flow._record_start

    def record_start(ctx: Any, lease: Any, ttl: float) -> Any:
        if ctx.progress.started is not None:  # after the schedule's answer: raise the event first
            yield from _nothing()
            return None
        return (yield from real(ctx, lease, ttl))

    return _patched(_flow, "_record_start", record_start)


def _one_second_unchecked() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow, "_indistinguishable", lambda state, record: False)


def _terminate_by_clock() -> contextlib.AbstractContextManager[Any]:
    def began_with(ctx: Any, state: Any) -> bool:
        # an instance created after the call began, allowing clock_skew, is the wave's
        began_us = _flow.epoch_us(ctx.wall_clock()) - round((ctx.clock() - ctx.t0) * 1_000_000)
        created = _flow.created_us(state)
        return created is None or created < began_us - round(ctx.cfg.clock_skew * 1_000_000)

    return _patched(_flow, "_began_with", began_with)


def _terminate_variant(*, confirm: bool, watch: bool) -> Callable[..., Any]:
    """``_flow._terminate`` with its lease confirmation or its watch after an ambiguous answer taken out."""
    real = _flow._terminate

    def terminate(ctx: Any, lease: Any, state: Any) -> Any:
        if confirm and watch:
            return (yield from real(ctx, lease, state))
        if confirm:
            reason = yield from _flow._keep(ctx, lease, confirm=True)
            if reason is not None:
                raise ctx.lost(reason)
        window = max(ctx.call.terminate_timeout, ctx.cfg.ambiguity_timeout)
        ctx.progress.terminating = None if not watch else ctx.clock() + window
        try:
            yield _flow.Terminate(ctx.iid, "mutant", _flow._send_by(ctx))
        except Exception as exc:
            if not watch:
                raise TerminateError(f"terminate failed: {exc}", instance_id=ctx.iid, backend=ctx.backend) from exc
        current, ended = yield from _flow._reread_until(
            ctx, lease, ctx.clock() + window, lambda s: not _flow.is_active(s), waiting_for="end"
        )
        ctx.progress.terminating = None
        if not ended:
            raise TerminateError("did not end", instance_id=ctx.iid, backend=ctx.backend)
        return current

    return terminate


def _terminate_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow, "_terminate", _terminate_variant(confirm=False, watch=True))


def _terminate_unwatched() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow, "_terminate", _terminate_variant(confirm=True, watch=False))


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in [
        Mutant("no-lease", "the store grants every acquire", "overwrite", _no_patch, world={"no_lease": True}),
        Mutant(
            "no-validity-check",
            "no confirmation before scheduling and the driver ignores send-by (issue 9 items 2, 5 reverted)",
            "overwrite",
            _keep_without_confirmation,
            world={"ignore_send_by": True},
        ),
        Mutant(
            "no-confirmation",
            "no confirmation after a slow read (issue 9 item 5 reverted)",
            "overwrite",
            _keep_without_confirmation,
        ),
        Mutant(
            "no-visibility-hold",
            "release as soon as the schedule returns",
            "eventual",
            _no_patch,
            starter={"confirm_visible": False},
        ),
        Mutant(
            "ignore-start-record",
            "the next holder acts on a read that does not show the recorded start yet (issue 12)",
            "eventual",
            _ignore_start_record,
        ),
        Mutant(
            "no-record-before-watch",
            "after an ambiguous failure, watch without leaving a start record (the attack review's F3)",
            "eventual-long-lag",
            _no_record_before_watch,
        ),
        Mutant(
            "no-tombstone",
            "a start without a request ID leaves an earlier request's record in place (row 23)",
            "requests",
            _no_tombstone,
        ),
        Mutant(
            "retry-unconfirmed",
            "a retry claims its request's instance on a read made after its lease may have expired (row 23)",
            "requests",
            _retry_unconfirmed,
        ),
        Mutant(
            "signal-displaces-start",
            "a start_or_signal that signals replaces the record of the start before it (the review's F1)",
            "requests-signal",
            _signal_displaces_start,
        ),
        Mutant(
            "dedupe-unseen",
            "a retry claims its request's instance without a read that shows it (row 23)",
            "requests",
            _dedupe_unseen,
        ),
        Mutant(
            "record-drops-newest",
            "a full request record leaves out the signal entry just written (large request IDs)",
            "records-full",
            _record_drops_newest,
        ),
        Mutant(
            "plain-release-on-cancel",
            "a call cancelled after its start releases without leaving the start record",
            "signals",
            _plain_release_on_cancel,
        ),
        Mutant(
            "event-before-record",
            "start_or_signal raises its event before leaving the start record",
            "signals",
            _event_before_record,
        ),
        Mutant(
            "one-second-unchecked",
            "a retry on one-second creation times takes its own instance for the one it replaced",
            "one-second",
            _one_second_unchecked,
        ),
        Mutant(
            "terminate-by-clock",
            "TERMINATE_EXISTING takes an instance created within clock_skew of the call's start as the wave's",
            "terminate-young",
            _terminate_by_clock,
        ),
        Mutant(
            "terminate-unconfirmed",
            "TERMINATE_EXISTING sends its terminate on a read that may have outlived the lease",
            "terminate-young",
            _terminate_unconfirmed,
        ),
        Mutant(
            "terminate-unwatched",
            "TERMINATE_EXISTING lets go at once after a terminate whose answer was cut at its deadline",
            "terminate-young",
            _terminate_unwatched,
        ),
        Mutant(
            "no-reuse-policy",
            "requests may replace active instances (terminate-and-replace)",
            "atomic",
            _no_patch,
            world={"replace_active": True, "no_lease": True},
        ),
        Mutant(
            "release-on-ambiguous-failure",
            "release at once after DEADLINE_EXCEEDED (issue 9 item 1 reverted)",
            "overwrite",
            _release_on_ambiguity,
        ),
        Mutant(
            "renew-after-expiry",
            "renew a lease whose deadline passed (on a store that allows it, as Blob does)",
            "overwrite",
            _renew_after_expiry,
            world={"lenient_renew": True},
        ),
        Mutant(
            "claim-unconfirmed",
            "after an ambiguous failure, claim an instance without confirming the lease (the review's F1)",
            "overwrite",
            _claim_unconfirmed,
        ),
        Mutant(
            "queued-finish",
            "the finish (recording release or visibility hold) waits in a queue past the TTL (issue 9 item 6 reverted)",
            "eventual-long-lag",
            _no_patch,
            world={"queued_finish": True},
        ),
    ]
}


# -- one run ---------------------------------------------------------------------------


class Violation(AssertionError):
    pass


@dataclass
class _Starter:
    name: str
    gen: Any
    token: str
    op: Any = None
    phase: str = "start"  # start -> finish -> done
    withheld: Any = None  # ("answer", value) | ("raise", exc)
    result: Any = None
    error: BaseException | None = None
    history: list[str] = field(default_factory=list)
    fencing: int | None = None
    finish_after: float | None = None
    sent: bool = False  # a schedule request was sent
    crashed: bool = False  # the process died (answers nothing; its lease is orphaned)
    wake_at: float | None = None  # blocked in a sleep, a wait or a call until then
    wake_reply: Any = None
    waiting_release: bool = False  # a WaitRelease: also woken when the lease is free
    cancelled: bool = False  # the caller went away (Abandoned thrown in); the flow cleans up
    began_with: Any = None  # TERMINATE_EXISTING: the state its first read answered (what it began with)
    reads: int = 0

    @property
    def done(self) -> bool:
        return self.phase == "done"


class _Run:
    """One schedule, step by step, with the invariants checked after each."""

    def __init__(self, cfg: Config, *, mutant: Mutant | None = None) -> None:
        self.cfg = cfg
        self.mutant = mutant
        opts = dict(mutant.world) if mutant else {}
        self.world = World(
            profile=cfg.profile,
            expiring=cfg.expiring,
            visibility_lag=cfg.visibility_lag,
            records=cfg.records,
            whole_seconds=cfg.whole_seconds,
        )
        self.world.op_cost = 0.0
        self.world.clock.advance(0.25)  # inside a second: instances of one wave share it (one-second clients)
        if cfg.preexisting is not None:  # an instance running before the calls began
            self.world.backend.schedule(IID, {})
            self.world.clock.advance(cfg.preexisting)
        if cfg.seed_signals:
            now_us = _flow.epoch_us(self.world.clock.wall())
            seeded = RequestRecord(
                None,
                0,
                now_us,
                None,
                "start",
                "",
                now_us + 10**12,
                tuple((r, "raised", None) for r in cfg.seed_signals),
            )
            self.world.store.requests[IID] = (seeded, self.world.clock() + 1e6)
        self.completed = 0
        self.lenient = cfg.lenient_renew or opts.get("lenient_renew", False)
        self.no_lease = opts.get("no_lease", False)
        self.ignore_send_by = opts.get("ignore_send_by", False)
        self.replace_active = opts.get("replace_active", False)
        self.queued_finish = opts.get("queued_finish", False)
        starter_cfg = cfg.starter_config()
        if mutant and mutant.starter:
            starter_cfg = replace(starter_cfg, **mutant.starter)
        self.scfg = starter_cfg
        self.starters = [self._new(NAMES[i]) for i in range(cfg.starters)]
        # name -> (latest land time, the schedule's tags, or None for a held terminate)
        self.queued: dict[str, tuple[float, dict[str, str] | None]] = {}
        self.trace: list[str] = []
        self.faults = 0
        self.preemptions = 0
        self.last: str | None = None
        for s in self.starters:
            self._advance(s, ("answer", None), first=True)

    def _new(self, name: str) -> _Starter:
        call = StartCall(
            instance_id=IID,
            orchestrator="orch",
            input=None,
            tags={},
            version=None,
            start_at=None,
            request_id=self.cfg.request_id(NAMES.index(name)),
            signal=("item", self.cfg.request_id(NAMES.index(name)) or name) if self.cfg.signals else None,
            on_conflict=ConflictPolicy(self.cfg.on_conflict),
            terminate_timeout=self.cfg.lease_ttl,  # a wait for the end a few steps long, as the lease
        )
        gen = _flow.start_flow(
            call, self.scfg, token=name, backend="sim", clock=self.world.clock, wall_clock=self.world.clock.wall
        )
        return _Starter(name=name, gen=gen, token=name)

    # -- stepping a starter's generator ---------------------------------------------

    def _advance(self, s: _Starter, reply: tuple[str, Any], *, first: bool = False) -> None:
        if isinstance(s.op, _flow.Read) and reply[0] == "answer":
            s.reads += 1
            if s.reads == 1 and self.cfg.on_conflict == "terminate_existing":
                s.began_with = reply[1]
        try:
            if first:
                s.op = next(s.gen)
            elif reply[0] == "raise":
                s.history.append(f"!{type(reply[1]).__name__}@{self.world.clock():.6f}")
                s.op = s.gen.throw(reply[1])
            else:
                s.history.append(f"{_short(reply[1])}@{self.world.clock():.6f}")
                s.op = s.gen.send(reply[1])
        except StopIteration as stop:
            self._ended(s, stop.value)
        except _flow.Abandoned as exc:  # a cancelled call ends when its clean-up does
            if not s.cancelled:
                raise Violation(f"{s.name}'s flow raised Abandoned without being cancelled") from exc
            s.error, s.phase, s.op = exc, "done", None
        except StrictSingletonError as exc:
            s.error, s.phase, s.op = exc, "done", None
        except Exception as exc:  # not a documented error: a violation of its own
            s.error, s.phase, s.op = exc, "done", None
            raise Violation(f"{s.name} raised an undocumented {type(exc).__name__}: {exc}") from exc

    def _ended(self, s: _Starter, value: Any) -> None:
        if s.phase == "start":
            if s.cancelled:  # the driver drives a cancelled flow to its end and drops what it returns
                if value.hold is not None:
                    raise Violation(f"{s.name} was cancelled and its flow returned a held lease nobody finishes")
                s.phase, s.op = "done", None
                return
            s.result = value.result
            self._check_answer(s)
            s.fencing = value.result.fencing_token
            if value.hold is not None:
                call = StartCall(instance_id=IID, orchestrator="orch", input=None, tags={}, version=None, start_at=None)
                s.gen = _flow.finish_flow(
                    call, self.scfg, value.hold, clock=self.world.clock, wall_clock=self.world.clock.wall
                )
                s.phase = "finish"
                if self.queued_finish:
                    s.finish_after = self.world.clock() + self.cfg.lease_ttl * 1.5
                s.op = next(s.gen)
                return
        s.phase, s.op = "done", None

    # -- what may happen next -------------------------------------------------------------

    def runnable(self, s: _Starter) -> bool:
        if s.done or s.withheld is not None or s.wake_at is not None:
            return False
        return not (s.finish_after is not None and self.world.clock() < s.finish_after)

    def _next_event(self) -> float | None:
        """When time must next pass to: a wake-up, a queued finish, a request due to land."""
        times = [s.wake_at for s in self.starters if s.wake_at is not None]
        times += [s.finish_after for s in self.starters if s.finish_after is not None and not s.done]
        times += [latest for latest, _tags in self.queued.values() if latest < 1e11]
        lease = self.world.store.leases.get(IID)
        if lease is not None and lease.expires_at is not None and any(s.waiting_release for s in self.starters):
            times.append(lease.expires_at)  # a waiter learns of an expiry (stores poll or notify)
        return min(times) if times else None

    def _wake(self) -> None:
        """Deliver the answers of starters whose sleep, wait or call has ended."""
        for s in self.starters:
            if s.finish_after is not None and self.world.clock() >= s.finish_after:
                s.finish_after = None  # the queued finish may start now
            if s.wake_at is None:
                continue
            free = s.waiting_release and self.world.store.holder(IID) is None
            if self.world.clock() >= s.wake_at or free:
                reply, s.wake_at, s.wake_reply, s.waiting_release = s.wake_reply, None, None, False
                self._advance(s, reply)

    def choices(self) -> list[str]:
        out: list[str] = []
        fault_ok = self.faults < self.cfg.max_faults
        faults = self.cfg.faults
        for s in self.starters:
            if s.withheld is not None and s.name not in self.queued:
                out.append("r" + s.name)
            if fault_ok and "cancel" in faults and not (s.done or s.cancelled or s.crashed):
                out.append("z" + s.name)  # cancelled at its current yield (running, blocked or awaiting an answer)
                if self.runnable(s) and not isinstance(s.op, (_flow.Sleep, _flow.WaitRelease)):
                    out.append("y" + s.name)  # its operation runs, then the caller goes away
            if not self.runnable(s):
                continue
            out.append(s.name)
            if not fault_ok:
                continue
            if isinstance(s.op, (_flow.RaiseEvent, _flow.Terminate)) and "event" in faults:
                out += ["s" + s.name, "x" + s.name, "u" + s.name]
            if isinstance(s.op, _flow.Terminate) and "delay" in faults:
                out.append("d" + s.name)  # held in the backend past its deadline, executed later
            if isinstance(s.op, _flow.LOCK_OPS) and "outage" in faults:
                out.append("o" + s.name)
            if isinstance(s.op, _flow.Read) and "failread" in faults:
                out.append("f" + s.name)
            if isinstance(s.op, _flow.Read):
                # a read slower than the lease during the hold on a lagging host: documented window
                in_hold = self.cfg.safe and self.cfg.visibility_lag > 0 and s.phase == "finish"
                if "slow" in faults and not in_hold:
                    out.append("s" + s.name)
                # its own lease, read before scheduling (later losses are documented windows)
                if "slowlose" in faults and not s.sent and self.world.store.holder(IID) == s.token:
                    out.append("k" + s.name)
            if isinstance(s.op, _flow.Schedule):
                for code, fault in (("d", "delay"), ("x", "drop"), ("u", "unsent"), ("g", "stall"), ("c", "crash")):
                    if fault in faults:
                        out.append(code + s.name)
        for name in self.queued:
            out.append("l" + name)
        if fault_ok and "pause" in faults and self._pause_allowed():
            out.append("p")
        if fault_ok and "lose" in faults:
            out.append("L")
        current = self.world.backend.instances.get(IID)
        if self.completed < self.cfg.completions and current is not None and _flow.is_active(current.state()):
            out.append("e")  # the active instance completes
        if not any(self.runnable(s) for s in self.starters) and self._next_event() is not None:
            out.append("t")  # nobody can act now: time passes to the next event
        return out

    def _pause_allowed(self) -> bool:
        if self.cfg.safe and self.queued:
            return False  # a request in flight: the send-reserve window (documented)
        # the visibility hold on a lagging host: documented window
        return not (self.cfg.safe and self.cfg.visibility_lag > 0 and any(s.phase == "finish" for s in self.starters))

    def default(self, options: list[str]) -> str:
        """No preemption, no fault: the last starter keeps going, else the first runnable."""
        if self.last is not None and self.last in options:
            return self.last
        plain = [o for o in options if o in NAMES or o[0] in "rl" or o == "t"]
        return plain[0] if plain else options[0]

    def cost(self, choice: str, options: list[str]) -> tuple[int, int]:
        """(preemptions, faults) this choice spends."""
        fault = 1 if choice[0] in "skdxugcpLzyof" else 0
        preempt = 0
        if choice in NAMES and self.last is not None and self.last != choice and self.last in options:
            preempt = 1
        return preempt, fault

    # -- taking a step ---------------------------------------------------------------------

    def step(self, choice: str) -> None:
        options = self.choices()
        if choice not in options:
            raise ValueError(f"step {len(self.trace) + 1}: {choice!r} is not possible here (possible: {options})")
        preempt, fault = self.cost(choice, options)
        self.preemptions += preempt
        self.faults += fault
        self.trace.append(f"{choice}@{self.world.clock() - 1000.0:.3f}")
        w = self.world
        self._land_within(self._duration(choice))
        if choice == "p":
            w.clock.advance(self.cfg.lease_ttl * 1.5)
        elif choice == "e":
            self.completed += 1
            w.backend.finish(IID)
        elif choice == "t":
            target = self._next_event()  # None: the only event was a landing, done just above
            if target is not None:
                w.clock.advance(target - w.clock())
        elif choice == "L":
            w.store.leases.clear()  # the store forgets everything (a restart without persistence)
            w.store.starts.clear()
            w.store.requests.clear()
        elif choice[0] == "l":
            self._land(choice[1:])
        elif choice[0] == "r":
            s = self._by(choice[1:])
            reply, s.withheld = s.withheld, None
            self._advance(s, reply)
        else:
            s = self._by(choice[-1])
            self.last = s.name if choice in NAMES else self.last
            self._execute(s, choice[0] if len(choice) == 2 else "")
        self._land_due()
        self._wake()
        self.check()

    def _duration(self, choice: str) -> float:
        """The most virtual time this step can let pass."""
        if choice == "p" or choice[0] == "g":
            return self.cfg.lease_ttl * 1.5
        if choice[0] == "k":
            return self.scfg.confirm_after * 2
        if choice == "t":
            target = self._next_event()
            return 0.0 if target is None else max(0.0, target - self.world.clock())
        return 0.0

    def _by(self, name: str) -> _Starter:
        return next(s for s in self.starters if s.name == name)

    def _execute(self, s: _Starter, fault: str) -> None:
        op, w = s.op, self.world
        if fault in ("z", "y"):
            self._cancel(s, ran=fault == "y")
            return
        if fault == "o":
            self._advance(s, ("raise", LockUnavailableError("simulated outage", instance_id=IID, backend="sim")))
            return
        if fault == "f":
            self._advance(s, ("raise", RpcError("UNAVAILABLE", "simulated failing read")))
            return
        if isinstance(op, (_flow.RaiseEvent, _flow.Terminate)):
            if op.send_by is not None and w.clock() >= op.send_by:
                self._advance(s, ("raise", _flow.NotSent("send-by time passed")))
                return
            if fault == "u":
                self._advance(s, ("raise", RpcError("UNAVAILABLE")))
                return
            if fault == "d":  # a terminate held in the backend: the caller's deadline ends its wait first
                latest = w.clock() + (1e9 if self.cfg.late_land else self.scfg.ambiguity_timeout * 0.9)
                self.queued[s.name] = (latest, None)
                if op.send_by is None:
                    s.wake_at, s.wake_reply = latest, ("answer", None)
                else:
                    s.wake_at, s.wake_reply = max(op.send_by, w.clock()), ("raise", RpcError("DEADLINE_EXCEEDED"))
                return
            if fault == "x":
                with contextlib.suppress(RpcError):
                    w.answer(op)
                self._advance(s, ("raise", RpcError("UNAVAILABLE")))
                return
        if isinstance(op, _flow.Acquire) and self.no_lease:
            w.store.fences[IID] = w.store.fences.get(IID, 0) + 1
            from strict_singleton.lock_backends.base import Grant

            self._advance(s, ("answer", Grant(fencing_token=w.store.fences[IID], valid_for=op.ttl)))
            return
        if isinstance(op, (_flow.Extend, _flow.Release)) and self.no_lease:
            self._advance(s, ("answer", True))
            return
        if isinstance(op, _flow.Extend) and self.lenient and w.store.holder(op.instance_id) is None:
            w.store.acquire(op.instance_id, op.token, op.ttl)  # Blob: renew after expiry, nobody else holding
            self._advance(s, ("answer", True))
            return
        if isinstance(op, _flow.Schedule):
            self._schedule(s, op, fault)
            return
        if isinstance(op, (_flow.Sleep, _flow.WaitRelease)):
            wait = op.seconds if isinstance(op, _flow.Sleep) else op.timeout
            s.wake_at, s.wake_reply = w.clock() + wait, ("answer", None)
            s.waiting_release = isinstance(op, _flow.WaitRelease)
            return
        if fault in ("s", "k"):
            try:
                reply: tuple[str, Any] = ("answer", w.answer(op))
            except Exception as exc:
                reply = ("raise", exc)
            s.withheld = reply
            if fault == "k":
                w.store.lose(IID)
                w.clock.advance(self.scfg.confirm_after * 2)
            return
        try:
            reply = ("answer", w.answer(op))
        except Exception as exc:
            reply = ("raise", exc)
        self._advance(s, reply)

    def _cancel(self, s: _Starter, *, ran: bool) -> None:
        """The caller goes away at its current yield: ``Abandoned`` is thrown in there, after the
        pending operation ran (``ran``; its answer is lost) or before it reached its target."""
        if ran:
            op = s.op
            with contextlib.suppress(Exception):
                if isinstance(op, _flow.Schedule):
                    if op.send_by is None or self.world.clock() < op.send_by:
                        s.sent = True
                        self._create(op.tags)
                else:
                    self.world.answer(op)
        s.withheld, s.wake_at, s.wake_reply, s.waiting_release = None, None, None, False
        s.cancelled = True
        self._advance(s, ("raise", _flow.Abandoned()))

    def _schedule(self, s: _Starter, op: _flow.Schedule, fault: str) -> None:
        w = self.world
        if op.send_by is not None and w.clock() >= op.send_by and not self.ignore_send_by:
            self._advance(s, ("raise", _flow.NotSent("send-by time passed")))
            return
        if fault == "u":  # the connection failed before the request left: ambiguous to the caller
            self._advance(s, ("raise", RpcError("UNAVAILABLE")))
            return
        s.sent = True
        if fault == "g":  # frozen after the check: the request leaves (and A resumes) only later
            w.clock.advance(self.cfg.lease_ttl * 1.5)
            self.queued[s.name] = (1e12, dict(op.tags))
            s.withheld = ("answer", IID)
            return
        if fault == "c":  # the process dies with its request queued in the backend; the lease is orphaned
            self.queued[s.name] = (1e12, dict(op.tags))
            s.phase, s.op, s.crashed = "done", None, True
            return
        if fault == "d":
            latest = w.clock() + (1e9 if self.cfg.late_land else self.scfg.ambiguity_timeout * 0.9)
            self.queued[s.name] = (latest, dict(op.tags))
            if op.send_by is None:  # no deadline: the call returns once the request has landed
                s.wake_at, s.wake_reply = latest, ("answer", IID)
            else:  # the caller's wait ends at its deadline
                s.wake_at, s.wake_reply = max(op.send_by, w.clock()), ("raise", RpcError("DEADLINE_EXCEEDED"))
            return
        try:
            value: Any = self._create(op.tags)
        except RpcError as exc:
            self._advance(s, ("raise", exc))
            return
        self._advance(s, ("raise", RpcError("UNAVAILABLE")) if fault == "x" else ("answer", value))

    def _create(self, tags: dict[str, str]) -> str:
        backend = self.world.backend
        if self.replace_active and backend.profile == "atomic":
            backend.profile = "overwrite"
            try:
                return backend.schedule(IID, tags)
            finally:
                backend.profile = "atomic"
        return backend.schedule(IID, tags)

    def _land(self, name: str) -> None:
        _latest, tags = self.queued.pop(name)
        if tags is None:  # a held terminate request
            self.world.backend.terminate(IID)
            return
        with contextlib.suppress(RpcError):
            self._create(tags)

    def _land_within(self, seconds: float) -> None:
        """Requests due to land within the next ``seconds`` land at their due time, first."""
        for name, (latest, _tags) in sorted(self.queued.items(), key=lambda kv: kv[1][0]):
            if latest <= self.world.clock() + seconds:
                self.world.clock.advance(latest - self.world.clock())
                self._land(name)

    def _land_due(self) -> None:
        # A delayed request lands by its latest time (in safe configurations, within the window).
        for name, (latest, _tags) in list(self.queued.items()):
            if self.world.clock() >= latest:
                self._land(name)

    # -- invariants -------------------------------------------------------------------------

    def check(self) -> None:
        backend = self.world.backend
        started = [s for s in self.starters if s.result is not None and s.result.outcome is StartOutcome.STARTED]
        # One request per wave: calls with the same request ID are one caller (retries). Once an
        # instance has completed, a later start is a new wave: then each STARTED must still have
        # created its own instance, and none may have overwritten an active one (checked below).
        requests = {self.cfg.request_id(NAMES.index(s.name)) or s.name for s in started}
        if len(started) > 1 and len(requests) > 1 and not self.completed:
            raise Violation(f"{len(started)} starters report STARTED: {[s.name for s in started]}")
        created_tags = {c.fencing_token for c in backend.creates}
        for s in started:
            if s.result.deduplicated:
                rid = self.cfg.request_id(NAMES.index(s.name))
                seen = s.result.existing
                ours = [c for c in backend.creates if c.request_id == rid and c.request_id is not None]
                shown = None if seen is None else seen.created_at
                if not any(c.created_at is not None and c.created_at.replace(tzinfo=None) == shown for c in ours):
                    raise Violation(
                        f"{s.name} reports STARTED (deduplicated) for an instance its request {rid!r} did not create"
                    )
            elif str(s.fencing) not in created_tags:
                raise Violation(f"{s.name} reports STARTED but no instance carries its fencing token {s.fencing}")
        if len(backend.events) > 1:
            raised = Counter(event[3] for event in backend.events)
            twice = sorted(data for data, n in raised.items() if n > 1)
            if twice:
                raise Violation(f"the event of {twice[0]!r} was raised {raised[twice[0]]} times")
        overwritten = [c for c in backend.creates if c.overwrote_active]
        if overwritten:
            raise Violation(
                f"an active instance was overwritten by the request with fencing token {overwritten[0].fencing_token}"
            )
        by_request = Counter(c.request_id for c in backend.creates if c.request_id is not None)
        twice = sorted(rid for rid, n in by_request.items() if n > 1)
        if twice:
            raise Violation(f"request {twice[0]!r} created {by_request[twice[0]]} instances (its request ran twice)")
        if backend.terminated:
            began = {
                s.began_with.created_at
                for s in self.starters
                if s.began_with is not None and _flow.is_active(s.began_with)
            }
            stray = [t for t in backend.terminated if t.replace(tzinfo=None) not in began]
            if stray:
                raise Violation(
                    f"an instance created at {stray[0]} was terminated; no call found it running as it began"
                )

    def _check_answer(self, s: _Starter) -> None:
        """TERMINATE_EXISTING: ALREADY_RUNNING while the instance this call began with still runs
        means it was never replaced (every call of the wave answered with the old one)."""
        result = s.result
        if self.cfg.on_conflict != "terminate_existing" or result.outcome is not StartOutcome.ALREADY_RUNNING:
            return
        began = s.began_with
        current = self.world.backend.instances.get(IID)
        if began is None or current is None or not _flow.is_active(began):
            return
        if current.created_at.replace(tzinfo=None) == began.created_at and _flow.is_active(current.state()):
            raise Violation(
                f"{s.name} (TERMINATE_EXISTING) answered ALREADY_RUNNING with the instance it found running as it "
                "began, which was never replaced"
            )

    def finish(self) -> None:
        """After every starter ended: every queued request lands, time passes beyond the windows."""
        for name in list(self.queued):
            self._land(name)
        self.check()
        for s in self.starters:
            if s.result is None and s.error is None and not s.crashed and not s.cancelled:
                raise Violation(f"{s.name} never got an answer")
        self.world.clock.advance(self.cfg.lease_ttl * 2)
        if self.world.store.holder(IID) is not None and not self.no_lease:
            raise Violation(f"the lease is still held by {self.world.store.holder(IID)} after every starter ended")

    def finished(self) -> bool:
        return all(s.done for s in self.starters)

    def fingerprint(self) -> Any:
        w = self.world
        return (
            round(w.clock(), 6),
            tuple(sorted((k, v.token, v.expires_at) for k, v in w.store.leases.items())),
            tuple((c.fencing_token, c.overwrote_active) for c in w.backend.creates),
            tuple(sorted(self.queued)),
            tuple(
                (s.name, s.phase, tuple(s.history), s.withheld is not None, s.wake_at, s.finish_after, s.sent)
                for s in self.starters
            ),
            tuple(sorted((k, v[0], v[1] is None or tuple(sorted(v[1].items()))) for k, v in self.queued.items())),
            tuple(repr(s.op) for s in self.starters),
            tuple(
                (s.withheld is not None and _short(s.withheld[1]), s.wake_reply is not None, s.waiting_release)
                for s in self.starters
            ),
            tuple(sorted((k, v[0]) for k, v in w.backend._lagging.items())),
            tuple((i.created_at, i.status) for i in w.backend.instances.values()),
            tuple(sorted(w.store.fences.items())),
            tuple(sorted(w.store.requests.items())),
            tuple(sorted(w.store.starts.items())),
            tuple(w.backend.terminated),
            tuple((s.cancelled, s.reads) for s in self.starters),
            self.completed,
            self.last,
            self.faults,
            self.preemptions,
        )


def _short(value: Any) -> str:
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if hasattr(value, "fencing_token"):
        return f"grant{value.fencing_token}"
    if hasattr(value, "created_at"):
        return f"state{value.created_at}/{value.runtime_status}"
    return type(value).__name__


# -- exploring -----------------------------------------------------------------------------


@dataclass
class Report:
    config: str
    mutant: str | None
    schedules: int = 0
    states: int = 0
    violation: str | None = None
    schedule: str | None = None
    steps: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.violation is None


MAX_STEPS = 400


def _run_schedule(cfg: Config, mutant: Mutant | None, choices: list[str]) -> _Run:
    run = _Run(cfg, mutant=mutant)
    for choice in choices:
        run.step(choice)
    return run


def explore(
    config: Config | str,
    *,
    mutant: Mutant | str | None = None,
    max_schedules: int = 20_000,
) -> Report:
    """Depth-first search within the configuration's bounds; stops at the first violation."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    mut = MUTANTS[mutant] if isinstance(mutant, str) else mutant
    report = Report(config=cfg.name, mutant=mut.name if mut else None)
    seen: set[Any] = set()
    stack: list[list[str]] = [[]]
    with _quiet(), mut.patch() if mut else contextlib.nullcontext():
        while stack:
            if report.schedules >= max_schedules:
                report.truncated = True
                break
            prefix = stack.pop()
            path = list(prefix)
            try:
                run = _run_schedule(cfg, mut, prefix)
                while not run.finished():
                    options = run.choices()
                    if not options or len(path) > MAX_STEPS:
                        raise Violation(f"no progress possible after {len(path)} steps (a starter is stuck)")
                    pick = run.default(options)
                    for alt in options:
                        if alt == pick:
                            continue
                        p, f = run.cost(alt, options)
                        if run.preemptions + p > cfg.preemptions or run.faults + f > cfg.max_faults:
                            continue
                        stack.append([*path, alt])
                    path.append(pick)
                    run.step(pick)
                    fp = run.fingerprint()
                    if fp in seen:
                        break
                    seen.add(fp)
                else:
                    run.finish()
                report.schedules += 1
            except Violation as exc:
                report.schedules += 1
                report.violation = str(exc)
                report.schedule = " ".join(path)
                break
    report.states = len(seen)
    if report.schedule is not None:
        report.steps = describe(cfg, mut, report.schedule.split())
    return report


def random_walks(
    config: Config | str, *, mutant: Mutant | str | None = None, seed: int = 0, walks: int = 2000
) -> Report:
    """Seeded random schedules (faults up to the configuration's bound), for larger settings."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    mut = MUTANTS[mutant] if isinstance(mutant, str) else mutant
    rng = random.Random(seed)
    report = Report(config=cfg.name, mutant=mut.name if mut else None)
    with _quiet(), mut.patch() if mut else contextlib.nullcontext():
        for _ in range(walks):
            run = _Run(cfg, mutant=mut)
            try:
                while not run.finished():
                    options = [o for o in run.choices() if run.faults + run.cost(o, run.choices())[1] <= cfg.max_faults]
                    if not options or len(run.trace) > MAX_STEPS:
                        raise Violation("no progress possible (a starter is stuck)")
                    run.step(rng.choice(options))
                run.finish()
                report.schedules += 1
            except Violation as exc:
                report.schedules += 1
                report.violation = str(exc)
                report.schedule = " ".join(t.split("@")[0] for t in run.trace)
                break
    if report.schedule is not None:
        report.steps = describe(cfg, mut, report.schedule.split())
    return report


def replay(config: Config | str, schedule: str, *, mutant: Mutant | str | None = None) -> _Run:
    """Run one schedule string again; raises :class:`Violation` where the original failed."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    mut = MUTANTS[mutant] if isinstance(mutant, str) else mutant
    with _quiet(), mut.patch() if mut else contextlib.nullcontext():
        run = _run_schedule(cfg, mut, schedule.split())
        if run.finished():
            run.finish()
    return run


def describe(cfg: Config, mutant: Mutant | None, choices: list[str]) -> list[str]:
    """The schedule step by step: virtual time, the choice, and what each starter did."""
    lines: list[str] = []
    with _quiet(), mutant.patch() if mutant else contextlib.nullcontext():
        run = _Run(cfg, mutant=mutant)
        for choice in choices:
            before = {s.name: s.op for s in run.starters}
            t = run.world.clock() - 1000.0
            try:
                run.step(choice)
            except Violation as exc:
                lines.append(f"t={t:7.3f}  {choice:<4} {_what(choice, before)}")
                lines.append(f"           VIOLATION: {exc}")
                return lines
            lines.append(f"t={t:7.3f}  {choice:<4} {_what(choice, before)}")
        if run.finished():
            try:
                run.finish()
            except Violation as exc:
                lines.append(f"           at the end: VIOLATION: {exc}")
    return lines


_FAULT_WORDS = {
    "s": "slow read: executes now, answer withheld",
    "k": "slow read during which the lock store loses the key",
    "d": "schedule request held in the backend; caller gets DEADLINE_EXCEEDED",
    "x": "schedule executes, its answer is lost (UNAVAILABLE)",
    "u": "schedule never reaches the backend; caller gets UNAVAILABLE",
    "c": "the process dies, its request queued in the backend",
    "g": "paused after the send-by check, request leaves past the lease",
    "r": "the withheld answer arrives",
    "l": "the held request lands in the backend",
    "z": "the caller goes away (cancelled) before this operation ran",
    "y": "this operation runs, then the caller goes away (cancelled)",
    "o": "the lock store is unreachable for this operation",
    "f": "this status read fails",
}


def _what(choice: str, before: dict[str, Any]) -> str:
    if choice == "p":
        return "pause: the clock jumps past the lease TTL"
    if choice == "L":
        return "the lock store forgets every key"
    if choice == "t":
        return "time passes"
    if choice == "e":
        return "the active instance completes"
    if choice in before:
        return f"{choice}: {_op_text(before[choice])}"
    name = choice[1:]
    return f"{name}: {_FAULT_WORDS[choice[0]]} ({_op_text(before.get(name))})"


def _op_text(op: Any) -> str:
    if op is None:
        return "-"
    if isinstance(op, _flow.Schedule):
        return f"Schedule(fencing={op.tags.get(FENCING_TAG)})"
    return type(op).__name__


__all__ = [
    "CONFIGS",
    "MUTANTS",
    "Config",
    "Mutant",
    "Report",
    "Violation",
    "describe",
    "explore",
    "random_walks",
    "replay",
]


# -- the command --------------------------------------------------------------------------


def _config_lines(name: str, walks: int, seed: int, max_schedules: int) -> tuple[bool, str]:
    """One configuration's search and walks: (its claim held, the lines to print)."""
    import io
    import time

    out = io.StringIO()
    cfg = CONFIGS[name]
    began = time.monotonic()
    found = explore(cfg, max_schedules=max_schedules)
    wide = replace(cfg, name=cfg.name, starters=3)
    sampled = random_walks(wide, seed=seed, walks=walks) if found.ok else None
    violation = found if not found.ok else sampled if sampled is not None and not sampled.ok else None
    bounds = (
        f"{cfg.starters} starters, <= {cfg.preemptions} preemptions, <= {cfg.max_faults} faults of "
        f"{{{', '.join(sorted(cfg.faults))}}}, profile {cfg.profile}"
        + (f", visibility lag {cfg.visibility_lag:g}s" if cfg.visibility_lag else "")
        + ("" if cfg.expiring else ", lease without expiry")
    )
    walked = f"; {sampled.schedules} random 3-starter schedules (seed {seed})" if sampled else ""
    elapsed = time.monotonic() - began
    head = f"{'safe' if cfg.safe else 'residual':8} {name:28}"
    detail = f"{found.schedules} schedules, {found.states} distinct states{walked}; {bounds}; {elapsed:.1f}s"
    if found.truncated:
        detail += " (TRUNCATED: raise --max-schedules)"
    held = True
    if cfg.safe and violation is None and not found.truncated:
        print(f"{head} ok: 0 violations. {detail}", file=out)
    elif cfg.safe:
        held = False
        print(f"{head} VIOLATION: {violation.violation if violation else 'search truncated'}. {detail}", file=out)
        if violation is not None:
            _print_counterexample(out, cfg.name, None, violation)
    elif violation is not None:
        print(f"{head} counterexample found, as documented: {violation.violation}. {detail}", file=out)
        _print_counterexample(out, cfg.name, None, violation)
    else:
        held = False
        print(f"{head} NOT FOUND: the documented window was not reproduced. {detail}", file=out)
    return held, out.getvalue()


def _mutant_lines(name: str, max_schedules: int) -> tuple[bool, str]:
    """One mutant's search: (it was killed, the lines to print)."""
    mut = MUTANTS[name]
    found = explore(mut.config, mutant=mut, max_schedules=max_schedules)
    if found.ok:
        return False, f"mutant   {name:28} SURVIVED in {mut.config} ({found.schedules} schedules)\n"
    return True, (
        f"mutant   {name:28} killed in {mut.config} after {found.schedules} schedules: {found.violation}\n"
        f"         by: {found.schedule}\n"
    )


def _job(task: tuple[str, str, int, int, int]) -> tuple[bool, str]:
    kind, name, walks, seed, max_schedules = task
    with _quiet():
        if kind == "config":
            return _config_lines(name, walks, seed, max_schedules)
        return _mutant_lines(name, max_schedules)


def run_all(
    out: Any,
    *,
    configs: list[str] | None = None,
    mutants: list[str] | None = None,
    walks: int = 300,
    seed: int = 0,
    max_schedules: int = 100_000,
    jobs: int | None = None,
) -> int:
    """What ``strict-singleton explore`` does. Returns the exit status (0: every claim held).

    For every configuration: an exhaustive search within its bounds (2 starters), then
    ``walks`` seeded random schedules with 3 starters. Safe configurations must show no
    violation; residual ones must show their documented counterexample; every mutant must
    be caught in the configuration named for it. ``jobs`` searches run side by side in
    forked processes (default: one per CPU, at most 4); each search is deterministic, and
    the report is printed in the same order either way.
    """
    import os

    tasks = [("config", name, walks, seed, max_schedules) for name in (configs or list(CONFIGS))]
    tasks += [("mutant", name, walks, seed, max_schedules) for name in (mutants if mutants is not None else MUTANTS)]
    workers = min(4, os.cpu_count() or 1) if jobs is None else max(1, jobs)
    if workers > 1 and len(tasks) > 1 and _can_fork():
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            # Longest searches first, so the pool finishes together; printed in task order.
            order = sorted(range(len(tasks)), key=lambda i: tasks[i][0] != "config")
            pending = {i: pool.apply_async(_job, (tasks[i],)) for i in order}
            results = [pending[i].get() for i in range(len(tasks))]
    else:
        results = [_job(task) for task in tasks]
    failures = 0
    for held, text in results:
        failures += not held
        out.write(text)
    print("explore: " + ("every claim held" if failures == 0 else f"{failures} claim(s) failed"), file=out)
    return 0 if failures == 0 else 1


def _can_fork() -> bool:
    import multiprocessing
    import threading

    # Forking a process with other threads running can deadlock the child (a lock held by
    # a thread that does not exist there): only fork from a single-threaded process.
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _print_counterexample(out: Any, config: str, mutant: str | None, report: Report) -> None:
    for line in report.steps:
        print(f"         {line}", file=out)
    flag = f" --mutant {mutant}" if mutant else ""
    print(f"         replay: strict-singleton explore --config {config}{flag} --replay '{report.schedule}'", file=out)
