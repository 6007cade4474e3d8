"""``strict-singleton race``: watch the singleton race happen, and watch it closed.

A thin layer over :mod:`strict_singleton._harness.race`: check the extras and the lock
store, parse flags, show progress, print the table, write JSON and a plot. Lock URLs are
printed only redacted (no password, no secret query value), everywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from strict_singleton._harness.race import (
    RaceConfig,
    RaceReport,
    RoundRecord,
    StrategySummary,
    run_race,
    validate_config,
)
from strict_singleton._harness.strategies import STRATEGIES, WORKER_LOGGER
from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends._redact import MASK
from strict_singleton.lock_backends._url import extra_for, extra_modules, missing_extra, redact_url, scrub
from strict_singleton.testing.backend import PROFILES

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_RACE_FAILED = 4
EXIT_WARNINGS = 5  # doctor: nothing failed, something warned

EXIT_CODES = f"""exit status:
  {EXIT_OK}  strict started exactly once in every round
  {EXIT_VIOLATION}  strict violated exactly-once (two STARTED, an overwritten or lost start)
  {EXIT_USAGE}  bad flags, or a missing extra (the message gives the pip install line)
  {EXIT_UNAVAILABLE}  the lock store or Durable backend was unavailable: the preflight probe failed,
     or strict starts raised errors and scheduled nothing (failed closed); the first
     error is printed
  {EXIT_RACE_FAILED}  the race itself could not run (a starter process died or timed out)

doctor has exit codes of its own: see strict-singleton doctor --help
"""

DOCTOR_EXIT_CODES = f"""exit status:
  {EXIT_OK}  every check ok (or skipped: not applicable here)
  {EXIT_VIOLATION}  at least one failure: an assumption of docs/guarantees.md does not hold, or a store
     or the Durable backend cannot serve a start (unreachable, refused, missing permissions)
  {EXIT_USAGE}  bad flags, a malformed lock URL (shown redacted) or a configuration no lease could
     use (a Redlock of fewer than 3 nodes, a prefix the lease refuses, an option redis-py refuses),
     found before any store is contacted; with --json, a JSON object {{"status": "usage error",
     "exit": 2, "error": ...}} on stdout, whichever argument was wrong
  {EXIT_WARNINGS}  no failure, but at least one warning: a documented window is open (no persistence,
     replicas, a private /tmp) or a setting could not be read

