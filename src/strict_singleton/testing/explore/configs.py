"""What the explorer runs: the named configurations, and the type of a mutant.

A :class:`Config` says how many starters call, with which options, against which simulated
world, and which faults a schedule may inject within which bounds. A *safe* configuration
claims 0 violations; a *residual* one claims a documented window (docs/guarantees.md) that
the explorer must reproduce. A :class:`Mutant` is a deliberately broken flow that must be
caught; mutants are not defined here but loaded from a file (:func:`load_mutants`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from strict_singleton._validation import StarterConfig, build_config
from strict_singleton.options import StarterOptions
from strict_singleton.testing.world import Profile


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
    completions: int = 0  # times the active instance may complete during a run (choice ``e``)
    whole_seconds: bool = False  # creation times of one-second resolution (Durable Functions)
    seed_signals: tuple[str, ...] = ()  # signal entries the store's request record holds before the calls
    safe: bool = True
    claim: str = ""

    def starter_config(self) -> StarterConfig:
        return replace(self._built(), start_records=self.records, request_records=True)

    def request_id(self, index: int) -> str | None:
        return self.request_ids[index] if index < len(self.request_ids) else None

    def _built(self) -> StarterConfig:
        options = StarterOptions(
            background_finish=False,
            fetch_payloads=False,
            ambiguity_timeout=self.ambiguity_timeout,
            visibility_timeout=self.visibility_timeout,
        )
        wait = self.lease_ttl * 2 + self.ambiguity_timeout + self.visibility_timeout  # outwaits any hold
        return build_config(options, lease_ttl=self.lease_ttl, wait=wait, backend="sim")


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
            "while it waits; an ambiguous start is recorded before its watch",
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


@dataclass(frozen=True)
class Mutant:
    """A deliberately broken flow, and the safe configuration that must catch it.

    ``patch`` makes the context manager that breaks the flow while a search runs (typically it
    swaps one private function of ``strict_singleton._flow``). ``world`` turns on a broken
    behaviour of the simulated world instead (``no_lease``, ``ignore_send_by``,
    ``replace_active``, ``queued_finish``, ``lenient_renew``), and ``starter`` overrides fields
    of the starters' configuration. The package defines none: they live with the tests and
    are loaded with :func:`load_mutants`.
    """

    name: str
    description: str
    config: str  # the safe configuration that must catch it
    patch: Callable[[], contextlib.AbstractContextManager[Any]]
    world: dict[str, Any] = field(default_factory=dict)
    starter: dict[str, Any] = field(default_factory=dict)


def load_mutants(path: str | Path) -> dict[str, Mutant]:
    """The registry ``MUTANTS`` (a ``dict[str, Mutant]``) of the Python file at ``path``.

    Raises ``OSError`` if the file cannot be read and ``ValueError`` if it defines no such
    registry or a mutant names an unknown configuration; an error raised by the file itself
    propagates.
    """
    path = Path(path)
    name = f"_strict_singleton_mutants_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the file's dataclasses and pickles look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    registry = getattr(module, "MUTANTS", None)
    if not isinstance(registry, dict) or not all(isinstance(m, Mutant) and m.name == k for k, m in registry.items()):
        raise ValueError(f"{path}: defines no MUTANTS (a dict from each Mutant's name to it)")
    unknown = sorted(m.name for m in registry.values() if m.config not in CONFIGS)
    if unknown:
        raise ValueError(f"{path}: mutant {unknown[0]!r} names an unknown configuration")
    return dict(registry)


__all__ = [
    "CONFIGS",
    "Config",
    "Mutant",
    "SAFE_FAULTS",
    "load_mutants",
]
