"""Benchmarks: strict starts side by side with the docs' pattern and a do-it-yourself redis-py lock.

Run: ``python -m benchmarks`` (about 10 minutes on 2 cores) or ``python -m benchmarks --quick``
(a smoke run of every suite, tiny sizes). Writes ``benchmarks/results/latest.json``,
``latest.md`` and PNG plots (``--quick``: ``quick.json`` and ``quick.md``), and prints the tables.

Everything runs on real components through the race harness: the in-memory Durable
backend over gRPC in this process, starters in spawned processes, a real redis-server,
the Azurite emulator, real file locks. Uncontended latency, distinct-ID throughput and
the contention waves are measured in two regimes in the same run: (a) the backend as
it is (zero latency, so CPU-bound: client, backend and lock store share two cores) and
(b) with 1 ms injected into every backend gRPC call, as a remote backend's round trip.

Every race also counts, per start, the backend's gRPC calls (on the server, per method)
and the lock store's round trips (through a counting proxy around the strict starter's
lease backend: ``benchmarks/counting.py``), split into the caller's path (before
``start()`` returned) and the background.

Figures are medians over repetitions with their spread (min-max), and every ratio is
measured within one run, side by side, because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import telemetry
from benchmarks.counting import LockCounter
from strict_singleton._harness.race import RaceConfig, RaceReport, RoundRecord, percentile, run_race
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.testing import RedisServer
from strict_singleton.testing.azurite import Azurite

RESULTS = Path(__file__).parent / "results"
SUITES = ("floors", "uncontended", "throughput", "contention", "sweep", "memory", "telemetry")

# Seconds injected into every backend gRPC call, per regime.
REGIMES: dict[str, float] = {"a": 0.0, "b": 0.001}
REGIME_TEXT = {
    "a": "(a) in-process backend, no injected latency: CPU-bound (client, backend and lock store share 2 cores)",
    "b": "(b) 1 ms injected into every backend gRPC call (a sleep in the server's thread, no CPU)",
}
DIY = "redis-lock (DIY)"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3g}-{max(xs):.3g}" if xs else "-"


def rounds_of(report: RaceReport, strategy: str) -> list[RoundRecord]:
    return [r for r in report.rounds if r.strategy == strategy]


def latencies(report: RaceReport, strategy: str) -> list[float]:
    return [x for r in rounds_of(report, strategy) for x in r.latencies_ms]


def p(values: list[float], q: float) -> float:
    return percentile(values, q)


def label(strategy: str, lock_name: str) -> str:
    return {"naive": "naive", "redis-lock": DIY}.get(strategy, f"strict({lock_name})")


def strategies_for(lock_name: str) -> tuple[str, ...]:
    return ("naive", "redis-lock", "strict") if lock_name == "redis" else ("naive", "strict")


# -- counts ------------------------------------------------------------------------------


def new_counts() -> dict[str, Any]:
    """Raw totals: starts, backend calls per method, lock calls and seconds per "op/path"."""
    return {"starts": 0, "backend": {}, "lock": {}, "lock_s": {}}


def bump(into: dict[str, float], more: Mapping[str, float]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def add_counts(into: dict[str, Any], report: RaceReport, strategy: str) -> None:
    reports = report.instruments.get(strategy, [])
    into["starts"] += sum(r["starts"] for r in reports)
    bump(into["backend"], report.backend_calls.get(strategy, {}))
    for r in reports:
        bump(into["lock"], r["calls"])
        bump(into["lock_s"], r["seconds"])


WAIT = "wait/caller"


def per_start(c: Mapping[str, Any]) -> dict[str, Any]:
    n = max(1, c["starts"])
    lock = {k: v / n for k, v in sorted(c["lock"].items())}
    return {
        "starts": c["starts"],
        "backend": {k: v / n for k, v in sorted(c["backend"].items())},
        "backend_total": sum(c["backend"].values()) / n,
        "lock": lock,
        "lock_caller": sum(v for k, v in lock.items() if k.endswith("/caller")),
        "lock_background": sum(v for k, v in lock.items() if k.endswith("/background")),
        # time in store calls on the caller's path, apart from waiting for another holder's release
        "lock_ms_caller": 1000 * sum(v for k, v in c["lock_s"].items() if k.endswith("/caller") and k != WAIT) / n,
        "wait_ms_caller": 1000 * c["lock_s"].get(WAIT, 0.0) / n,
    }


def mean_ms(c: Mapping[str, Any], which: Callable[[str], bool]) -> float:
    """Mean duration (ms) of the lock calls whose op ``which`` accepts (on either path)."""
    keys = [k for k in c["lock"] if which(k.split("/")[0])]
    calls = sum(c["lock"][k] for k in keys)
    return 1000 * sum(c["lock_s"].get(k, 0.0) for k in keys) / calls if calls else float("nan")


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.reps = 1 if quick else 3
        self.tmp = Path(tempfile.mkdtemp(prefix="ss-bench-"))
        self._seq = itertools.count()
        self.redis = RedisServer().start()
        self.redlock = [RedisServer().start() for _ in range(3)]
        self.azurite = Azurite().start()
        self.locks = {
            "file": f"file:{self.tmp / 'locks'}",
            "redis": self.redis.url,
            "redlock": "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in self.redlock) + "/0",
            "blob": f"{self.azurite.url}/bench",
        }

    def close(self) -> None:
        self.redis.stop()
        for node in self.redlock:
            node.stop()
        self.azurite.stop()

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def race(self, **kwargs: Any) -> RaceReport:
        """One race with the counters, under instance IDs no other race of this run uses.

        The lock stores are shared by every race, and a store keeps what a start leaves
        with it for a while (a start record); a new race's backend never saw those starts.
        """
        kwargs.setdefault("instrument", LockCounter)
        return run_race(RaceConfig(id_prefix=f"b{next(self._seq)}", **kwargs))

    # -- floors --------------------------------------------------------------

    def floors(self) -> dict[str, float]:
        import redis

        r = redis.Redis(port=self.redis.port)
        out: dict[str, float] = {}
        n = self.n(500, 50)
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            r.ping()
            xs.append((time.perf_counter() - t) * 1000)
        out["redis PING"] = med(xs)
        r.close()
        for name, url in self.locks.items():
            lock = lock_from_url(url, prefix="floor:" if name in ("redis", "redlock") else None)
            ttl = 15.0
            xs = []
            for i in range(n if name != "blob" else max(20, n // 5)):  # Blob: ~12 ms a cycle
                token = str(uuid.uuid4())
                t = time.perf_counter()
                lock.acquire(f"floor-{i}", token, ttl)
                lock.release(f"floor-{i}", token)
                xs.append((time.perf_counter() - t) * 1000)
            out[f"{name} lease acquire+release"] = med(xs)
            lock.close()
        return out

    # -- suite 1: uncontended latency -------------------------------------------

    def uncontended(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rounds = self.n(200, 20)
        for regime, latency in REGIMES.items():
            rows: dict[str, dict[str, list[float]]] = {}
            counts: dict[str, dict[str, Any]] = {}
            for _rep in range(self.reps):
                for lock_name, url in self.locks.items():
                    strategies = strategies_for(lock_name)
                    cfg = {"profile": "atomic", "processes": 1, "starters": 1, "rounds": rounds, "latency": latency}
                    rep = self.race(lock_url=url, strategies=strategies, **cfg)
                    naive = p(latencies(rep, "naive"), 50)
                    for s in strategies:
                        name = label(s, lock_name)
                        xs = latencies(rep, s)
                        row = rows.setdefault(name, {"naive_p50": [], "p50": [], "p99": [], "ratio": []})
                        row["naive_p50"].append(naive)
                        row["p50"].append(p(xs, 50))
                        row["p99"].append(p(xs, 99))
                        row["ratio"].append(p(xs, 50) / naive)
                        add_counts(counts.setdefault(name, new_counts()), rep, s)
                    if lock_name == "redis":  # strict(redis) against the DIY lock, same race
                        rows["strict(redis)"].setdefault("to_diy", []).append(
                            p(latencies(rep, "strict"), 50) / p(latencies(rep, "redis-lock"), 50)
                        )
            out[regime] = {"rows": rows, "counts": counts}
        return out

    # -- suite 2: distinct-ID throughput -----------------------------------------

    def throughput(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        callers = (4, 16, 64) if not self.quick else (16, 64)  # one caller: see the uncontended suite
        for regime, latency in REGIMES.items():
            rows: dict[str, dict[int, dict[str, list[float]]]] = {}
            counts: dict[str, dict[str, Any]] = {}
            violations = 0
            for _rep in range(min(self.reps, 2)):
                for c in callers:
                    for lock_name, url in self.locks.items():
                        # Starts per round: Blob's lease (~100 starts/s) gets a quarter, to fit the time budget.
                        calls = max(2, self.n(256, 32) // (4 if lock_name == "blob" and not self.quick else 1) // c)
                        strategies = strategies_for(lock_name)
                        rep = self.race(
                            profile="atomic", lock_url=url, processes=1, starters=c, rounds=self.n(2, 1),
                            strategies=strategies, latency=latency, distinct=True, calls=calls,
                        )  # fmt: skip
                        per_s = {s: med([c * calls / (r.resolve_ms / 1000) for r in rounds_of(rep, s)])
                                 for s in strategies}  # fmt: skip
                        for s in strategies:
                            if s == "naive" and lock_name != "file":
                                continue  # naive needs no lock: once per caller count is enough
                            name = label(s, lock_name)
                            cell = rows.setdefault(name, {}).setdefault(c, {"per_s": [], "ratio": []})
                            cell["per_s"].append(per_s[s])
                            cell["ratio"].append(per_s[s] / per_s["naive"])
                            add_counts(counts.setdefault(name, new_counts()), rep, s)
                        violations += sum(r.violation for r in rep.rounds if r.strategy != "naive")
            out[regime] = {"rows": rows, "counts": counts, "violations": violations}
        return out

    # -- suite 3: contention -----------------------------------------------------

    def contention(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        waves = {"a": (2, 8, 32, 128), "b": (32, 128)} if not self.quick else {"a": (8, 32), "b": (8, 32)}
        for regime, latency in REGIMES.items():
            rows: dict[str, dict[int, dict[str, list[float]]]] = {}
            counts: dict[str, dict[int, dict[str, Any]]] = {}
            for n in waves[regime]:
                procs = 2 if n >= 8 else 1
                shape = {"profile": "overwrite", "processes": procs, "starters": n // procs, "latency": latency}
                for lock_name, url in self.locks.items():
                    for _rep in range(min(self.reps, 2)):
                        rep = self.race(lock_url=url, rounds=self.n(10, 2), strategies=("naive", "strict"), **shape)
                        self._wave(rows, counts, rep, "strict", f"strict({lock_name})", n)
                        add_counts(counts.setdefault("naive", {}).setdefault(n, new_counts()), rep, "naive")
                # The DIY lock once per N (its waiters poll every 100 ms: slow, so fewer rounds).
                if not self.quick or n == waves[regime][0]:
                    rep = self.race(
                        lock_url=self.locks["redis"], rounds=self.n(2, 1), strategies=("naive", "redis-lock"),
                        wait=60.0, **shape,
                    )  # fmt: skip
                    self._wave(rows, counts, rep, "redis-lock", DIY, n)
            out[regime] = {"rows": rows, "counts": counts}
        return out

    @staticmethod
    def _wave(rows: dict[str, Any], counts: dict[str, Any], rep: RaceReport, strategy: str, name: str, n: int) -> None:
        naive = [r.resolve_ms for r in rounds_of(rep, "naive")]
        mine = [r.resolve_ms for r in rounds_of(rep, strategy)]
        cell = rows.setdefault(name, {}).setdefault(
            n, {"p50": [], "p99": [], "naive_p50": [], "ratio": [], "violations": []}
        )
        cell["p50"].append(p(mine, 50))
        cell["p99"].append(p(mine, 99))
        cell["naive_p50"].append(p(naive, 50))
        cell["ratio"].append(p(mine, 50) / p(naive, 50))
        cell["violations"].append(sum(r.violation for r in rounds_of(rep, strategy)))
        add_counts(counts.setdefault(name, {}).setdefault(n, new_counts()), rep, strategy)

    # -- suite 4: exactly-once sweep ------------------------------------------------

    def sweep(self) -> dict[str, Any]:
        # >= 2,000 contended rounds per lock backend (3 profiles x 670), weighted to fit the time budget
        strict_rounds = {2: 330, 8: 250, 32: 80, 128: 10} if not self.quick else {2: 3, 32: 3}
        out: dict[str, Any] = {"cells": [], "strict_rounds": {}}
        for lock_name, url in self.locks.items():
            total = 0
            for profile in ("atomic", "overwrite", "eventual"):
                for n, rounds in strict_rounds.items():
                    procs = 2 if n >= 8 else 1
                    base = {
                        "profile": profile, "lock_url": url, "processes": procs, "starters": n // procs,
                        "visibility_delay": 0.01 if profile == "eventual" else None,
                    }  # fmt: skip
                    strict = self.race(rounds=rounds, strategies=("strict",), **base)
                    cell = summarize_cell(lock_name, profile, n, "strict", rounds_of(strict, "strict"))
                    out["cells"].append(cell)
                    total += cell["rounds"]
                    if lock_name == "file":  # naive needs no lock: once is enough
                        naive = self.race(rounds=self.n(40, 3), strategies=("naive",), **base)
                        out["cells"].append(summarize_cell("-", profile, n, "naive", rounds_of(naive, "naive")))
            out["strict_rounds"][lock_name] = total
        return out

    # -- memory --------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        out: dict[str, list[float]] = {"naive": [], "strict(redis)": [], "strict(file)": []}
        for _rep in range(self.reps):
            for name, strategy, url in (
                ("naive", "naive", "file"),
                ("strict(redis)", "strict", self.locks["redis"]),
                ("strict(file)", "strict", self.locks["file"]),
            ):
                rep = self.race(
                    profile="atomic", lock_url=url, processes=1, starters=64, rounds=self.n(20, 3),
                    strategies=(strategy,), latency=0.0, instrument=None,
                )  # fmt: skip
                out[name].append(max(r.max_rss_kb for r in rep.rounds) / 1024)
        return out


def summarize_cell(lock: str, profile: str, n: int, strategy: str, rounds: list[RoundRecord]) -> dict[str, Any]:
    return {
        "lock": lock,
        "profile": profile,
        "callers": n,
        "strategy": strategy,
        "rounds": len(rounds),
        # as the harness counts them: a round where callers raised and nothing started failed
        # closed (an outage the callers were told of), and is counted apart
        "violating_rounds": sum(r.violation and not r.failed_closed for r in rounds),
        "failed_closed_rounds": sum(r.failed_closed for r in rounds),
        "lost_starts": sum(r.lost_starts for r in rounds),
        "errors": sum(v for r in rounds for k, v in r.reports.items() if k.startswith("error") or k == "rejected"),
        "first_error": next((r.first_error for r in rounds if r.first_error), None),
    }


# -- targets -------------------------------------------------------------------------------


def verdict(value: float, goal: float, *, at_most: bool = True, strict: bool = False) -> str:
    """``met``, or ``missed by X`` (X in the unit of the value)."""
    if value is None or math.isnan(value):
        return "not measured"
    ok = (value < goal if strict else value <= goal) if at_most else value >= goal
    return "met" if ok else f"missed by {abs(value - goal):.2f}"


def _cell(suite: Mapping[str, Any] | None, regime: str, name: str, *keys: Any) -> Any:
    try:
        node: Any = suite[regime]["rows"][name] if suite is not None else None
        for k in keys:
            node = node[k]
        return node
    except (KeyError, TypeError):
        return None


def _med(values: list[float] | None) -> float:
    return med(values) if values else float("nan")


def targets(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """The performance and correctness targets, each with what this run measured and met / missed by how much."""
    rows: list[dict[str, str]] = []

    def add(target: str, measured: str, result: str) -> None:
        rows.append({"target": target, "measured": measured, "verdict": result})

    sweep = results.get("sweep")
    if sweep:
        cells = sweep["cells"]
        strict = [c for c in cells if c["strategy"] == "strict"]
        violating = sum(c["violating_rounds"] for c in strict)
        lost = sum(c["lost_starts"] for c in strict)
        closed = sum(c.get("failed_closed_rounds", 0) for c in strict)
        fewest = min(sweep["strict_rounds"].values(), default=0)
        naive = [c for c in cells if c["strategy"] == "naive" and c["profile"] == "overwrite"]
        first = next((c.get("first_error") for c in strict if c.get("first_error")), None)
        missed = [f"{violating} violating rounds"] if violating else []
        missed += [f"{lost} lost starts"] if lost else []
        # Failing closed (an error, nothing scheduled) is the promised answer when the lease may be
        # gone, not a violation; it is reported with its first error, and does not miss the target.
        missed += [f"only {fewest} rounds for one backend"] if fewest < 2000 else []
        add(
            "exactly-once: strict 0 violating rounds and 0 lost starts; >= 2,000 contended rounds per lock backend",
            f"{violating} violating rounds, {lost} lost starts, {closed} failed closed"
            + (f" (first error: {first})" if closed else "")
            + ", in "
            + ", ".join(f"{k} {v}" for k, v in sweep["strict_rounds"].items())
            + f" rounds; naive violated in {sum(c['violating_rounds'] for c in naive)} of "
            f"{sum(c['rounds'] for c in naive)} rounds on overwrite",
            "met" if not missed else "missed: " + "; ".join(missed),
        )  # fmt: skip
    if "seconds" in results:
        minutes = results["seconds"] / 60
        add("all suites in under 10 minutes on 2 cores", f"{minutes:.1f} min", verdict(minutes, 10.0))
    mem = results.get("memory")
    if mem:
        ratio = max(med(v) for v in mem.values()) / med(mem["naive"])
        add("memory: peak RSS of a starter process with 64 threads within 1.2x of naive", f"{ratio:.2f}",
            verdict(ratio, 1.2))  # fmt: skip
    unc = results.get("uncontended")
    locks = ("file", "redis", "redlock", "blob")
    if unc:
        merged: dict[str, dict[str, Any]] = {}
        for regime in unc:
            for name, c in unc[regime]["counts"].items():
                m = merged.setdefault(name, new_counts())
                m["starts"] += c["starts"]
                for key in ("backend", "lock", "lock_s"):
                    bump(m[key], c[key])
        each = {name: per_start(c) for name, c in merged.items()}
        strict = {lk: each[f"strict({lk})"] for lk in locks if f"strict({lk})" in each}
        by_method = ", ".join(f"{k} {v:.2f}" for k, v in each.get("strict(redis)", {}).get("backend", {}).items())
        worst = max((c["backend_total"] for c in strict.values()), default=float("nan"))
        add(
            "backend gRPC calls per uncontended start: strict 2 (naive 2)",
            "strict " + ", ".join(f"{lk} {c['backend_total']:.2f}" for lk, c in strict.items())
            + f" (redis: {by_method}); naive {each['naive']['backend_total']:.2f}"
            + (f"; DIY {each[DIY]['backend_total']:.2f}" if DIY in each else ""),
            verdict(worst, 2.0),
        )  # fmt: skip
        worst = max((c["lock_caller"] for c in strict.values()), default=float("nan"))
        add(
            "lock-store round trips on the caller's path per uncontended strict start: 1",
            ", ".join(f"{lk} {c['lock_caller']:.2f} (+{c['lock_background']:.2f} in background)"
                      for lk, c in strict.items()),
            verdict(worst, 1.0),
        )  # fmt: skip
        for lk, regime, goal in (("redis", "a", 1.20), ("redis", "b", 1.05), ("file", "a", 1.10)):
            ratio = _med(_cell(unc, regime, f"strict({lk})", "ratio"))
            ms = _med(_cell(unc, regime, f"strict({lk})", "p50"))
            naive = _med(_cell(unc, regime, f"strict({lk})", "naive_p50"))
            add(
                f"uncontended p50 strict({lk})/naive <= {goal:.2f}, regime ({regime})",
                f"{ratio:.2f} ({ms:.3f} vs {naive:.3f} ms)",
                verdict(ratio, goal),
            )
        for regime in REGIMES:
            ratio = _med(_cell(unc, regime, "strict(redis)", "to_diy"))
            ms = _med(_cell(unc, regime, "strict(redis)", "p50"))
            diy = _med(_cell(unc, regime, DIY, "p50"))
            add(
                f"strict(redis) faster than the DIY redis-lock (uncontended p50), regime ({regime})",
                f"strict/DIY {ratio:.2f} ({ms:.3f} vs {diy:.3f} ms)",
                verdict(ratio, 1.0, strict=True),
            )
        floor = results.get("floors", {}).get("redis lease acquire+release", float("nan"))
        for regime in REGIMES:
            strict_p50 = _cell(unc, regime, "strict(redis)", "p50") or []
            naive_p50 = _cell(unc, regime, "strict(redis)", "naive_p50") or []
            overhead = _med([s - n for s, n in zip(strict_p50, naive_p50, strict=True)])
            add(
                f"strict-over-naive overhead (Redis) <= 1.5x one raw acquire+release, regime ({regime})",
                f"{overhead:.3f} ms vs floor {floor:.3f} ms = {overhead / floor:.2f}x",
                verdict(overhead / floor, 1.5),
            )
    tput = results.get("throughput")
    if tput:
        for c in (16, 64):
            ratio = _med(_cell(tput, "a", "strict(redis)", c, "ratio"))
            per_s = _med(_cell(tput, "a", "strict(redis)", c, "per_s"))
            naive = _med(_cell(tput, "a", "naive", c, "per_s"))
            add(
                f"distinct-ID throughput strict(redis)/naive >= 0.85 at {c} callers, regime (a)",
                f"{ratio:.2f} ({per_s:.0f} vs {naive:.0f} starts/s)",
                verdict(ratio, 0.85, at_most=False),
            )
    con = results.get("contention")
    if con:
        for regime in REGIMES:
            for lk, goal in (("redis", 1.3), ("file", 1.3), ("redlock", 1.6), ("blob", None)):
                name = f"strict({lk})"
                parts, worst = [], float("nan")
                for n in (32, 128):
                    ratio = _med(_cell(con, regime, name, n, "ratio"))
                    if math.isnan(ratio):
                        continue
                    worst = ratio if math.isnan(worst) else max(worst, ratio)
                    text = f"{n}: {ratio:.2f}"
                    if goal is None:
                        text += f" ({_azurite_share(con, regime, n)})"
                    parts.append(text)
                target = (
                    f"32/128-caller waves, time to answer all, {name}/naive <= {goal}, regime ({regime})"
                    if goal is not None
                    else f"32/128-caller waves, {name}/naive: ratio and Azurite's share, regime ({regime})"
                )
                measured = "; ".join(parts) or "-"
                add(target, measured, verdict(worst, goal) if goal is not None else "reported")
    return rows


def _azurite_share(con: Mapping[str, Any], regime: str, n: int) -> str:
    """Azurite's own latency on a wave's critical path (one granted acquire and one release,
    at their mean durations in the same waves) as a share of strict(blob)'s excess over naive."""
    try:
        cell = con[regime]["rows"]["strict(blob)"][n]
        c = con[regime]["counts"]["strict(blob)"][n]
    except KeyError:
        return "-"
    azurite = mean_ms(c, lambda op: op == "acquire") + mean_ms(c, lambda op: op.startswith("release"))
    excess = _med(cell["p50"]) - _med(cell["naive_p50"])
    share = f"{azurite / excess:.0%}" if excess > 0 else "-"
    return f"Azurite {azurite:.1f} ms = {share} of the {excess:.1f} ms excess"


