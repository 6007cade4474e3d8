"""One schedule of the explorer, step by step: the starters, the faults, the invariants.

N starters each run the real ``start_flow`` / ``finish_flow`` generators of
``strict_singleton._flow`` (the very code both starters drive) with the real starter
configuration, fencing tags and reuse policy, against the in-memory world of
:mod:`strict_singleton.testing.world` (virtual clock, lock store with TTLs, Durable
backend with a ledger). :class:`_Run` owns every source of nondeterminism and offers, at
each step, the choices below (:meth:`_Run.choices`); :meth:`_Run.step` takes one.

* ``A``, ``B``, ... : that starter executes its pending operation (a lock or backend
  call, a sleep, a wait); the answer reaches it at once.
* ``sA`` (slow read): A's status read executes now, its answer is withheld; ``rA``
  delivers it later. Any steps may run in between.
* ``kA`` (slow read, key lost): as ``sA``, and while the answer is withheld the lock
  store loses A's key and more than ``confirm_after`` passes.
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
* ``e`` (the active instance completes), where the configuration allows it.
* ``t`` (time passes to the next event), when no starter can act now.

Invariants, checked after every step (:meth:`_Run.check`): at most one STARTED (per
request); a STARTED only by a starter whose own schedule created an instance (its fencing
tag); no active instance overwritten; each request ID creates at most one instance; no
call's event raised twice; only an instance some ``TERMINATE_EXISTING`` call found running
when it began is ever terminated, and such a call never answers ALREADY_RUNNING while that
instance still runs. At the end (:meth:`_Run.finish`): every starter ended with an answer
or an error of the library's error tree (a cancelled one ends when its clean-up does), and,
after the documented windows, nobody holds the lease (the ID is startable). A failure
raises :class:`Violation`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from strict_singleton import _flow
from strict_singleton._validation import StartCall
from strict_singleton.errors import LockUnavailableError, StrictSingletonError
from strict_singleton.lock_backends.base import Grant, RequestRecord
from strict_singleton.policies import ConflictPolicy
from strict_singleton.result import StartOutcome
from strict_singleton.testing.explore.configs import Config, Mutant
from strict_singleton.testing.world import RpcError, World

IID = "singleton"
NAMES = "ABCDEFGH"


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


class Violation(AssertionError):
    """An invariant failed (or a starter got stuck): the schedule is a counterexample."""


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
            if _flow.targets(s.op, "lock") and "outage" in faults:
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


__all__ = [
    "Violation",
]
