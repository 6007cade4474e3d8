"""The race on the Azure Functions path: the docs' singleton HTTP starter against the strict one.

Each invocation does what the Functions host does for an HTTP trigger with a durable client
binding: it builds a new ``DurableOrchestrationClient`` from the binding JSON, then runs either

* ``naive``: the singleton article's Python code: ``get_status``, then ``start_new`` if there
  is no instance or it finished, answering 202 (``create_check_status_response``) or 409; or
* ``strict``: :class:`~strict_singleton.functions.DurableFunctionsStarter` with the same route
  semantics, answering with :meth:`~strict_singleton.functions.DurableFunctionsStarter.http_response`.

Invocations run as asyncio tasks in ``processes`` spawned processes, lined up per round by a
barrier, against a :class:`~strict_singleton.testing.functions_host.FunctionsHost` stand-in over
the in-memory Durable backend. Per round: the HTTP statuses answered and the instances the host
created. A round is a *violation* unless exactly one invocation answered 202 and exactly one
instance was created.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ORCHESTRATOR = "orch"
STRATEGIES = ("naive", "strict")


def http_request(instance_id: str) -> Any:
    import azure.functions as func

    url = f"http://localhost:7071/api/orchestrators/{ORCHESTRATOR}/{instance_id}"
    return func.HttpRequest(
        method="POST", url=url, body=b"", route_params={"functionName": ORCHESTRATOR, "instanceId": instance_id}
    )


async def naive_http_start(binding: str, instance_id: str) -> int:
    """The singleton article's Python HTTP starter (check, then start), as an HTTP status."""
    import azure.durable_functions as df

    client = df.DurableOrchestrationClient(binding)
    req = http_request(instance_id)
    existing_instance = await client.get_status(instance_id)
    done = [
        df.OrchestrationRuntimeStatus.Completed,
        df.OrchestrationRuntimeStatus.Failed,
        df.OrchestrationRuntimeStatus.Terminated,
        None,
    ]
    if existing_instance.runtime_status in done:
        instance_id = await client.start_new(ORCHESTRATOR, instance_id)
        return int(client.create_check_status_response(req, instance_id).status_code)
    return 409


async def strict_http_start(binding: str, instance_id: str, lock: Any, **options: Any) -> int:
    """The same route through :class:`DurableFunctionsStarter`, as an HTTP status (an error: 503)."""
    import azure.durable_functions as df

    from strict_singleton.errors import InvalidArgumentError, StrictSingletonError
    from strict_singleton.functions import DurableFunctionsStarter

    starter = DurableFunctionsStarter(df.DurableOrchestrationClient(binding), lock=lock, **options)
    try:
        result = await starter.start(ORCHESTRATOR, instance_id=instance_id)
    except InvalidArgumentError:
        return 400
    except StrictSingletonError:
        return 503
    return int(starter.http_response(http_request(instance_id), result).status_code)


@dataclass
class FunctionsRound:
    strategy: str
    profile: str
    instance_id: str
    statuses: Counter[int] = field(default_factory=Counter)
    created: int = 0

    @property
    def violation(self) -> bool:
        return self.statuses[202] != 1 or self.created != 1


@dataclass(frozen=True)
class _Spec:
    binding: str
    lock_url: str
    strategy: str
    tasks: int
    ids: tuple[str, ...]


def _process_main(spec: _Spec, barrier: Any, results: Any) -> None:
    asyncio.run(_process(spec, barrier, results))


async def _process(spec: _Spec, barrier: Any, results: Any) -> None:
    from strict_singleton.functions._client import forget_stale_session
    from strict_singleton.lock_backends import from_url

    forget_stale_session()
    lock = from_url(spec.lock_url, asynchronous=True)
    loop = asyncio.get_running_loop()
    for iid in spec.ids:
        await loop.run_in_executor(None, barrier.wait)
        if spec.strategy == "naive":
            calls = [naive_http_start(spec.binding, iid) for _ in range(spec.tasks)]
        else:
            calls = [strict_http_start(spec.binding, iid, lock) for _ in range(spec.tasks)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        # The docs' code lets the host's 500 "already exists" escape as an exception: HTTP 500.
        results.put((iid, [a if isinstance(a, int) else 500 for a in answers]))
    await lock.close()
    from strict_singleton.testing.functions_host import close_client_session

    await close_client_session()  # the 1.x client's process-wide aiohttp session


def run_rounds(
    host: Any, strategy: str, *, processes: int, tasks: int, rounds: int, lock_url: str, timeout: float = 120.0
) -> list[FunctionsRound]:
    """``rounds`` rounds of ``processes`` x ``tasks`` concurrent invocations of ``strategy`` on ``host``."""
    from strict_singleton.testing.functions_host import binding_json

    ids = tuple(f"fx-{strategy}-{uuid.uuid4().hex[:8]}-{r}" for r in range(rounds))
    spec = _Spec(binding=binding_json(host), lock_url=lock_url, strategy=strategy, tasks=tasks, ids=ids)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(spec, barrier, results), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    by_id = {iid: FunctionsRound(strategy, host.profile, iid) for iid in ids}
    try:
        for _ in range(processes * rounds):
            iid, statuses = results.get(timeout=timeout)
            by_id[iid].statuses.update(statuses)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"functions race processes failed with exit codes {bad}")
    counts = host.counts
    for rec in by_id.values():
        rec.created = counts.created[rec.instance_id]
    return [by_id[iid] for iid in ids]


def run_functions_race(
    *,
    profiles: tuple[str, ...] = ("reject", "anystate", "racy"),
    processes: int = 2,
    tasks: int = 8,
    rounds: int = 30,
    lock_url: str | None = None,
) -> list[FunctionsRound]:
    """Both strategies on each host profile; every round of each, in order."""
    from strict_singleton.testing.backend import DurableTestBackend
    from strict_singleton.testing.functions_host import FunctionsHost

    out: list[FunctionsRound] = []
    with tempfile.TemporaryDirectory(prefix="strict-singleton-functions-race-") as tmp:
        url = lock_url or f"file:{tmp}"
        with DurableTestBackend(profile="atomic") as backend:
            for profile in profiles:
                with FunctionsHost(backend, profile=profile) as host:  # type: ignore[arg-type]
                    for strategy in STRATEGIES:
                        out += run_rounds(host, strategy, processes=processes, tasks=tasks, rounds=rounds, lock_url=url)
    return out


def summary_lines(rounds: list[FunctionsRound]) -> list[str]:
    lines = []
    keys = sorted({(r.profile, r.strategy) for r in rounds}, key=lambda k: (k[0], STRATEGIES.index(k[1])))
    for profile, strategy in keys:
        mine = [r for r in rounds if (r.profile, r.strategy) == (profile, strategy)]
        statuses: Counter[int] = Counter()
        for r in mine:
            statuses.update(r.statuses)
        violations = sum(r.violation for r in mine)
        created = sum(r.created for r in mine)
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        lines.append(
            f"  {profile:<9} {strategy:<7} violations {violations}/{len(mine)} rounds; "
            f"instances created {created}; HTTP answers {{{shown}}}"
        )
    return lines