# -- reporting -------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cell_text(cell: dict[str, list[float]]) -> str:
    p50, p99, ratio = med(cell["p50"]), med(cell["p99"]), med(cell["ratio"])
    return f"{p50:.1f} / {p99:.1f} ms ({ratio:.2f}; v={sum(cell['violations']):.0f})"


def _ops(per: Mapping[str, float], path: str) -> str:
    ops = {k.split("/")[0]: v for k, v in per.items() if k.endswith(f"/{path}") and v}
    total = sum(ops.values())
    return f"{total:.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in ops.items()) + ")" if ops else "0"


COUNT_HEADERS = [
    "strategy", "regime", "where", "starts", "backend calls / start", "lock calls / start: caller's path",
    "lock calls / start: background", "lock-store ms / start: caller's path",
]  # fmt: skip


def counts_row(name: str, regime: str, where: str, c: Mapping[str, Any]) -> list[str]:
    ps = per_start(c)
    backend = f"{ps['backend_total']:.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in ps["backend"].items()) + ")"
    if name.startswith("strict"):
        ms = f"{ps['lock_ms_caller']:.3f}" + (f" (+{ps['wait_ms_caller']:.1f} waiting)" if ps["wait_ms_caller"] else "")
        lock = [_ops(ps["lock"], "caller"), _ops(ps["lock"], "background"), ms]
    else:
        lock = ["-", "-", "-"]
    return [name, regime, where, str(ps["starts"]), backend, *lock]