URLs are printed redacted; passwords and connection strings never are.
Nothing disturbs a live lease: the lease cycles run on a scratch instance ID
(strict-singleton-doctor-<uuid>) under the lease's real names, deleted afterwards.
"""

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
    """A type for ``--lock``: every error is an ``ArgumentTypeError`` with the URL redacted,
    since argparse echoes the raw value of any other exception a type raises."""
    try:
        return _parsed_lock_url(text)
    except argparse.ArgumentTypeError:
        raise
    except Exception as exc:
        raise argparse.ArgumentTypeError(scrub(f"bad lock URL {redact_url(text)}: {exc}", text)) from None


def _parsed_lock_url(text: str) -> str:
    from strict_singleton.lock_backends import from_url

    extra = extra_for(text)
    problem = missing_extra(extra, extra_modules(text, asynchronous=False)) if extra else None
    if problem:
        raise argparse.ArgumentTypeError(f"the {text.partition('://')[0]}:// lock {problem}")
    try:
        lock = from_url(text)  # parse it now: a bad URL is a flag error, not a crash later
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except Exception as exc:  # the client library refused it (e.g. an unknown redis:// option)
        raise argparse.ArgumentTypeError(scrub(f"bad lock URL {redact_url(text)}: {exc}", text)) from None
    lock.close()
    return text


def build_parser(*, json_errors_to: TextIO | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``strict-singleton`` parser; ``json_errors_to``: where a usage error is printed
    as JSON (``doctor --json``), instead of the usual message on stderr; ``argv``: the
    arguments every usage message is scrubbed against."""
    parser = _Parser(
        prog="strict-singleton",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.json_errors_to = json_errors_to
    parser.argv = argv
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    race = sub.add_parser(
        "race",
        help="fire concurrent starters at one instance ID per round and count what the backend did",
        description="Fire concurrent starters at one fixed instance ID per round, per strategy, "
        "against Microsoft's in-memory Durable backend over gRPC, and count what happened. "
        "Before any work it checks the extras the flags need and probes the lock store "
        "(a few seconds at most), so a missing package or an unreachable store fails at once.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    race.add_argument(
        "--profile", choices=PROFILES, default="overwrite", help="Durable backend behaviour (default: overwrite)"
    )
    race.add_argument(
        "--client",
        choices=("durabletask", "functions"),
        default="durabletask",
        help="durabletask: the gRPC clients (default); functions: the docs' Azure Functions HTTP starter "
        "(azure-functions-durable 1.x: get_status, then start_new) against DurableFunctionsStarter, through "
        "a Functions host stand-in on each of its profiles (reject, anystate, racy); asyncio tasks, one new "
        "client per invocation; --lock must be file or redis",
    )
    race.add_argument(
        "--lock",
        type=_lock_url,
        default="file",
        help="lease store for 'strict': file, file:/dir, redis://[:password@]host:port/db (rediss:// for TLS), "
        "redlock://host:port,host:port,host:port/db, azblob://container "
        "($AZURE_STORAGE_CONNECTION_STRING) or azurite://host:port/container; printed with passwords redacted",
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
    race.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is shown only when stderr is a terminal)"
    )
    race.add_argument(
        "--verbose",
        action="store_true",
        help="show the log lines of the race's Durable worker and backend (quiet by default)",
    )
    _add_doctor_parser(sub, json_errors_to)
    explore = sub.add_parser(
        "explore",
        help="run the real start flow through bounded interleavings and faults (exit 1 if a claim fails)",
        description="Run the real start flow (the generators both starters drive) through every "
        "interleaving and fault within bounds on a virtual clock, check the invariants after every "
        "step, and print the bounds, the counts, and any counterexample step by step. Safe "
        "configurations must show 0 violations; residual ones (docs/guarantees.md) must show their "
        "counterexample; every mutant loaded with --mutants must be caught.",
    )
    explore.add_argument("--config", action="append", help="a configuration (repeatable; default: all)")
    explore.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="searches side by side in forked processes (default: one per CPU, at most 4; the report is the same)",
    )
    explore.add_argument(
        "--mutants",
        type=Path,
        default=None,
        metavar="PATH",
        help="a Python file whose MUTANTS registry to run (e.g. tests/explorer_mutants.py; default: no mutants)",
    )
    explore.add_argument(
        "--mutant", action="append", help="a mutant of the --mutants file (repeatable; default: all of them)"
    )
    explore.add_argument("--no-mutants", action="store_true", help="skip the mutants")
    explore.add_argument("--walks", type=_positive_int, default=300, help="random 3-starter schedules per config")
    explore.add_argument("--seed", type=int, default=0, help="seed of the random schedules")
    explore.add_argument("--max-schedules", type=_positive_int, default=100_000, help="search bound per config")
    explore.add_argument(
        "--replay", help="replay one schedule string (with --config, and --mutants and --mutant if any)"
    )
    explore.add_argument("--list", action="store_true", help="list the configurations and the loaded mutants")
    for subparser in sub.choices.values():
        subparser.argv = argv
    return parser


