"""Benchmarks: strict starts side by side with the docs' pattern and a do-it-yourself redis-py lock.

Run: ``python -m benchmarks`` (about 6-9 minutes on 2 cores) or ``python -m benchmarks --quick``
(a smoke run of every suite). Writes ``benchmarks/results/latest.json``, ``latest.md`` and
PNG plots, and prints the tables.

Everything runs on real components through the race harness: the in-memory Durable
backend over gRPC in this process, starters in spawned processes, a real redis-server,
the Azurite emulator, real file locks. Figures are medians over repetitions with their
spread (min-max), and every ratio is measured within one run, side by side, because
this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from strict_singleton._harness.race import RaceConfig, RaceReport, RoundRecord, percentile, run_race
from strict_singleton.testing import RedisServer
from strict_singleton.testing.azurite import Azurite
from strict_singleton.testing.locks import lock_from_url

RESULTS = Path(__file__).parent / "results"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3g}-{max(xs):.3g}" if xs else "-"


def rounds_of(report: RaceReport, strategy: str) -> list[RoundRecord]:
    return [r for r in report.rounds if r.strategy == strategy]


def p(values: list[float], q: float) -> float:
    return percentile(values, q)


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.reps = 1 if quick else 3
        self.tmp = Path(tempfile.mkdtemp(prefix="ss-bench-"))
        self.redis = RedisServer().start()
        self.redlock = [RedisServer().start() for _ in range(3)]
        self.azurite = Azurite().start()
        self.locks = {
            "file": f"file:{self.tmp / 'locks'}",
            "redis": self.redis.url,
            "redlock": "redlock://" + ",".join(f"127.0.0.1:{n.port}" for n in self.redlock) + "/0",
            "blob": f"{self.azurite.url}/bench",
        }
        self.results: dict[str, Any] = {}

    def close(self) -> None:
        self.redis.stop()
        for node in self.redlock:
            node.stop()
        self.azurite.stop()

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

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
        rows: dict[str, dict[str, list[float]]] = {}
        rounds = self.n(250, 30)
        for _rep in range(self.reps):
            for lock_name, url in self.locks.items():
                for visible in (True, False):
                    variant = f"strict({lock_name})" + ("" if visible else " confirm_visible=False")
                    strategies: tuple[str, ...] = ("naive", "strict")
                    if lock_name == "redis" and visible:
                        strategies = ("naive", "redis-lock", "strict")
                    cfg = RaceConfig(
                        profile="atomic", lock_url=url, processes=1, starters=1, rounds=rounds,
                        strategies=strategies, latency=0.0, confirm_visible=visible,
                    )  # fmt: skip
                    rep = run_race(cfg)
                    naive = [x for r in rounds_of(rep, "naive") for x in r.latencies_ms]
                    strict = [x for r in rounds_of(rep, "strict") for x in r.latencies_ms]
                    row = rows.setdefault(variant, {"naive_p50": [], "p50": [], "p99": [], "ratio": []})
                    row["naive_p50"].append(p(naive, 50))
                    row["p50"].append(p(strict, 50))
                    row["p99"].append(p(strict, 99))
                    row["ratio"].append(p(strict, 50) / p(naive, 50))
                    if "redis-lock" in strategies:
                        diy = [x for r in rounds_of(rep, "redis-lock") for x in r.latencies_ms]
                        d = rows.setdefault("redis-lock (DIY)", {"naive_p50": [], "p50": [], "p99": [], "ratio": []})
                        d["naive_p50"].append(p(naive, 50))
                        d["p50"].append(p(diy, 50))
                        d["p99"].append(p(diy, 99))
                        d["ratio"].append(p(diy, 50) / p(naive, 50))
        return rows

    # -- suite 2: distinct-ID throughput -----------------------------------------

    def throughput(self) -> dict[str, Any]:
        rows: dict[str, dict[int, dict[str, list[float]]]] = {}
        callers = (1, 4, 16, 64)
        for _rep in range(min(self.reps, 2)):
            for c in callers:
                calls = max(2, self.n(256, 32) // c)
                for lock_name, url in self.locks.items():
                    strategies: tuple[str, ...] = ("naive", "strict")
                    if lock_name == "redis":
                        strategies = ("naive", "redis-lock", "strict")
                    cfg = RaceConfig(
                        profile="atomic", lock_url=url, processes=1, starters=c, rounds=self.n(3, 1),
                        strategies=strategies, latency=0.0, distinct=True, calls=calls,
                    )  # fmt: skip
                    rep = run_race(cfg)
                    tput = {s: med([c * calls / (r.resolve_ms / 1000) for r in rounds_of(rep, s)]) for s in strategies}
                    for s in strategies:
                        if s == "naive" and lock_name != "file":
                            continue
                        label = s if s != "strict" else f"strict({lock_name})"
                        cell = rows.setdefault(label, {}).setdefault(c, {"per_s": [], "ratio": []})
                        cell["per_s"].append(tput[s])
                        cell["ratio"].append(tput[s] / tput["naive"])
                    violations = sum(r.violation for r in rep.rounds if r.strategy != "naive")
                    rows.setdefault("_violations", {}).setdefault(c, {"per_s": [], "ratio": []})["per_s"].append(
                        violations
                    )
        return rows

    # -- suite 3: contention -----------------------------------------------------

    def contention(self) -> dict[str, Any]:
        rows: dict[str, dict[int, dict[str, list[float]]]] = {}
        for n in (2, 8, 32, 128):
            procs = 2 if n >= 8 else 1
            for lock_name, url in self.locks.items():
                for _rep in range(min(self.reps, 2)):
                    cfg = RaceConfig(
                        profile="overwrite", lock_url=url, processes=procs, starters=n // procs,
                        rounds=self.n(10, 3), strategies=("naive", "strict"),
                    )  # fmt: skip
                    rep = run_race(cfg)
                    naive = [r.resolve_ms for r in rounds_of(rep, "naive")]
                    strict = [r.resolve_ms for r in rounds_of(rep, "strict")]
                    cell = rows.setdefault(f"strict({lock_name})", {}).setdefault(
                        n, {"p50": [], "p99": [], "naive_p50": [], "ratio": [], "violations": []}
                    )
                    cell["p50"].append(p(strict, 50))
                    cell["p99"].append(p(strict, 99))
                    cell["naive_p50"].append(p(naive, 50))
                    cell["ratio"].append(p(strict, 50) / p(naive, 50))
                    cell["violations"].append(sum(r.violation for r in rounds_of(rep, "strict")))
            # The DIY lock once per N (its waiters poll every 100 ms: slow, so fewer rounds).
            cfg = RaceConfig(
                profile="overwrite", lock_url=self.locks["redis"], processes=procs, starters=n // procs,
                rounds=self.n(3, 1), strategies=("naive", "redis-lock"), wait=60.0,
            )  # fmt: skip
            rep = run_race(cfg)
            naive = [r.resolve_ms for r in rounds_of(rep, "naive")]
            diy = [r.resolve_ms for r in rounds_of(rep, "redis-lock")]
            rows.setdefault("redis-lock (DIY)", {})[n] = {
                "p50": [p(diy, 50)],
                "p99": [p(diy, 99)],
                "naive_p50": [p(naive, 50)],
                "ratio": [p(diy, 50) / p(naive, 50)],
                "violations": [sum(r.violation for r in rounds_of(rep, "redis-lock"))],
            }
        return rows

    # -- suite 4: exactly-once sweep ------------------------------------------------

    def sweep(self) -> dict[str, Any]:
        # >= 2,000 contended rounds per lock backend (3 profiles x 670), weighted to fit the time budget
        strict_rounds = {2: 330, 8: 250, 32: 80, 128: 10}
        out: dict[str, Any] = {"cells": [], "strict_rounds": {}}
        for lock_name, url in self.locks.items():
            total = 0
            for profile in ("atomic", "overwrite", "eventual"):
                for n, full in strict_rounds.items():
                    procs = 2 if n >= 8 else 1
                    base = {
                        "profile": profile, "lock_url": url, "processes": procs, "starters": n // procs,
                        "visibility_delay": 0.01 if profile == "eventual" else None,
                    }  # fmt: skip
                    strict = run_race(RaceConfig(rounds=self.n(full, 5), strategies=("strict",), **base))  # type: ignore[arg-type]
                    cell = summarize_cell(lock_name, profile, n, "strict", rounds_of(strict, "strict"))
                    out["cells"].append(cell)
                    total += cell["rounds"]
                    if lock_name == "file":  # naive needs no lock: once is enough
                        naive = run_race(RaceConfig(rounds=self.n(40, 3), strategies=("naive",), **base))  # type: ignore[arg-type]
                        out["cells"].append(summarize_cell("-", profile, n, "naive", rounds_of(naive, "naive")))
            out["strict_rounds"][lock_name] = total
        return out

    # -- memory --------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        out: dict[str, list[float]] = {"naive": [], "strict(redis)": [], "strict(file)": []}
        for _rep in range(self.reps):
            for label, strategy, url in (
                ("naive", "naive", "file"),
                ("strict(redis)", "strict", self.locks["redis"]),
                ("strict(file)", "strict", self.locks["file"]),
            ):
                cfg = RaceConfig(
                    profile="atomic", lock_url=url, processes=1, starters=64, rounds=self.n(20, 3),
                    strategies=(strategy,), latency=0.0,
                )  # fmt: skip
                rep = run_race(cfg)
                out[label].append(max(r.max_rss_kb for r in rep.rounds) / 1024)
        return out


def summarize_cell(lock: str, profile: str, n: int, strategy: str, rounds: list[RoundRecord]) -> dict[str, Any]:
    return {
        "lock": lock,
        "profile": profile,
        "callers": n,
        "strategy": strategy,
        "rounds": len(rounds),
        "violating_rounds": sum(r.violation for r in rounds),
        "lost_starts": sum(r.lost_starts for r in rounds),
        "errors": sum(v for r in rounds for k, v in r.reports.items() if k.startswith("error") or k == "rejected"),
    }


# -- reporting -------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cell_text(cell: dict[str, list[float]]) -> str:
    p50, p99, ratio = med(cell["p50"]), med(cell["p99"]), med(cell["ratio"])
    return f"{p50:.1f} / {p99:.1f} ms ({ratio:.2f}; v={sum(cell['violations']):.0f})"


def render(results: dict[str, Any]) -> str:
    head = f"Machine: {results['machine']}. Run: {results['started']}"
    parts = [f"{head} ({results['seconds']:.0f} s, {results['reps']} repetitions)."]
    floors = results["floors"]
    parts.append(
        "### Floors (same run)\n\n" + table(["operation", "p50 ms"], [[k, f"{v:.3f}"] for k, v in floors.items()])
    )
    unc = results["uncontended"]
    rows = []
    for name, r in unc.items():
        rows.append([name, f"{med(r['naive_p50']):.3f}", f"{med(r['p50']):.3f}", f"{med(r['p99']):.3f}",
                     f"{med(r['ratio']):.2f}", spread(r["ratio"])])  # fmt: skip
    parts.append("### 1. Uncontended start latency (one caller, fresh IDs)\n\n" + table(
        ["strategy", "naive p50 ms", "p50 ms", "p99 ms", "ratio to naive (p50)", "ratio spread"], rows))  # fmt: skip
    tput = results["throughput"]
    callers = sorted({c for label, cells in tput.items() if not label.startswith("_") for c in cells}, key=int)
    rows = []
    for label, cells in tput.items():
        if label.startswith("_"):
            continue
        rows.append([label] + [
            f"{med(cells[c]['per_s']):.0f} ({med(cells[c]['ratio']):.2f})" if c in cells else "-" for c in callers
        ])  # fmt: skip
    parts.append("### 2. Distinct-ID throughput: starts/s (ratio to naive)\n\n" + table(
        ["strategy"] + [f"{c} callers" for c in callers], rows))  # fmt: skip
    con = results["contention"]
    ns = sorted({n for cells in con.values() for n in cells}, key=int)
    rows = []
    for label, cells in con.items():
        rows.append([label] + [
            cell_text(cells[n]) if n in cells else "-" for n in ns
        ])  # fmt: skip
    naive_row = ["naive (reference)"] + [
        f"{med([x for cells in con.values() if n in cells for x in cells[n]['naive_p50']]):.1f} ms" for n in ns
    ]
    title = (
        "### 3. Contention: time until every caller has its answer, p50 / p99 "
        "(ratio to naive p50; v = violating rounds)"
    )
    parts.append(title + "\n\n" + table(["strategy"] + [f"{n} callers" for n in ns], [naive_row, *rows]))
    sw = results["sweep"]
    rows = [[c["strategy"], c["lock"], c["profile"], str(c["callers"]), str(c["rounds"]), str(c["violating_rounds"]),
             str(c["lost_starts"]), str(c["errors"])] for c in sw["cells"]]  # fmt: skip
    parts.append("### 4. Exactly-once sweep\n\n" + table(
        ["strategy", "lock", "profile", "callers", "rounds", "violating rounds", "lost starts", "errors"], rows)
        + "\n\nStrict contended rounds per lock backend: "
        + ", ".join(f"{k}: {v}" for k, v in sw["strict_rounds"].items()))  # fmt: skip
    mem = results["memory"]
    rows = [[k, f"{med(v):.1f}", spread(v), f"{med(v) / med(mem['naive']):.2f}"] for k, v in mem.items()]
    parts.append("### Memory: peak RSS of one starter process with 64 threads\n\n" + table(
        ["strategy", "MiB (median)", "spread", "ratio to naive"], rows))  # fmt: skip
    return "\n\n".join(parts) + "\n"


def plot(results: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    unc = results["uncontended"]
    names = list(unc)
    axes[0].barh(names, [med(unc[n]["ratio"]) for n in names], color="#2980b9")
    axes[0].axvline(1.0, color="black", linewidth=0.8)
    axes[0].set_title("uncontended p50, ratio to naive")
    tput = results["throughput"]
    for label, cells in tput.items():
        if label.startswith("_"):
            continue
        cs = sorted(cells, key=int)
        axes[1].plot(cs, [med(cells[c]["per_s"]) for c in cs], marker="o", label=label)
    axes[1].set_xscale("log", base=2)
    axes[1].set_title("distinct-ID throughput (starts/s)")
    axes[1].set_xlabel("concurrent callers")
    axes[1].legend(fontsize=7)
    con = results["contention"]
    for label, cells in con.items():
        ns = sorted(cells, key=int)
        axes[2].plot(ns, [med(cells[n]["p50"]) for n in ns], marker="o", label=label)
    first = next(iter(con.values()))
    ns = sorted(first, key=int)
    axes[2].plot(ns, [med(first[n]["naive_p50"]) for n in ns], marker="x", linestyle="--", color="gray", label="naive")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_title("contention: time to answer every caller (p50 ms)")
    axes[2].set_xlabel("callers on one ID")
    axes[2].legend(fontsize=7)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of every suite")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--suites", default="floors,uncontended,throughput,contention,sweep,memory")
    args = parser.parse_args(argv)
    started = time.time()
    bench = Bench(args.quick)
    results: dict[str, Any] = {
        "machine": f"{platform.node() or 'host'}: {platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "reps": bench.reps,
        "quick": args.quick,
    }
    try:
        for suite in args.suites.split(","):
            t = time.time()
            print(f"== {suite}", file=sys.stderr, flush=True)
            results[suite] = getattr(bench, suite)()
            print(f"   {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        bench.close()
    results["seconds"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=lambda o: asdict(o)))
    missing = [s for s in ("floors", "uncontended", "throughput", "contention", "sweep", "memory") if s not in results]
    if not missing:
        text = render(results)
        (args.out / f"{name}.md").write_text(text)
        print(text)
        if not args.quick:
            for path in plot(results, args.out):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
