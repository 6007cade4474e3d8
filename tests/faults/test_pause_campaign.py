"""Pause campaign: a real starter process frozen with SIGSTOP at random points
around its status read and its schedule, over >= 100 trials, with the violations counted.

Setup: the ``overwrite`` Durable profile (a start on an existing ID replaces it whatever
its status, so the lease is the only protection), a private redis-server for the
``RedisLease``, and one long-lived child process (``pause_starter.py``, its own process
group) running ``SingletonStarter(..., lease_ttl=0.3, background_finish=False)``.

One trial, on a new instance ID:

1. The parent sends ``START <iid>``; the child starts it with input "A".
2. Paused trials: the backend's ``read_hook`` (or ``start_hook``: alternating) fires on
   the child's first status read (schedule) of that ID and starts a ``threading.Timer``
   with a random offset of 0-5 ms that sends SIGSTOP to the child. The stop thus lands
   before, during or after the read / schedule, or even after the child's answer.
   Control trials (every fifth) have no pause.
3. Once the child is frozen, the parent polls the child's lock key
   ``strict-singleton:{<iid>}:lock`` (``PTTL``) until it is gone: a frozen child cannot
   renew it, so it expires within ``lease_ttl`` at the latest.
4. A competing starter B in the parent (same Redis, same backend, input "B") runs to its
   answer.
5. SIGCONT; the child's answer is collected (bounded wait).

Violation: two STARTED answers, an active instance overwritten, or a STARTED answer with
no instance created. A violation is the documented *residual window* (docs/guarantees.md:
a pause between reading the clock for the send-by check and gRPC fixing the call's
deadline, about 0.1 ms of Python on this machine) when the stop came from the read hook and
the child's schedule reached the backend only after SIGCONT: with the send-by check in
place, a child stopped anywhere before that check refuses to send after it resumes, so a
request that still arrives was past the check when the stop landed. The test asserts 0
violations outside that window, reports the residual count, prints a one-line summary and, when
``STRICT_SINGLETON_CAMPAIGN_REPORT`` is set, writes the summary there as JSON.
``STRICT_SINGLETON_CAMPAIGN_SEED`` / ``STRICT_SINGLETON_CAMPAIGN_TRIALS`` (>= 100) replay
or lengthen a run.

"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from durabletask.client import TaskHubGrpcClient

import strict_singleton
from strict_singleton import SingletonStarter, StartOutcome, StrictSingletonError
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer

SCRIPT = str(Path(__file__).with_name("pause_starter.py"))
LEASE_TTL = 0.3
MIN_TRIALS = 100
TRIALS = max(MIN_TRIALS, int(os.environ.get("STRICT_SINGLETON_CAMPAIGN_TRIALS", "160")))
CONTROL_EVERY = 5  # every fifth trial runs without a pause
MAX_OFFSET = 0.005  # the SIGSTOP lands 0-5 ms after the hook fired
ANSWER_TIMEOUT = 30.0  # bound on waiting for any answer (a hang fails the test, it does not stall it)


def poll_until(condition: Callable[[], bool], timeout: float, what: str, interval: Callable[[], float]) -> None:
    """Bounded polling on a condition; ``interval()`` gives the pause before the next check."""
    pause = threading.Event()  # never set: its wait() is the poll interval
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(interval())


# -- the child process -------------------------------------------------------------------


# A watcher for the child, in a session of its own: it blocks reading a pipe whose only
# write end is held by this (pytest) process, and SIGKILLs the child's process group when
# that pipe closes, i.e. when this process ends in a way no ``finally`` runs (kill -9,
# SIGTERM). A SIGSTOPped child would otherwise stay stopped forever: it cannot see EOF.
_WATCHER = """
import os, signal, sys
try:
    while os.read(0, 4096):
        pass
except OSError:
    pass
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except OSError:
    pass