def _doctor_url(text: str) -> str:
    """A type for the doctor's LOCK_URLs (checked again with ``--prefix`` in
    :func:`run_doctor`): every error is an ``ArgumentTypeError`` with the URL redacted,
    since argparse echoes the raw value of any other exception a type raises."""
    from strict_singleton.doctor import validate_lock_url

    try:
        validate_lock_url(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(scrub(str(exc), text)) from None
    except Exception as exc:
        raise argparse.ArgumentTypeError(scrub(f"bad lock URL {redact_url(text)}: {exc}", text)) from None
    return text


def _client_address(text: str) -> str:
    """A type for ``doctor --client``: a malformed address is a usage error showing
    nothing of it (it may be a password typed where a user or a port goes)."""
    from strict_singleton.doctor._address import validate_client_address

    try:
        validate_client_address(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


class _Parser(argparse.ArgumentParser):
    """Every parser of the command line (the top level and each subcommand's).

    argparse quotes raw arguments in its own messages (an unrecognised argument, an
    invalid choice), and any of them may be a lock URL or an address with a password: so
    :meth:`error` scrubs the message against every argument of the command line that
    looks like one before printing it. Given ``json_errors_to`` (``doctor --json``), the
    message is printed there as the JSON usage-error document instead, whichever parser
    failed, so a pipeline that parses the output gets a document for every outcome.
    ``intermixed``: positionals may follow options (the doctor's LOCK_URLs)."""

    json_errors_to: TextIO | None = None
    argv: Sequence[str] = ()
    intermixed = False
    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # parse_known_intermixed_args calls parse_known_args itself: intermix once.
        if self.intermixed and not self._intermixing:
            self._intermixing = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._intermixing = False
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message = scrub_arguments(message, self.argv)
        if self.json_errors_to is None:
            super().error(message)
        print(json.dumps(usage_error_json(message), indent=2), file=self.json_errors_to)
        sys.exit(EXIT_USAGE)


def _shown_argument(item: str) -> str:
    """How an argument may appear in a message: a URL redacted, a ``file`` URL as it is,
    anything else with a colon or an ``@`` (an address, which may carry a password
    where a port or a user should be) masked whole."""
    if item == "file" or item.startswith("file:"):
        return item
    if "://" in item:
        return redact_url(item)
    if ":" in item or "@" in item or "%" in item:
        return MASK
    return item


def scrub_arguments(message: str, argv: Sequence[str]) -> str:
    """``message`` with every argument of ``argv`` that looks like a URL or an address
    shown only as :func:`_shown_argument` shows it, and every secret of it scrubbed."""
    risky = sorted((a for a in argv if isinstance(a, str) and _shown_argument(a) != a), key=len, reverse=True)
    for item in risky:
        message = message.replace(item, _shown_argument(item))
    for item in risky:
        message = scrub(message, item)
    return message


def usage_error_json(message: str) -> dict[str, Any]:
    """What ``doctor --json`` prints for a usage error (no store was contacted)."""
    return {"status": "usage error", "error": message, "exit": EXIT_USAGE, "checks": []}


def _add_doctor_parser(sub: Any, json_errors_to: TextIO | None) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check a live deployment against every assumption of docs/guarantees.md (exit 0/1/5)",
        description="Check each lock store (and optionally the Durable backend) a deployment uses against "
        "the assumptions of docs/guarantees.md: eviction policy, persistence, replication, clocks, "
        "ACL permissions, Redlock independence, Blob leases, the lock directory's owner, mode, filesystem "
        "and sharing, with one real lease cycle on scratch names per store. Prints a table per store "
        "(or --json) with what to change and the guarantees row each check protects.",
        epilog=DOCTOR_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # main() recognises --json by its full spelling, before parsing.
        allow_abbrev=False,
    )
    doctor.intermixed = True  # LOCK_URLs before, between and after options
    doctor.add_argument(
        "lock_urls",
        nargs="*",
        type=_doctor_url,
        metavar="LOCK_URL",
        help="file, file:/dir, redis://[user:password@]host:port/db (rediss:// for TLS), "
        "redlock://host:port,host:port,host:port/db, azblob://container ($AZURE_STORAGE_CONNECTION_STRING) "
        "or azurite://host:port/container",
    )
    doctor.add_argument(
        "--client",
        metavar="ADDRESS",
        default=None,
        type=_client_address,
        help="the Durable backend's gRPC address (grpc://host:port, grpcs://host:port for TLS, or host:port; "
        "nothing else: no user, password, path or query): checked with a status read of a scratch ID that "
        "cannot exist",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    doctor.add_argument("--timeout", type=_seconds, default=3.0, help="seconds each store call may take (default 3)")
    doctor.add_argument(
        "--clock-skew",
        type=_seconds,
        default=5.0,
        help="the starters' clock_skew: how far their clocks may be from each other (default 5); each host "
        "is held to half of it against the store's clock",
    )
    doctor.add_argument("--prefix", default=None, help="the lease's key or blob-name prefix, if not the default")
    doctor.json_errors_to = json_errors_to


def scrub_all(text: str, urls: Sequence[str]) -> str:
    for url in urls:
        text = scrub(text, url)
    return text


def run_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``strict-singleton doctor``: the report, and an exit status a pipeline can act on."""
    from strict_singleton.doctor import check_deployment, format_report, report_json
    from strict_singleton.doctor._render import exit_status_of

    if not args.lock_urls and args.client is None:
        message = "give at least one LOCK_URL or --client"
        if args.json:
            print(json.dumps(usage_error_json(message), indent=2), file=out)
        else:
            print(f"strict-singleton doctor: error: {message}", file=err)
        return EXIT_USAGE
    try:
        report = check_deployment(
            args.lock_urls,
            client=args.client,
            timeout=args.timeout,
            clock_skew=args.clock_skew,
            prefix=args.prefix,
        )
    except InvalidArgumentError as exc:  # already redacted, raised before any store is contacted
        message = scrub_all(str(exc), [*args.lock_urls, args.client or ""])
        if args.json:
            print(json.dumps(usage_error_json(message), indent=2), file=out)
        else:
            print(f"strict-singleton doctor: error: {message}", file=err)
        return EXIT_USAGE
    print(report_json(report) if args.json else format_report(report), file=out)
    return exit_status_of(report)


def run_explore(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from strict_singleton.testing import explore as ex

    mutants: dict[str, ex.Mutant] = {}
    if args.mutants is not None:
        try:
            mutants = ex.load_mutants(args.mutants)
        except (OSError, ValueError) as exc:
            print(f"strict-singleton explore: error: --mutants: {exc}", file=err)
            return EXIT_USAGE
    elif args.mutant:
        print("strict-singleton explore: error: --mutant needs --mutants PATH (the file that defines it)", file=err)
        return EXIT_USAGE
    for kind, names, table in (("config", args.config, ex.CONFIGS), ("mutant", args.mutant, mutants)):
        for name in names or []:
            if name not in table:
                print(
                    f"strict-singleton explore: error: unknown {kind} {name!r}; choose from {sorted(table)}", file=err
                )
                return EXIT_USAGE
    if args.list:
        for cfg in ex.CONFIGS.values():
            print(f"config {cfg.name:28} {'safe' if cfg.safe else 'residual'}: {cfg.claim}", file=out)
        for mut in mutants.values():
            print(f"mutant {mut.name:28} {mut.description} (caught in {mut.config})", file=out)
        return 0
    if args.replay is not None:
        if not args.config or len(args.config) != 1:
            print("strict-singleton explore: error: --replay needs exactly one --config", file=err)
            return EXIT_USAGE
        mutant = mutants[args.mutant[0]] if args.mutant else None
        try:
            lines = ex.describe(ex.CONFIGS[args.config[0]], mutant, args.replay.split())
        except ValueError as exc:  # a schedule the current flow cannot follow
            print(f"strict-singleton explore: error: {exc}", file=err)
            return EXIT_USAGE
        print("\n".join(lines), file=out)
        return 1 if any("VIOLATION" in line for line in lines) else 0
    chosen = [] if args.no_mutants else [mutants[name] for name in args.mutant or mutants]
    return ex.run_all(
        out,
        configs=args.config,
        mutants=chosen,
        walks=args.walks,
        seed=args.seed,
        max_schedules=args.max_schedules,
        jobs=args.jobs,
    )


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
    if any(s.failed_closed_rounds for s in summaries):
        at = [attr for _, attr in columns].index("violating_rounds") + 1
        columns.insert(at, ("rounds failed closed", "failed_closed_rounds"))
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


def verdict(summaries: list[StrategySummary]) -> tuple[int, str]:
    """The exit status and its one-line reason, judged on the ``strict`` strategy only.

    A broken guarantee outranks an outage: a round with two STARTED is a violation even if
    other rounds failed closed.
    """
    strict = [s for s in summaries if s.strategy == "strict"]
    for s in strict:
        if s.violating_rounds or s.lost_starts:
            return EXIT_VIOLATION, (
                f"FAIL: strict violated exactly-once in {s.violating_rounds} of {s.rounds} rounds "
                f"({s.lost_starts} lost starts, {s.overlap_violations} rounds with an overwritten instance)"
            )
    for s in strict:
        if s.errors:
            return EXIT_UNAVAILABLE, (
                f"UNAVAILABLE: strict failed closed: {s.errors} starts raised errors and scheduled nothing "
                f"({s.failed_closed_rounds} of {s.rounds} rounds started nothing); no exactly-once violation. "
                f"First error: {s.first_error}"
            )
    return EXIT_OK, "OK: strict started exactly once in every round" if strict else "OK"


def exit_status(summaries: list[StrategySummary]) -> int:
    """The exit status :func:`verdict` gives."""
    return verdict(summaries)[0]


def write_plot(report: RaceReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        f"profile={cfg.profile}  lock={redact_url(cfg.lock_url)}  {cfg.processes} processes x {cfg.starters} starters, "
        f"{cfg.rounds} rounds, latency {cfg.latency * 1000:g} ms"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def missing_extras(args: argparse.Namespace, strategies: Sequence[str]) -> list[str]:
    """One message per extra the flags need but the install lacks, each with its pip line."""
    problems = []
    if args.plot is not None:
        problem = missing_extra("plot", ("matplotlib",))
        if problem:
            problems.append(f"--plot {problem}")
    if "redis-lock" in strategies and args.lock.startswith(("redis://", "rediss://")):
        problem = missing_extra("redis")
        if problem:
            problems.append(f"the redis-lock strategy {problem}")
    extra = extra_for(args.lock)
    if extra and ("strict" in strategies):
        problem = missing_extra(extra, extra_modules(args.lock, asynchronous=args.api == "asyncio"))
        if problem:
            problems.append(f"--lock {redact_url(args.lock)} with --api {args.api} {problem}")
    return problems


# Loggers of the race's own Durable worker and in-memory backend. On the overwrite profile
# they warn about every replaced instance: expected here, and noise unless asked for.
HARNESS_LOGGERS = (WORKER_LOGGER, "durabletask.testing.in_memory_backend")


def route_harness_logs(err: TextIO, *, verbose: bool) -> None:
    """Silence the harness's worker and backend logs, or (verbose) show them on ``err``."""
    for name in HARNESS_LOGGERS:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if getattr(h, "strict_singleton_cli", False)]:
            log.removeHandler(old)
        handler: logging.Handler = logging.StreamHandler(err) if verbose else logging.NullHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        handler.strict_singleton_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO if verbose else logging.WARNING)


