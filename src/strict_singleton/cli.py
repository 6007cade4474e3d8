"""``strict-singleton race``: watch the singleton race happen, and watch it closed.

A thin layer over :mod:`strict_singleton.testing.race`: parse flags, show progress,
print the table, write JSON and a plot. Exit status 1 if ``strict`` ever violated
exactly-once, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from strict_singleton.errors import InvalidArgumentError
from strict_singleton.testing.backend import PROFILES
from strict_singleton.testing.race import RaceConfig, RaceReport, RoundRecord, StrategySummary, run_race
from strict_singleton.testing.strategies import STRATEGIES

COLUMNS = [
    ("strategy", "strategy"),
    ("rounds", "rounds"),
    ("STARTED reports", "started_reports"),
    ("instances created", "created"),
    ("lost starts", "lost_starts"),
    ("overlap violations", "overlap_violations"),
    ("rounds violating exactly-once", "violating_rounds"),
    ("errors", "errors"),
    ("p50 ms", "latency_p50_ms"),
    ("p99 ms", "latency_p99_ms"),
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _strategies(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in STRATEGIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown strategies {unknown or [text]}; choose from {', '.join(STRATEGIES)}")
    return names


def _lock_url(text: str) -> str:
    from strict_singleton.testing.locks import lock_from_url

    try:
        lock = lock_from_url(text)  # parse it now: a bad URL is a flag error, not a crash later
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    lock.close()
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strict-singleton", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    race = sub.add_parser(
        "race",
        help="fire concurrent starters at one instance ID per round and count what the backend did",
        description="Fire concurrent starters at one fixed instance ID per round, per strategy, "
        "against Microsoft's in-memory Durable backend over gRPC, and count what happened.",
    )
    race.add_argument(
        "--profile", choices=PROFILES, default="overwrite", help="Durable backend behaviour (default: overwrite)"
    )
    race.add_argument(
        "--lock",
        type=_lock_url,
        default="file",
        help="lease store for 'strict': file, file:/dir, redis://host:port/db, "
        "redlock://host:port,host:port,host:port/db, azblob://container "
        "($AZURE_STORAGE_CONNECTION_STRING) or azurite://host:port/container",
    )
    race.add_argument("--processes", type=_positive_int, default=2, help="starter processes (default 2)")
    race.add_argument("--starters", type=_positive_int, default=8, help="starters per process (default 8)")
    race.add_argument("--rounds", type=_positive_int, default=30, help="rounds per strategy (default 30)")
    race.add_argument(
        "--strategies",
        type=_strategies,
        default=None,
        help=f"comma-separated, from {', '.join(STRATEGIES)} "
        "(default: naive,strict; with a redis:// lock also redis-lock)",
    )
    race.add_argument(
        "--api", choices=("threads", "asyncio"), default="threads", help="starters as threads or asyncio tasks"
    )
    race.add_argument(
        "--ids", choices=("fresh", "reuse"), default="fresh", help="a fresh ID per round, or one ID reused"
    )
    race.add_argument(
        "--latency", type=_seconds, default=0.002, help="seconds added to each backend call (default 0.002)"
    )
    race.add_argument("--visibility-delay", type=_seconds, default=None, help="status-read lag for new instances")
    race.add_argument("--execute", action="store_true", help="run a real worker and count orchestration executions")
    race.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the full ledger as JSON")
    race.add_argument("--plot", type=Path, default=None, metavar="PATH", help="write a PNG of violations and latency")
    race.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> RaceConfig:
    strategies = args.strategies
    if strategies is None:
        strategies = (
            ("naive", "redis-lock", "strict")
            if args.lock.startswith(("redis://", "rediss://"))
            else ("naive", "strict")
        )
    return RaceConfig(
        profile=args.profile,
        lock_url=args.lock,
        processes=args.processes,
        starters=args.starters,
        rounds=args.rounds,
        strategies=strategies,
        api=args.api,
        ids=args.ids,
        latency=args.latency,
        visibility_delay=args.visibility_delay,
        execute=args.execute,
    )


class ProgressBar:
    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.violations: dict[str, int] = {}

    def __call__(self, record: RoundRecord, done: int, total: int) -> None:
        self.violations[record.strategy] = self.violations.get(record.strategy, 0) + record.violation
        filled = round(self.width * done / total)
        bar = "#" * filled + "." * (self.width - filled)
        tally = " ".join(f"{k}:{v}" for k, v in self.violations.items())
        self.stream.write(f"\r[{bar}] {done}/{total} {record.strategy:<10} violations {tally}  ")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def format_table(summaries: list[StrategySummary]) -> str:
    columns = list(COLUMNS)
    if any(s.executions is not None for s in summaries):
        columns.insert(3, ("executions", "executions"))
    rows = [[h for h, _ in columns]] + [[str(getattr(s, attr)) for _, attr in columns] for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def exit_status(summaries: list[StrategySummary]) -> int:
    """1 if 'strict' violated exactly-once (or reported errors) in any round, else 0."""
    for s in summaries:
        if s.strategy == "strict" and (s.violating_rounds or s.lost_starts or s.errors):
            return 1
    return 0


def write_plot(report: RaceReport, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'strict-singleton[plot]'") from exc
    summaries = report.summaries()
    names = [s.strategy for s in summaries]
    cfg = report.config
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colors = ["#c0392b" if s.violating_rounds else "#27ae60" for s in summaries]
    left.bar(names, [s.violating_rounds for s in summaries], color=colors)
    left.set_title(f"rounds violating exactly-once (of {cfg.rounds})")
    for i, s in enumerate(summaries):
        left.annotate(f"{s.violating_rounds}\nlost {s.lost_starts}", (i, s.violating_rounds), ha="center", va="bottom")
    left.set_ylim(0, max(cfg.rounds, 1) * 1.15)
    width = 0.38
    xs = range(len(names))
    right.bar([x - width / 2 for x in xs], [s.latency_p50_ms for s in summaries], width, label="p50")
    right.bar([x + width / 2 for x in xs], [s.latency_p99_ms for s in summaries], width, label="p99")
    right.set_xticks(list(xs), names)
    right.set_ylabel("ms per start call")
    right.set_title("start latency under contention")
    right.legend()
    fig.suptitle(
        f"profile={cfg.profile}  lock={cfg.lock_url}  {cfg.processes} processes x {cfg.starters} starters, "
        f"{cfg.rounds} rounds, latency {cfg.latency * 1000:g} ms"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    print(
        f"race: profile={cfg.profile} lock={cfg.lock_url} strategies={','.join(cfg.strategies)} "
        f"{cfg.processes} processes x {cfg.starters} {cfg.api} starters, {cfg.rounds} rounds, ids={cfg.ids}",
        file=out,
    )
    try:
        report = run_race(cfg, progress=None if args.no_progress else ProgressBar(err))
    except ValueError as exc:
        print(f"strict-singleton race: error: {exc}", file=err)
        return 2
    summaries = report.summaries()
    print(format_table(summaries), file=out)
    print(
        f"starter processes: {len(report.pids)} (pids {report.pids}); coordinator pid {report.coordinator_pid}; "
        f"max first-call spread in a round: {max((s.max_spread_ms for s in summaries), default=0):.2f} ms",
        file=out,
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.json}", file=out)
    if args.plot is not None:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}", file=out)
    status = exit_status(summaries)
    if status:
        print("FAIL: strict violated exactly-once", file=out)
    return status


def entry_point() -> Any:  # console script
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