def render(results: dict[str, Any]) -> str:
    head = f"Machine: {results['machine']}. Run: {results['started']}"
    parts = [f"{head} ({results['seconds']:.0f} s, {results['reps']} repetitions)."]
    parts.append("Regimes:\n\n" + "\n".join(f"- {text}" for text in REGIME_TEXT.values()))
    rows = [[t["target"], t["measured"], t["verdict"]] for t in results["targets"]]
    parts.append(
        "### Targets (all computed within this run)\n\n"
        + table(["target", "measured", "verdict"], rows)
        + "\n\nAzurite's share: one granted acquire and one release at their mean durations in the same "
        "waves (counting proxy), over strict(blob)'s time-to-answer-all minus naive's."
    )
    floors = results["floors"]
    parts.append(
        "### Floors (same run)\n\n" + table(["operation", "p50 ms"], [[k, f"{v:.3f}"] for k, v in floors.items()])
    )
    unc = results["uncontended"]
    rows = []
    for name in unc["a"]["rows"]:
        for regime in REGIMES:
            r = unc[regime]["rows"].get(name)
            if r is None:
                continue
            rows.append([name, regime, f"{med(r['naive_p50']):.3f}", f"{med(r['p50']):.3f}", f"{med(r['p99']):.3f}",
                         f"{med(r['ratio']):.2f}", spread(r["ratio"])])  # fmt: skip
    headers = ["strategy", "regime", "naive p50 ms", "p50 ms", "p99 ms", "ratio to naive (p50)", "ratio spread"]
    parts.append("### 1. Uncontended start latency (one caller, fresh IDs)\n\n" + table(headers, rows))
    tput = results["throughput"]
    callers = sorted({c for regime in tput.values() for cells in regime["rows"].values() for c in cells}, key=int)
    rows = []
    for name in tput["a"]["rows"]:
        for regime in REGIMES:
            cells = tput[regime]["rows"].get(name, {})
            rows.append([name, regime] + [
                f"{med(cells[c]['per_s']):.0f} ({med(cells[c]['ratio']):.2f})" if c in cells else "-" for c in callers
            ])  # fmt: skip
    violations = sum(regime["violations"] for regime in tput.values())
    parts.append("### 2. Distinct-ID throughput: starts/s (ratio to naive)\n\n" + table(
        ["strategy", "regime"] + [f"{c} callers" for c in callers], rows)
        + f"\n\nViolating rounds (strict and DIY): {violations}")  # fmt: skip
    con = results["contention"]
    ns = sorted({n for regime in con.values() for cells in regime["rows"].values() for n in cells}, key=int)
    rows = []
    for regime in REGIMES:
        naive = [[x for cells in con[regime]["rows"].values() if n in cells for x in cells[n]["naive_p50"]] for n in ns]
        rows.append(["naive (reference)", regime, *(f"{med(xs):.1f} ms" if xs else "-" for xs in naive)])
    names = list(dict.fromkeys(name for regime in con.values() for name in regime["rows"]))
    for name in names:
        for regime in REGIMES:
            cells = con[regime]["rows"].get(name, {})
            rows.append([name, regime] + [cell_text(cells[n]) if n in cells else "-" for n in ns])
    title = (
        "### 3. Contention: time until every caller has its answer, p50 / p99 "
        "(ratio to naive p50; v = violating rounds)"
    )
    parts.append(title + "\n\n" + table(["strategy", "regime"] + [f"{n} callers" for n in ns], rows))
    rows = []
    for regime in REGIMES:
        for name, c in unc[regime]["counts"].items():
            rows.append(counts_row(name, regime, "uncontended", c))
    for regime in REGIMES:
        for name, by_n in con[regime]["counts"].items():
            for n in sorted(by_n, key=int):
                if int(n) >= 32:
                    rows.append(counts_row(name, regime, f"wave of {n}", by_n[n]))
    parts.append(
        "### Round trips per start\n\nBackend gRPC calls counted on the server, per method; lock-store "
        "calls counted by a proxy around the strict starter's lease backend, on the caller's path "
        "(before `start()` returned) or in the background (`acquire-refused`: an attempt that found the "
        "lease held). The DIY lock's Redis calls are not counted (redis-py's `Lock`, not a lease backend).\n\n"
        + table(COUNT_HEADERS, rows)
    )
    sw = results["sweep"]
    rows = [[c["strategy"], c["lock"], c["profile"], str(c["callers"]), str(c["rounds"]), str(c["violating_rounds"]),
             str(c["lost_starts"]), str(c.get("failed_closed_rounds", "-")), str(c["errors"])]
            for c in sw["cells"]]  # fmt: skip
    parts.append("### 4. Exactly-once sweep (2 ms injected per backend call)\n\n" + table(
        ["strategy", "lock", "profile", "callers", "rounds", "violating rounds", "lost starts", "failed closed",
         "errors"], rows)
        + "\n\nStrict contended rounds per lock backend: "
        + ", ".join(f"{k}: {v}" for k, v in sw["strict_rounds"].items()))  # fmt: skip
    mem = results["memory"]
    rows = [[k, f"{med(v):.1f}", spread(v), f"{med(v) / med(mem['naive']):.2f}"] for k, v in mem.items()]
    parts.append("### Memory: peak RSS of one starter process with 64 threads\n\n" + table(
        ["strategy", "MiB (median)", "spread", "ratio to naive"], rows))  # fmt: skip
    if "telemetry" in results:
        parts.append(telemetry.render(results["telemetry"]))
    return "\n\n".join(parts) + "\n"