def run_functions(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``race --client functions``: the docs' Functions starter against the strict one, per host profile."""
    problem = missing_extra("functions", ("azure.durable_functions", "azure.functions"))
    if problem:
        print(f"strict-singleton race: error: --client functions {problem}", file=err)
        return EXIT_USAGE
    if not (args.lock == "file" or args.lock.startswith(("file:", "redis://", "rediss://"))):
        print("strict-singleton race: error: --client functions needs --lock file, file:/dir or redis://", file=err)
        return EXIT_USAGE
    from strict_singleton._harness.functions_race import run_functions_race, summary_lines

    print(
        f"race --client functions: {args.processes} processes x {args.starters} invocations (asyncio tasks), "
        f"{args.rounds} rounds per strategy and host profile, lock={redact_url(args.lock)}",
        file=out,
    )
    route_harness_logs(err, verbose=args.verbose)
    try:
        rounds = run_functions_race(
            processes=args.processes,
            tasks=args.starters,
            rounds=args.rounds,
            lock_url=None if args.lock == "file" else args.lock,
        )
    except (RuntimeError, TimeoutError) as exc:
        print(f"strict-singleton race: the race could not run: {exc}", file=err)
        return EXIT_RACE_FAILED
    for line in summary_lines(rounds):
        print(line, file=out)
    strict = [r for r in rounds if r.strategy == "strict"]
    if any(r.violation and (r.statuses[202] > 1 or r.created > 1) for r in strict):
        print("VIOLATION: strict answered 202 more than once, or the host created more than one instance", file=out)
        return EXIT_VIOLATION
    if any(r.violation for r in strict):
        print("UNAVAILABLE: some strict rounds started nothing (lock store or host errors)", file=out)
        return EXIT_UNAVAILABLE
    print("OK: strict answered 202 exactly once and the host created exactly one instance in every round", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status (see ``EXIT_CODES``)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    doctor_json = argv[:1] == ["doctor"] and "--json" in argv[: argv.index("--") if "--" in argv else None]
    parser = build_parser(json_errors_to=out if doctor_json else None, argv=argv)
    args = parser.parse_args(argv)
    if args.command == "explore":
        return run_explore(args, out, err)
    if args.command == "doctor":
        return run_doctor(args, out, err)
    if args.client == "functions":
        return run_functions(args, out, err)
    cfg = config_from_args(args)
    try:
        validate_config(cfg)
    except ValueError as exc:
        print(f"strict-singleton race: error: {scrub(str(exc), cfg.lock_url)}", file=err)
        return EXIT_USAGE
    problems = missing_extras(args, cfg.strategies)
    for problem in problems:
        print(f"strict-singleton race: error: {problem}", file=err)
    if problems:
        return EXIT_USAGE
    shown = redact_url(cfg.lock_url)
    print(
        f"race: profile={cfg.profile} lock={shown} strategies={','.join(cfg.strategies)} "
        f"{cfg.processes} processes x {cfg.starters} {cfg.api} starters, {cfg.rounds} rounds, ids={cfg.ids}",
        file=out,
    )
    if {"strict", "redis-lock"} & set(cfg.strategies):
        from strict_singleton._harness.preflight import probe_lock_store

        try:
            for warning in probe_lock_store(cfg.lock_url):
                print(f"strict-singleton race: warning: {warning}", file=err)
        except LockUnavailableError as exc:
            print(f"strict-singleton race: lock store unavailable: {exc.message} [lock={shown}]", file=err)
            print("UNAVAILABLE: the lock store did not answer the preflight probe; nothing was raced", file=out)
            return EXIT_UNAVAILABLE
    route_harness_logs(err, verbose=args.verbose)
    show_progress = not args.no_progress and err.isatty()
    try:
        report = run_race(cfg, progress=ProgressBar(err) if show_progress else None)
    except ValueError as exc:
        print(f"strict-singleton race: error: {scrub(str(exc), cfg.lock_url)}", file=err)
        return EXIT_USAGE
    except (RuntimeError, TimeoutError) as exc:
        print(f"strict-singleton race: the race could not run: {scrub(str(exc), cfg.lock_url)}", file=err)
        return EXIT_RACE_FAILED
    summaries = report.summaries()
    print(format_table(summaries), file=out)
    print(
        f"starter processes: {len(report.pids)} (pids {report.pids}); coordinator pid {report.coordinator_pid}; "
        f"max first-call spread in a round: {max((s.max_spread_ms for s in summaries), default=0):.2f} ms",
        file=out,
    )
    for s in summaries:
        if s.first_error and s.strategy != "strict":
            print(f"{s.strategy}: {s.errors} errors; first: {s.first_error}", file=out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.json}", file=out)
    if args.plot is not None:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}", file=out)
    status, reason = verdict(summaries)
    print(reason, file=out)
    return status


def entry_point() -> Any:
    """The ``strict-singleton`` console script: :func:`main` on ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()


__all__ = [
    "EXIT_OK",
    "EXIT_RACE_FAILED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_VIOLATION",
    "EXIT_WARNINGS",
    "entry_point",
    "main",
]