"""


class Child:
    """pause_starter.py in its own process group; its stdout lines arrive on a queue.

    :meth:`reap` kills it (call it in a ``finally``); a watcher process kills it too if
    this process dies without running that ``finally``.
    """

    def __init__(self, redis_port: int, address: str, stderr_path: Path) -> None:
        env = dict(os.environ)
        # The child imports the very library this test imported (also for older trees on PYTHONPATH).
        library = str(Path(strict_singleton.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (library, env.get("PYTHONPATH")) if p)
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", SCRIPT, str(redis_port), address, str(LEASE_TTL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            start_new_session=True,  # its own session and process group (pgid == pid)
        )
        self.pid = self.proc.pid
        self.watcher: subprocess.Popen[bytes] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        try:
            read_end, self._lifeline = os.pipe()  # not inheritable: no other child gets the write end
            try:
                self.watcher = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHER, str(self.pid)],
                    stdin=read_end,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            finally:
                os.close(read_end)
            threading.Thread(target=self._pump, name="pause-starter-stdout", daemon=True).start()
            first = self.next_message(timeout=60)
            assert int(first["pid"]) == self.pid, first
        except BaseException:
            self.reap()
            raise

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def has_message(self) -> bool:
        return not self.lines.empty()

    def next_message(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed nothing for {timeout} s; stderr:\n{self.stderr()}") from None
        if line is None:
            raise AssertionError(f"the child exited (rc={self.proc.poll()}); stderr:\n{self.stderr()}")
        message: dict[str, Any] = json.loads(line)
        return message

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()[-4000:]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def reap(self) -> None:
        """Kill the whole process group (SIGKILL works on a stopped process too) and wait.

        The watcher goes first, while the child's group still exists: once the child is
        reaped its pgid may be reused, and a watcher must never signal someone else's group.
        """
        if self.watcher is not None:
            self.watcher.kill()
            self.watcher.wait(30)
        if hasattr(self, "_lifeline"):
            os.close(self._lifeline)
            del self._lifeline
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                assert stream is not None
                stream.close()
        self._stderr.close()


# -- the pause injector (runs in the backend's server threads) ----------------------------


@dataclass
class Trial:
    number: int
    iid: str
    hook: str | None  # "read", "start" or None (control)
    offset: float
    fired: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    stopped_at: float | None = None
    stop_error: str | None = None
    start_times: list[float] = field(default_factory=list)  # when each schedule of this ID reached the backend
    resumed_at: float | None = None  # when SIGCONT was sent (after B answered)
    a: str = ""
    a_maybe_scheduled: bool | None = None
    b: str = ""
    created: int = 0
    overwritten_active: int = 0

    @property
    def paused(self) -> bool:
        return self.stopped_at is not None

    @property
    def landed(self) -> str:
        """Where the stop landed relative to the first schedule request reaching the backend."""
        if self.stopped_at is None:
            return "not paused"
        if self.start_times and self.start_times[0] <= self.stopped_at:
            return "after a schedule arrived"
        return "before any schedule arrived"

    @property
    def sent_after_resume(self) -> bool:
        """The frozen child's schedule reached the backend only after SIGCONT (B had answered by then)."""
        return self.resumed_at is not None and any(t > self.resumed_at for t in self.start_times)

    def starteds(self) -> int:
        return [self.a, self.b].count(StartOutcome.STARTED.value)

    @property
    def residual(self) -> bool:
        """A violation inside the documented window between the send-by check and the RPC."""
        return bool(self.violations()) and self.hook == "read" and self.sent_after_resume

    def violations(self) -> list[str]:
        found = []
        if self.starteds() >= 2:
            found.append("two STARTED")
        if self.overwritten_active > 0:
            found.append(f"{self.overwritten_active} active instance(s) overwritten")
        if self.starteds() >= 1 and self.created == 0:
            found.append("STARTED with no instance created")
        return found


class PauseInjector:
    """Installed as both hooks of the backend; arms one stop per paused trial."""

    def __init__(self, backend: DurableTestBackend, child: Child) -> None:
        self._lock = threading.Lock()
        self._child = child
        self._trial: Trial | None = None
        self._armed = False
        backend.read_hook = lambda iid: self._on("read", iid)
        backend.start_hook = lambda iid: self._on("start", iid)

    def begin(self, trial: Trial) -> None:
        with self._lock:
            self._trial = trial
            self._armed = trial.hook is not None

    def disarm(self) -> None:
        with self._lock:
            self._armed = False

    def _on(self, kind: str, iid: str) -> None:
        now = time.monotonic()
        with self._lock:
            trial = self._trial
            if trial is None or iid != trial.iid:
                return
            if kind == "start":
                trial.start_times.append(now)
            if not self._armed or kind != trial.hook or trial.fired:
                return
            trial.fired = True
        timer = threading.Timer(trial.offset, self._stop, args=(trial,))
        timer.daemon = True
        timer.start()

    def _stop(self, trial: Trial) -> None:
        try:
            self._child.signal(signal.SIGSTOP)
        except OSError as exc:  # reported in the trial; the child's answer will say what happened
            trial.stop_error = repr(exc)
        finally:
            trial.stopped_at = time.monotonic()
            trial.stopped.set()


