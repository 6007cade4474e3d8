"""The searches: every schedule within a configuration's bounds, seeded random walks, a replay,
and ``run_all`` (what ``strict-singleton explore`` runs, optionally in forked processes).

The depth-first search uses *preemption bounding* (CHESS: a schedule may switch away from a
runnable starter at most ``preemptions`` times), a bound on faults, and *state hashing*: a
state (the world, every starter's history of answers, the clock, the budgets left) reached a
second time is not explored again, which merges interleavings that commute. Generators cannot
be copied, so every path is replayed from the start (stateless model checking). Every run is a
*schedule string* (``"A A dB B lB ..."``) that :func:`replay` runs again step by step.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from strict_singleton.testing.explore.configs import CONFIGS, Config, Mutant
from strict_singleton.testing.explore.engine import Violation, _quiet, _Run
from strict_singleton.testing.explore.report import Report, _print_counterexample, describe

MAX_STEPS = 400


def _run_schedule(cfg: Config, mutant: Mutant | None, choices: list[str]) -> _Run:
    run = _Run(cfg, mutant=mutant)
    for choice in choices:
        run.step(choice)
    return run


def explore(
    config: Config | str,
    *,
    mutant: Mutant | None = None,
    max_schedules: int = 20_000,
) -> Report:
    """Depth-first search within the configuration's bounds; stops at the first violation."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    report = Report(config=cfg.name, mutant=mutant.name if mutant else None)
    seen: set[Any] = set()
    stack: list[list[str]] = [[]]
    with _quiet(), mutant.patch() if mutant else contextlib.nullcontext():
        while stack:
            if report.schedules >= max_schedules:
                report.truncated = True
                break
            prefix = stack.pop()
            path = list(prefix)
            try:
                run = _run_schedule(cfg, mutant, prefix)
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
        report.steps = describe(cfg, mutant, report.schedule.split())
    return report


def random_walks(config: Config | str, *, mutant: Mutant | None = None, seed: int = 0, walks: int = 2000) -> Report:
    """Seeded random schedules (faults up to the configuration's bound), for larger settings."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    rng = random.Random(seed)
    report = Report(config=cfg.name, mutant=mutant.name if mutant else None)
    with _quiet(), mutant.patch() if mutant else contextlib.nullcontext():
        for _ in range(walks):
            run = _Run(cfg, mutant=mutant)
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
        report.steps = describe(cfg, mutant, report.schedule.split())
    return report


def replay(config: Config | str, schedule: str, *, mutant: Mutant | None = None) -> _Run:
    """Run one schedule string again; raises :class:`Violation` where the original failed."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    with _quiet(), mutant.patch() if mutant else contextlib.nullcontext():
        run = _run_schedule(cfg, mutant, schedule.split())
        if run.finished():
            run.finish()
    return run


# -- everything, as the command runs it ------------------------------------------------


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
            _print_counterexample(out, cfg.name, violation)
    elif violation is not None:
        print(f"{head} counterexample found, as documented: {violation.violation}. {detail}", file=out)
        _print_counterexample(out, cfg.name, violation)
    else:
        held = False
        print(f"{head} NOT FOUND: the documented window was not reproduced. {detail}", file=out)
    return held, out.getvalue()


def _mutant_lines(mutant: Mutant, max_schedules: int) -> tuple[bool, str]:
    """One mutant's search: (it was killed, the lines to print)."""
    found = explore(mutant.config, mutant=mutant, max_schedules=max_schedules)
    name = mutant.name
    if found.ok:
        return False, f"mutant   {name:28} SURVIVED in {mutant.config} ({found.schedules} schedules)\n"
    return True, (
        f"mutant   {name:28} killed in {mutant.config} after {found.schedules} schedules: {found.violation}\n"
        f"         by: {found.schedule}\n"
    )


# A search: a configuration's name or a mutant, then walks, seed and max_schedules.
_Task = tuple[str | Mutant, int, int, int]


def _job(task: _Task) -> tuple[bool, str]:
    what, walks, seed, max_schedules = task
    with _quiet():
        if isinstance(what, str):
            return _config_lines(what, walks, seed, max_schedules)
        return _mutant_lines(what, max_schedules)


# A forked worker's copy of the tasks. They reach it by the fork, not by pickling: a mutant's
# patch may be any callable, a closure or a function of a file loaded by path.
_worker_tasks: list[_Task] = []


def _adopt(tasks: list[_Task]) -> None:
    _worker_tasks[:] = tasks


def _job_at(index: int) -> tuple[bool, str]:
    return _job(_worker_tasks[index])


def run_all(
    out: Any,
    *,
    configs: list[str] | None = None,
    mutants: Sequence[Mutant] = (),
    walks: int = 300,
    seed: int = 0,
    max_schedules: int = 100_000,
    jobs: int | None = None,
) -> int:
    """What ``strict-singleton explore`` does. Returns the exit status (0: every claim held).

    For every configuration: an exhaustive search within its bounds (2 starters), then
    ``walks`` seeded random schedules with 3 starters. Safe configurations must show no
    violation; residual ones must show their documented counterexample; every mutant given
    must be caught in the configuration named for it. ``jobs`` searches run side by side in
    forked processes (default: one per CPU, at most 4); each search is deterministic, and
    the report is printed in the same order either way.
    """
    import os

    tasks: list[_Task] = [(name, walks, seed, max_schedules) for name in (configs or list(CONFIGS))]
    tasks += [(mutant, walks, seed, max_schedules) for mutant in mutants]
    workers = min(4, os.cpu_count() or 1) if jobs is None else max(1, jobs)
    if workers > 1 and len(tasks) > 1 and _can_fork():
        import multiprocessing

        # Under fork, a worker's start arguments are inherited, never pickled.
        with multiprocessing.get_context("fork").Pool(workers, initializer=_adopt, initargs=(tasks,)) as pool:
            # Longest searches first, so the pool finishes together; printed in task order.
            order = sorted(range(len(tasks)), key=lambda i: not isinstance(tasks[i][0], str))
            pending = {i: pool.apply_async(_job_at, (i,)) for i in order}
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


__all__ = [
    "explore",
    "random_walks",
    "replay",
    "run_all",
]