def plot(results: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    unc = results["uncontended"]
    names = [n for n in unc["a"]["rows"] if n != "naive"]
    ys = range(len(names))
    for offset, (regime, color) in zip((-0.2, 0.2), (("a", "#2980b9"), ("b", "#e67e22")), strict=True):
        ratios = [med(unc[regime]["rows"][n]["ratio"]) if n in unc[regime]["rows"] else 0 for n in names]
        axes[0].barh([y + offset for y in ys], ratios, height=0.4, color=color, label=f"regime ({regime})")
    axes[0].set_yticks(list(ys), names)
    axes[0].axvline(1.0, color="black", linewidth=0.8)
    axes[0].set_title("uncontended p50, ratio to naive")
    axes[0].legend(fontsize=7)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys([*results["throughput"]["a"]["rows"], *results["contention"]["a"]["rows"]]))
    color = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    for regime, style in (("a", "-"), ("b", "--")):
        for name, cells in results["throughput"][regime]["rows"].items():
            cs = sorted(cells, key=int)
            rates = [med(cells[c]["per_s"]) for c in cs]
            axes[1].plot(cs, rates, marker="o", linestyle=style, color=color.get(name), label=f"{name} ({regime})")
    axes[1].set_xscale("log", base=2)
    axes[1].set_title("distinct-ID throughput (starts/s); dashed: regime (b)")
    axes[1].set_xlabel("concurrent callers")
    axes[1].legend(fontsize=6, ncol=2)
    for regime, style in (("a", "-"), ("b", "--")):
        for name, cells in results["contention"][regime]["rows"].items():
            ns = sorted(cells, key=int)
            times = [med(cells[n]["p50"]) for n in ns]
            axes[2].plot(ns, times, marker="o", linestyle=style, color=color.get(name), label=f"{name} ({regime})")
        first = next(iter(results["contention"][regime]["rows"].values()))
        ns = sorted(first, key=int)
        axes[2].plot(ns, [med(first[n]["naive_p50"]) for n in ns], marker="x", linestyle=style, color="gray",
                     label=f"naive ({regime})")  # fmt: skip
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_title("contention: time to answer every caller (p50 ms)")
    axes[2].set_xlabel("callers on one ID")
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = directory / "benchmarks.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    cells = results["sweep"]["cells"]
    labels = [f"{c['strategy']}/{c['lock']}/{c['profile'][:3]}/{c['callers']}" for c in cells]
    rates = [c["violating_rounds"] / max(1, c["rounds"]) for c in cells]
    ax.bar(range(len(cells)), rates, color=["#c0392b" if r else "#27ae60" for r in rates])
    ax.set_xticks(range(len(cells)), labels, rotation=90, fontsize=5)
    ax.set_ylabel("share of rounds violating exactly-once")
    ax.set_title("exactly-once sweep (green: zero violations)")
    fig.tight_layout()
    path = directory / "sweep.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def with_per_start(node: Any) -> Any:
    """The results for JSON: every raw counts dict also gets its per-start figures."""
    if isinstance(node, dict):
        out = {k: with_per_start(v) for k, v in node.items()}
        if {"starts", "backend", "lock", "lock_s"} <= set(node):
            out["per_start"] = per_start(node)
        return out
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of every suite, tiny sizes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--suites", default=",".join(SUITES))
    args = parser.parse_args(argv)
    started = time.time()
    suites = args.suites.split(",")
    # The telemetry suite starts no lock-store server (only its own backend): run alone, none is started.
    bench = Bench(args.quick) if set(suites) - {"telemetry"} else None
    reps = 1 if args.quick else 3
    results: dict[str, Any] = {
        "machine": f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "reps": reps,
        "quick": args.quick,
        "regimes": {regime: {"latency_s": latency, "text": REGIME_TEXT[regime]} for regime, latency in REGIMES.items()},
    }
    try:
        for suite in suites:
            t = time.time()
            print(f"== {suite}", file=sys.stderr, flush=True)
            if suite == "telemetry":
                results[suite] = telemetry.run(quick=args.quick, reps=reps)
            else:
                results[suite] = getattr(bench, suite)()
            print(f"   {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        if bench is not None:
            bench.close()
    results["seconds"] = time.time() - started
    results["targets"] = targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(with_per_start(results), indent=2, default=lambda o: asdict(o)))
    if all(s in results for s in SUITES):
        text = render(results)
        (args.out / f"{name}.md").write_text(text)
        print(text)
        if not args.quick:
            for path in plot(results, args.out):
                print(f"wrote {path}")
    elif "telemetry" in results:
        print(telemetry.render(results["telemetry"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