# -- the campaign -------------------------------------------------------------------------


def _answer_of(message: dict[str, Any]) -> str:
    return str(message.get("outcome") or message.get("error") or message)


def _wait_for_stop_or_answer(trial: Trial, child: Child) -> None:
    """Until the armed stop has landed, or the child answered without the hook ever firing."""
    poll_until(
        lambda: trial.stopped.is_set() or (not trial.fired and child.has_message()),
        ANSWER_TIMEOUT,
        f"trial {trial.number}: the {trial.hook} hook's SIGSTOP or the child's answer",
        interval=lambda: 0.001,
    )


def _wait_for_lock_gone(r: redis.Redis, key: str, trial: Trial) -> None:
    """Poll PTTL until the frozen child's lock key is gone (it cannot renew it while frozen)."""
    last = {"pttl": -2}

    def gone() -> bool:
        pttl = int(r.pttl(key))
        last["pttl"] = pttl
        if pttl == -1:
            raise AssertionError(f"trial {trial.number}: {key} has no expiry")
        return pttl == -2

    poll_until(
        gone,
        LEASE_TTL * 10 + ANSWER_TIMEOUT,
        f"trial {trial.number}: {key} to expire",
        # about the time left on the key, so a busy machine is not kept busier by the poll
        interval=lambda: min(max(last["pttl"], 1), 50) / 1000.0,
    )


def _run_b(starter: SingletonStarter, trial: Trial) -> None:
    try:
        trial.b = starter.start("orch", instance_id=trial.iid, input="B").outcome.value
    except StrictSingletonError as exc:
        trial.b = type(exc).__name__


def _run_trial(
    trial: Trial, child: Child, injector: PauseInjector, r: redis.Redis, b_starter: SingletonStarter
) -> None:
    key = f"strict-singleton:{{{trial.iid}}}:lock"
    injector.begin(trial)
    child.send(f"START {trial.iid}")
    if trial.hook is not None:
        _wait_for_stop_or_answer(trial, child)
    if trial.paused:
        try:
            _wait_for_lock_gone(r, key, trial)
            injector.disarm()  # B's reads and schedule are not paused
            _run_b(starter=b_starter, trial=trial)
        finally:
            trial.resumed_at = time.monotonic()
            child.signal(signal.SIGCONT)
        message = child.next_message(ANSWER_TIMEOUT)
    else:
        injector.disarm()
        message = child.next_message(ANSWER_TIMEOUT)
        _run_b(starter=b_starter, trial=trial)
    assert message.get("iid") == trial.iid, f"trial {trial.number}: answer for another ID: {message}"
    assert not message.get("unexpected"), f"trial {trial.number}: the child failed unexpectedly: {message}"
    trial.a = _answer_of(message)
    trial.a_maybe_scheduled = message.get("maybe_scheduled")


def _summary(trials: list[Trial], seed: int, wall: float) -> dict[str, Any]:
    paused = [t for t in trials if t.paused]
    violating = [t for t in trials if t.violations()]

    def histogram(values: list[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    def a_label(t: Trial) -> str:
        return t.a if t.a_maybe_scheduled is None else f"{t.a}(maybe_scheduled={t.a_maybe_scheduled})"

    return {
        "trials": len(trials),
        "paused": len(paused),
        "paused_on": histogram([str(t.hook) for t in paused]),
        "control": sum(1 for t in trials if t.hook is None),
        "armed_but_not_paused": sum(1 for t in trials if t.hook is not None and not t.paused),
        "landed": histogram([t.landed for t in trials]),
        "schedule_sent_after_resume": sum(1 for t in trials if t.sent_after_resume),
        "a_outcomes": histogram([a_label(t) for t in trials]),
        "a_outcomes_paused": histogram([a_label(t) for t in paused]),
        "b_outcomes": histogram([t.b for t in trials]),
        "violations": len(violating),
        "residual_window_violations": sum(1 for t in violating if t.residual),
        "violations_outside_residual_window": sum(1 for t in violating if not t.residual),
        "violating_trials": [
            {
                "trial": t.number,
                "hook": t.hook,
                "offset_ms": round(t.offset * 1000, 3),
                "a": t.a,
                "b": t.b,
                "created": t.created,
                "overwritten_active": t.overwritten_active,
                "why": t.violations(),
                "schedule_sent_after_resume": t.sent_after_resume,
                "residual_window": t.residual,
            }
            for t in violating
        ],
        "seed": seed,
        "lease_ttl": LEASE_TTL,
        "max_offset_ms": MAX_OFFSET * 1000,
        "library": str(Path(strict_singleton.__file__).resolve().parent),
        "wall_seconds": round(wall, 1),
    }


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(600)
@pytest.mark.parametrize("overwrite_or_atomic", ["overwrite"], indirect=True)
def test_pause_campaign_overwrite_redis(
    overwrite_or_atomic: DurableTestBackend, strict_singleton_private_redis: RedisServer, tmp_path: Path
) -> None:
    """>= 100 trials of a SIGSTOPped starter racing a second one: 0 violations outside the residual window."""
    backend = overwrite_or_atomic
    seed = int(os.environ.get("STRICT_SINGLETON_CAMPAIGN_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    began = time.monotonic()
    trials: list[Trial] = []
    r = redis.Redis(port=strict_singleton_private_redis.port, socket_timeout=10, socket_connect_timeout=10)
    b_client = TaskHubGrpcClient(host_address=backend.address)
    b_starter = SingletonStarter(
        b_client,
        lock=RedisLease(redis.Redis(port=strict_singleton_private_redis.port)),
        lease_ttl=LEASE_TTL,
        options=StarterOptions(background_finish=False),
    )
    child = Child(strict_singleton_private_redis.port, backend.address, tmp_path / "pause_starter.stderr")
    try:
        injector = PauseInjector(backend, child)
        paused_index = 0
        for n in range(TRIALS):
            if n % CONTROL_EVERY == CONTROL_EVERY - 1:
                hook = None
            else:
                hook = "read" if paused_index % 2 == 0 else "start"
                paused_index += 1
            trial = Trial(number=n, iid=f"pause-{seed}-{n}", hook=hook, offset=rng.uniform(0.0, MAX_OFFSET))
            trials.append(trial)
            _run_trial(trial, child, injector, r, b_starter)
        child.send("QUIT")
        child.proc.wait(ANSWER_TIMEOUT)
    finally:
        child.reap()
        backend.read_hook = None
        backend.start_hook = None
        b_starter.close()
        b_client.close()
        r.close()

    # The ledger is read once at the end, when every request of every trial has landed.
    snap = backend.ledger.snapshot()
    for t in trials:
        t.created = snap.created[t.iid]
        t.overwritten_active = snap.overwritten_active[t.iid]
    summary = _summary(trials, seed, time.monotonic() - began)
    print(
        f"\npause campaign: trials={summary['trials']} paused={summary['paused']} {summary['paused_on']}"
        f" control={summary['control']} A={summary['a_outcomes']} B={summary['b_outcomes']}"
        f" landed={summary['landed']} schedule_sent_after_resume={summary['schedule_sent_after_resume']}"
        f" violations={summary['violations']} (residual window: {summary['residual_window_violations']},"
        f" outside it: {summary['violations_outside_residual_window']})"
        f" (seed={seed}, lease_ttl={LEASE_TTL}, {summary['wall_seconds']} s)"
    )
    report = os.environ.get("STRICT_SINGLETON_CAMPAIGN_REPORT")
    if report:
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")

    assert summary["trials"] >= MIN_TRIALS
    assert summary["paused"] >= len(trials) // 2, f"too few trials were paused: {summary}"
    assert summary["violations_outside_residual_window"] == 0, json.dumps(summary["violating_trials"], indent=1)
