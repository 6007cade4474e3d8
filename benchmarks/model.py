"""Multi-host scale of strict starts, on paper and by simulation.

A model, not a measurement. For each lock store (one Redis, a Redis Cluster, Redlock over
3 nodes, Azure Blob leases), for 1, 10 and 100 starter hosts and for two workloads
(distinct instance IDs; one hot ID), it computes the highest sustainable start rate, the
resource that caps it, and the p99 start latency at 50 % and 80 % of that rate:

* analytically: utilization of every resource; Redis nodes and the backend are M/G/1
  stations (Pollaczek-Khinchine), a host's cores M/D/c (Erlang C), a hot ID's lease an
  M/G/1 queue whose first customer in a busy period skips the hand-off (Welch), with a
  Cramer-Lundberg tail; latency distributions are composed on a grid (sums, Redlock's
  maximum over 3 nodes) and the p99 read off;
* by a seeded discrete-event simulation of the same system (FIFO servers, Poisson
  arrivals, fixed network delays, exponential Redis/backend/Blob service), which
  cross-checks the analytic figures (table "Simulation cross-check").

Run ``python -m benchmarks.model`` (a few seconds), or with ``--measure-redis`` to
re-measure the Redis server's CPU per script on a private redis-server first (needs
``redis-server`` and ``redis-benchmark`` on PATH; never touches port 6379).

Every parameter is in :class:`Params` with its source; per-call client costs are read
from ``benchmarks/results/latest.json`` when it is there (see :func:`from_latest`).
The narrative, the table and the caveats are in ``BENCHMARKS.md`` ("Multi-host scale").
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import random
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

LATEST = Path(__file__).parent / "results" / "latest.json"

# --------------------------------------------------------------------------- sources
SOURCES = {
    "blob-targets": "https://learn.microsoft.com/azure/storage/blobs/scalability-targets "
    "('Target request rate for a single blob: Up to 500 requests per second')",
    "account-targets": "https://learn.microsoft.com/azure/storage/common/scalability-targets-standard-account "
    "(default maximum request rate per GPv2/Blob storage account: 20,000 requests/s; 40,000 in listed "
    "large regions)",
    "dts": "https://learn.microsoft.com/azure/azure-functions/durable/durable-task-scheduler/"
    "durable-task-scheduler-billing (Dedicated: 2,000 actions/s per capacity unit, up to 3 CUs; "
    "Consumption: 500 actions/s; starting an orchestration is one action)",
    "cluster-pubsub": "classic PUBLISH is forwarded to every node of a Redis Cluster "
    "(https://github.com/Nordix/hiredis-cluster/issues/27, a maintainer: 'all messages are forwarded to all "
    "nodes'; https://redis.io/docs/manual/pubsub/ sharded pub/sub, Redis 7.0+, keeps them in one shard); "
    "measured here: the other primaries spend about 1.6 us per release",
    "latest": "benchmarks/results/latest.json floors (this repository's benchmark run)",
    "measured": "python -m benchmarks.model --measure-redis: server CPU per request from /proc while "
    "redis-benchmark drives a private redis-server 7.0 (2-core shared VM, 50 connections)",
}


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Params:
    """Every number the model uses. Times in milliseconds unless the name says us (microseconds)."""

    # Network: one round trip between a starter host and a store or the backend.
    rtt_ms: float = 0.2  # same-AZ; the tables also use 1.0

    # Durable backend. naive and strict both make exactly these 2 calls per start (status read,
    # schedule); after the planned change strict makes no third (visibility) call.
    backend_calls: int = 2
    backend_server_ms: float = 0.215  # per call, beyond the RTT: half of a loopback gRPC call [latest]
    backend_starts_per_s: float = math.inf  # a separate parameter; DTS: 2,000 actions/s per CU [dts]

    # Starter hosts (client CPU; capacity = host_cores / CPU per start).
    host_cores: float = 2.0  # like the benchmark VM
    our_code_ms: float = 0.019  # start() with a do-nothing client and no lock (BENCHMARKS.md)
    grpc_client_ms: float = 0.215  # client CPU per backend call: half of a loopback gRPC call [latest]
    redis_client_ms: float = 0.070  # per Redis script call: half of a raw acquire+release on loopback [latest]
    redlock_client_ms: float = 0.880  # per start: acquire (3 nodes + fence round) + release, thread pool [latest]
    blob_client_ms: float = 0.5  # client CPU per Blob HTTP call (assumption: azure-storage-blob pipeline)

    # Redis server: main-thread CPU per request, socket I/O included [measured] (2026-11-29, redis 7.0.15;
    # three runs, each the median of 3 x 60,000 requests: acquire 10.3-11.5, release 10.8-13.7, fence
    # 11.7-12.2 us; the VM was shared with other test runs, so these are on the high side).
    redis_acquire_us: float = 11.0  # ACQUIRE_SCRIPT, lease taken: SET NX PX + INCR + GET start record
    redis_release_us: float = 12.5  # RELEASE_RECORDING_SCRIPT: GET + DEL + SET start record PX + PUBLISH
    redis_fence_us: float = 12.0  # Redlock's RAISE_FENCE_SCRIPT on a granted node
    redis_sub_us: float = 0.22  # per pattern-subscribed host, per release (100 subscribers; deliveries batch)
    # Per host subscribed (SUBSCRIBE) to other IDs' release channels, per release: the per-ID
    # subscriptions a release does not match cost a dictionary miss, not a glob match per host.
    redis_other_sub_us: float = 0.0
    # Per primary, per PUBLISH forwarded over the Cluster bus: measured once on a local 3-primary
    # Cluster (releases sent to one primary, CPU of the two others per release).
    cluster_bus_us: float = 1.6

    # Azure Blob leases.
    blob_acquire_calls: int = 3  # acquire lease, get properties, set fencing metadata (caller's path)
    blob_release_calls: int = 1  # release (background)
    blob_call_ms: float = 1.77  # server part of one HTTP call, beyond the RTT: Azurite floor / 4 calls
    # minus blob_client_ms [latest]; real Azure is not published and likely slower
    blob_jitter_share: float = 0.5  # share of blob_call_ms that is exponential (assumption), rest fixed
    blob_per_blob_rps: float = 500.0  # target request rate for a single blob [blob-targets]
    blob_account_rps: float = 20_000.0  # default per storage account [account-targets]
    blob_poll_ms: float = 50.0  # the flow's first short wait (FIRST_WAIT), then the first probe interval
    blob_probe_max_ms: float = 1000.0  # _polled_waits.MAX_PROBE: the probe interval doubles up to this

    # Listener side of pub/sub (estimate): Python CPU per release message a host's listener thread parses.
    listener_msg_us: float = 30.0

    # Hot ID: work under the lease. 2 = status read + schedule (each start begins a new run); the
    # common "already running" answer holds it for 1 call.
    hot_backend_calls: int = 2

    def cpu_per_start_ms(self, store: Store) -> float:
        """Client CPU one start costs its host."""
        base = self.our_code_ms + self.backend_calls * self.grpc_client_ms
        if store.kind == "blob":
            return base + (self.blob_acquire_calls + self.blob_release_calls) * self.blob_client_ms
        if store.kind == "redlock":
            return base + self.redlock_client_ms
        return base + 2 * self.redis_client_ms


@dataclass(frozen=True)
class Store:
    name: str
    kind: str  # "redis" | "cluster" | "redlock" | "blob"
    nodes: int = 1


STORES: tuple[Store, ...] = (
    Store("Redis (1 primary)", "redis"),
    Store("Redis Cluster, 3 primaries", "cluster", 3),
    Store("Redis Cluster, 6 primaries", "cluster", 6),
    Store("Redlock, 3 nodes", "redlock", 3),
    Store("Azure Blob leases", "blob"),
)
HOSTS: tuple[int, ...] = (1, 10, 100)
WORKLOADS: tuple[str, ...] = ("distinct", "hot")
RTTS: tuple[float, ...] = (0.2, 1.0)


def from_latest(path: Path = LATEST, base: Params | None = None) -> tuple[Params, list[str]]:
    """Params with the per-call client costs of a benchmark run, and notes on what was read."""
    p = base or Params()
    notes: list[str] = []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return p, [f"{path.name} not found: stated defaults"]
    floors = data.get("floors", {})
    changes: dict[str, Any] = {}
    if "redis lease acquire+release" in floors:
        changes["redis_client_ms"] = floors["redis lease acquire+release"] / 2
    if "redlock lease acquire+release" in floors:
        changes["redlock_client_ms"] = floors["redlock lease acquire+release"]
    uncontended = data.get("uncontended", {})
    regime_a = uncontended.get("a", {}).get("rows") if isinstance(uncontended.get("a"), dict) else None
    rows = regime_a if isinstance(regime_a, dict) else uncontended  # regime (a): no injected latency
    naive = [x for row in rows.values() if isinstance(row, dict) for x in row.get("naive_p50", [])]
    if naive:
        per_call = statistics.median(naive) / p.backend_calls  # loopback: client + server, no RTT
        changes["grpc_client_ms"] = per_call / 2
        changes["backend_server_ms"] = per_call / 2
    if "blob lease acquire+release" in floors:
        calls = p.blob_acquire_calls + p.blob_release_calls
        changes["blob_call_ms"] = max(0.1, floors["blob lease acquire+release"] / calls - p.blob_client_ms)
    if changes:
        notes.append(
            f"from {path.name} ({data.get('started', '?')}): " + ", ".join(f"{k}={v:.3f}" for k, v in changes.items())
        )
    return replace(p, **changes), notes


# --------------------------------------------------------------------------- distributions on a grid
class Grid:
    """The distribution of a non-negative delay as masses on a uniform grid (step ``dt`` ms).

    Supports what the latency of one start is built from: fixed delays, exponential
    delays, an exponential with probability ``q`` (M/M/1 waiting), a uniform delay and
    the maximum of k independent copies (Redlock's fan-out). Mass pushed past the
    horizon is kept in the last cell, so quantiles are never too small.
    """

    def __init__(self, dt: float, n: int) -> None:
        self.dt = dt
        self.p = [0.0] * n
        self.p[0] = 1.0

    def copy(self) -> Grid:
        g = Grid(self.dt, 1)
        g.p = list(self.p)
        return g

    def fixed(self, d: float) -> Grid:
        k = round(d / self.dt)
        if k > 0:
            n = len(self.p)
            tail = sum(self.p[n - k :])
            self.p = [0.0] * k + self.p[: n - k]
            self.p[-1] += tail
        return self

    def exp(self, mean: float) -> Grid:
        if mean <= 0:
            return self
        a = math.exp(-self.dt / mean)
        out, prev = [], 0.0
        for x in self.p:  # convolution with the geometric kernel (1-a) a^j
            prev = a * prev + (1 - a) * x
            out.append(prev)
        out[-1] += max(0.0, 1.0 - sum(out))
        self.p = out
        return self

    def maybe_exp(self, prob: float, mean: float) -> Grid:
        if prob <= 0 or mean <= 0:
            return self
        other = self.copy().exp(mean)
        self.p = [(1 - prob) * x + prob * y for x, y in zip(self.p, other.p, strict=True)]
        return self

    def uniform(self, width: float) -> Grid:
        m = max(1, round(width / self.dt))
        out, window = [], 0.0
        for i, x in enumerate(self.p):
            window += x
            if i >= m:
                window -= self.p[i - m]
            out.append(window / m)
        out[-1] += max(0.0, 1.0 - sum(out))
        self.p = out
        return self

    def max_of(self, k: int) -> Grid:
        out, cum, prev = [], 0.0, 0.0
        for x in self.p:
            cum += x
            c = min(1.0, cum) ** k
            out.append(c - prev)
            prev = c
        self.p = out
        return self

    def add(self, other: Grid) -> Grid:
        """Convolution with another grid of the same step (small grids only: O(n^2))."""
        n = len(self.p)
        out = [0.0] * n
        for i, x in enumerate(self.p):
            if x:
                for j, y in enumerate(other.p[: n - i]):
                    out[i + j] += x * y
        out[-1] += max(0.0, 1.0 - sum(out))
        self.p = out
        return self

    def quantile(self, q: float) -> float:
        cum = 0.0
        for i, x in enumerate(self.p):
            cum += x
            if cum >= q:
                return i * self.dt
        return len(self.p) * self.dt


# --------------------------------------------------------------------------- the analytic model
@dataclass
class Resource:
    """One capacity: its demand per start (in its own unit) and its capacity (units per second)."""

    name: str
    per_start: float
    capacity: float

    def limit(self) -> float:
        return self.capacity / self.per_start if self.per_start > 0 else math.inf


@dataclass(frozen=True)
class Case:
    store: Store
    hosts: int
    workload: str  # "distinct" | "hot"
    rtt_ms: float


@dataclass
class Result:
    case: Case
    max_per_s: float
    bottleneck: str
    p99_ms: dict[float, float] = field(default_factory=dict)  # share of max_per_s -> analytic p99
    util_at_max: dict[str, float] = field(default_factory=dict)


def listeners(case: Case) -> int:
    """Hosts a release is delivered to: those waiting for that ID (each subscribes to the ID's
    channel while it waits). Hot: every host has callers waiting; distinct IDs: none."""
    return case.hosts if case.workload == "hot" else 0


def node_jobs(p: Params, case: Case) -> list[tuple[float, float]]:
    """Jobs the busiest Redis node serves per start: (jobs per start, mean service in ms).

    Distinct IDs spread evenly over a Cluster's primaries; each release's PUBLISH is
    forwarded to every other primary [cluster-pubsub]. Redlock's nodes each serve every
    start (acquire, fence, release); its waiters listen on node 0.
    """
    s = case.store
    release = (p.redis_release_us + listeners(case) * p.redis_sub_us) / 1000
    if s.kind == "redis":
        return [(1.0, p.redis_acquire_us / 1000), (1.0, release)]
    if s.kind == "cluster":
        n = s.nodes
        return [(1 / n, p.redis_acquire_us / 1000), (1 / n, release), ((n - 1) / n, p.cluster_bus_us / 1000)]
    if s.kind == "redlock":
        return [(1.0, p.redis_acquire_us / 1000), (1.0, p.redis_fence_us / 1000), (1.0, release)]
    return []


def store_node_us(p: Params, case: Case) -> float:
    """Redis CPU (us) per start on the busiest node."""
    return 1000 * sum(k * m for k, m in node_jobs(p, case))


def resources(p: Params, case: Case) -> list[Resource]:
    """Every capacity a start draws on (a hot ID's lease is added by :func:`hot_limit`)."""
    s = case.store
    out = [Resource("starter host CPU", p.cpu_per_start_ms(s), 1000.0 * p.host_cores * case.hosts)]
    if s.kind == "blob":
        calls = p.blob_acquire_calls + p.blob_release_calls
        out.append(Resource("storage account request target", calls, p.blob_account_rps))
    else:
        out.append(
            Resource("Redis CPU" + (" (per primary)" if s.kind == "cluster" else ""), store_node_us(p, case), 1e6)
        )
    out.append(Resource("Durable backend", 1.0, p.backend_starts_per_s))
    return out


@dataclass(frozen=True)
class HotService:
    """One hot ID's lease as a server; a waiter's service runs from the previous release to its own.

    hand-off: the waiter learns of the release (Redis pub/sub: half an RTT; Blob across
    processes: its next poll, uniform over the poll interval; same process: at once), reads
    the status (the flow reads after every wake-up), and its acquire travels to the store.
    hold: the grant travels back, Redlock's fence round or Blob's two metadata calls, the
    status read and the schedule (the caller's answer), then the release reaches the store.
    """

    handoff: float  # fixed ms: wake + status read + acquire leg
    poll: float  # width (ms) of the uniform wait for the waiter's next poll (0: notified)
    first_leg: float  # fixed ms: a caller's own acquire leg on arrival
    acquire: float  # exponential mean (ms): the store's acquire
    hold: float  # fixed ms: grant -> answer
    hold_exps: tuple[float, ...]  # exponential means (ms) between grant and answer
    release_leg: float  # fixed ms: answer -> release takes effect
    release: float  # exponential mean (ms): the store's release

    def exps(self) -> list[float]:
        return [self.acquire, *self.hold_exps, self.release]

    def first(self) -> float:
        """Mean service of a caller that finds the lease free: no hand-off."""
        return self.hold + self.release_leg + sum(self.exps())

    def mean(self) -> float:
        """Mean service of a caller that waited: hand-off included (what caps the rate)."""
        return self.first() + self.handoff + self.poll / 2

    def mgf(self, x: float) -> float:
        """E[exp(x X)] of a waiter's service X (x below 1 / the largest exponential mean)."""
        value = math.exp(x * (self.handoff + self.hold + self.release_leg))
        for m in self.exps():
            value /= 1 - x * m
        if self.poll and x > 0:
            value *= (math.exp(x * self.poll) - 1) / (x * self.poll)
        return value

    def moments(self, lam_per_ms: float) -> tuple[float, float, float]:
        """(P(wait), mean, second moment) of the service mix at ``lam_per_ms``.

        Welch's M/G/1 with an exceptional first service: a caller that finds the lease
        free (probability pi0) has no hand-off. pi0 = (1 - rho) / (1 - rho + lam E[X0]).
        """
        var = sum(m * m for m in self.exps())
        rho = lam_per_ms * self.mean()
        x0 = self.first()
        pi0 = (1 - rho) / (1 - rho + lam_per_ms * x0) if rho < 1 else 0.0
        m1 = pi0 * x0 + (1 - pi0) * self.mean()
        m2 = pi0 * (var + x0 * x0) + (1 - pi0) * (var + self.poll**2 / 12 + self.mean() ** 2)
        return 1 - pi0, m1, m2


def hot_service(p: Params, case: Case) -> HotService:
    s, rtt = case.store, case.rtt_ms
    backend_call = rtt + p.backend_server_ms + p.grpc_client_ms
    cross = case.hosts > 1
    read_and_schedule = p.hot_backend_calls * backend_call
    if s.kind == "blob":
        jitter = p.blob_call_ms * p.blob_jitter_share
        fixed = p.blob_call_ms - jitter
        extra = p.blob_acquire_calls - 1  # the metadata read and write, under the lease
        return HotService(
            handoff=backend_call + rtt / 2 + fixed,
            poll=p.blob_poll_ms if cross else 0.0,
            first_leg=rtt / 2 + fixed,
            acquire=jitter,
            hold=rtt / 2 + extra * (rtt + fixed) + read_and_schedule,
            hold_exps=(jitter,) * extra,
            release_leg=rtt / 2 + fixed,
            release=jitter,
        )
    wake = 0.0 if (s.kind == "redlock" and not cross) else rtt / 2  # Redlock wakes in-process waiters directly
    fence = s.kind == "redlock"
    return HotService(
        handoff=wake + backend_call + rtt / 2,
        poll=0.0,
        first_leg=rtt / 2,
        acquire=p.redis_acquire_us / 1000,
        hold=rtt / 2 + (rtt if fence else 0.0) + read_and_schedule,
        hold_exps=(p.redis_fence_us / 1000,) if fence else (),
        release_leg=rtt / 2,
        release=(p.redis_release_us + listeners(case) * p.redis_sub_us) / 1000,
    )


def hot_wait_mean(svc: HotService, lam_per_ms: float) -> float:
    """Mean wait (ms) at the lease: Pollaczek-Khinchine over the service mix."""
    busy, _m1, m2 = svc.moments(lam_per_ms)
    return math.inf if busy >= 1 else lam_per_ms * m2 / (2 * (1 - busy))


def hot_limit(p: Params, case: Case) -> tuple[float, str]:
    """Highest start rate (per s) of one hot ID, and what caps it: the lease, or the per-blob target."""
    svc = hot_service(p, case)
    lease = 1000.0 / svc.mean()
    if case.store.kind != "blob":
        return lease, "per-ID lease hold (RTTs + backend calls)"
    what = "per-ID lease hold (50 ms polls)" if case.hosts > 1 else "per-ID lease hold (Blob calls)"
    calls = p.blob_acquire_calls + p.blob_release_calls
    poll_s = p.blob_poll_ms / 1000 if case.hosts > 1 else math.inf

    def per_blob(lam: float) -> float:  # 4 calls per start + one refused acquire per poll of each waiter
        return lam * (calls + hot_wait_mean(svc, lam / 1000) / 1000 / poll_s)

    hi = lease * (1 - 1e-9)
    if per_blob(hi) <= p.blob_per_blob_rps:
        return lease, what
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if per_blob(mid) <= p.blob_per_blob_rps else (lo, mid)
    if lo >= 0.95 * lease:  # the waiters' polls reach the target only as the lease saturates
        return lo, what + "; polls near the per-blob target"
    return lo, "per-blob request target (500/s)"


def _waiting(grid: Grid, lam_per_ms: float, jobs: list[tuple[float, float]]) -> Grid:
    """M/G/1 wait at a node with exponential job classes: 0 w.p. 1 - rho, else exponential (P-K mean)."""
    rho = sum(lam_per_ms * k * m for k, m in jobs)
    if not 0 < rho < 1:
        return grid
    wq = sum(lam_per_ms * k * 2 * m * m for k, m in jobs) / (2 * (1 - rho))
    return grid.maybe_exp(rho, wq / rho)


def decay_rate(lam_per_ms: float, mgf: Callable[[float], float], upper: float) -> float:
    """Cramer-Lundberg: the theta > 0 with lam (M(theta) - 1) = theta; M/G/1 waits fall off as exp(-theta t)."""
    lo, hi = 0.0, upper
    for _ in range(80):
        mid = (lo + hi) / 2
        if lam_per_ms * (mgf(mid) - 1) < mid:
            lo = mid
        else:
            hi = mid
    return lo


def latency_grid(p: Params, case: Case, lam: float, n: int = 3000) -> Grid:
    """The caller's latency distribution (ms) at ``lam`` starts/s, analytically."""
    s, rtt = case.store, case.rtt_ms
    cpu = p.cpu_per_start_ms(s)
    lam_ms = lam / 1000
    if case.workload == "hot":
        svc = hot_service(p, case)
        rho = svc.moments(lam_ms)[0]  # P(the lease is held on arrival)
        cond = 0.0
        if 0 < rho < 1:  # given a wait: exponential, the heavier of the P-K mean and the Cramer-Lundberg tail
            theta = decay_rate(lam_ms, svc.mgf, min(0.999 / max(svc.exps()), 50 / svc.mean()))
            cond = max(hot_wait_mean(svc, lam_ms) / rho, 1 / theta)
        pre = cpu - p.hot_backend_calls * p.grpc_client_ms  # host CPU before the acquire
        base = pre + svc.first_leg + svc.hold
        horizon = base + svc.handoff + svc.poll + 8 * (sum(svc.exps()) + cond) + 1
        g = Grid(horizon / n, n).fixed(base).exp(svc.acquire)
        for m in svc.hold_exps:
            g.exp(m)
        if 0 < rho < 1:  # a caller that finds the lease held also waits for the hand-off
            waited = g.copy().fixed(svc.handoff).uniform(svc.poll).exp(cond)
            g.p = [(1 - rho) * x + rho * y for x, y in zip(g.p, waited.p, strict=True)]
        return g
    # Distinct IDs: host CPU (M/D/c), the lock's caller-path calls, the backend's two calls.
    backend_call = rtt + p.backend_server_ms
    be_s = 1000.0 / (p.backend_calls * p.backend_starts_per_s) if math.isfinite(p.backend_starts_per_s) else 0.0
    be_jobs = [(float(p.backend_calls), be_s)] if be_s else []
    jobs = node_jobs(p, case)
    rho = sum(lam_ms * k * m for k, m in jobs)
    wq_cond = sum(lam_ms * k * 2 * m * m for k, m in jobs) / (2 * (1 - rho)) / rho if 0 < rho < 1 else 0.0
    if s.kind == "blob":
        jitter = p.blob_call_ms * p.blob_jitter_share
        lock_fixed = p.blob_acquire_calls * (rtt + p.blob_call_ms - jitter)
        horizon = lock_fixed + 12 * jitter * p.blob_acquire_calls
    else:
        lock_fixed = rtt * (2 if s.kind == "redlock" else 1)
        horizon = lock_fixed + 30 * (wq_cond + p.redis_fence_us / 1000)
    horizon += 3 * cpu + p.backend_calls * (backend_call + 30 * be_s) + 1
    dt = horizon / n
    if s.kind == "redlock":  # two fan-out rounds, each as slow as the slowest of the 3 nodes
        m = max(8, math.ceil(12 * (wq_cond + p.redis_fence_us / 1000) / dt))
        rounds = []
        for own in (p.redis_acquire_us, p.redis_fence_us):
            node = Grid(dt, 2 * m)
            _waiting(node, lam_ms, jobs).exp(own / 1000)
            rounds.append(node.max_of(s.nodes))
        lock = rounds[0].add(rounds[1])
        g = Grid(dt, n)
        g.p = lock.p + [0.0] * (n - len(lock.p))
    else:
        g = Grid(dt, n)
        if s.kind == "blob":
            for _ in range(p.blob_acquire_calls):
                g.exp(p.blob_call_ms * p.blob_jitter_share)
        else:
            _waiting(g, lam_ms, jobs).exp(p.redis_acquire_us / 1000)
    g.fixed(lock_fixed + cpu + p.backend_calls * backend_call)
    _host_wait(g, p, case, lam)
    for _ in range(p.backend_calls):
        _waiting(g, lam_ms, be_jobs).exp(be_s)
    return g


def _host_wait(grid: Grid, p: Params, case: Case, lam: float) -> Grid:
    """Waiting for a core of one host (a Poisson share of the starts, c cores, fixed CPU per start).

    Probability of waiting: Erlang C. Given a wait, exponential with the larger of the
    M/D/c mean (Allen-Cunneen: half of M/M/c's) and the light-traffic mean s/(c+1) (the
    first of c busy cores to finish). Within 10 % of the simulation's p99 in the cross-checks.
    """
    c = max(1, round(p.host_cores))
    s_ms = p.cpu_per_start_ms(case.store)
    a = lam / case.hosts / 1000 * s_ms  # offered load in cores
    rho = a / c
    if not 0 < rho < 1:
        return grid
    term = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) / (1 - rho)
    return grid.maybe_exp(top / (term + top), max(s_ms / (c + 1), s_ms / (c * (1 - rho)) / 2))


def analyze(p: Params, case: Case, loads: Sequence[float] = (0.5, 0.8)) -> Result:
    res = resources(p, case)
    limits = [(r.limit(), r.name) for r in res]
    if case.workload == "hot":
        limits.append(hot_limit(p, case))
    best, name = min(limits)
    util = {r.name: best / r.limit() for r in res if math.isfinite(r.limit())}
    if case.workload == "hot":
        util["per-ID lease"] = best * hot_service(p, case).mean() / 1000
    out = Result(case, best, name, util_at_max=util)
    for share in loads:
        out.p99_ms[share] = latency_grid(p, case, share * best).quantile(0.99)
    return out


# --------------------------------------------------------------------------- the simulation
@dataclass
class SimResult:
    p99_ms: float
    p50_ms: float
    throughput: float  # completed starts per second over the run
    busiest: float  # measured utilization of the busiest server (host cores, Redis nodes, backend, lease)


class _Station:
    """FIFO server with ``servers`` identical servers; visits must be offered in time order."""

    def __init__(self, servers: int = 1) -> None:
        self.free_at = [0.0] * servers
        self.busy = 0.0

    def visit(self, t: float, service: float) -> float:
        i = min(range(len(self.free_at)), key=self.free_at.__getitem__)
        done = max(t, self.free_at[i]) + service
        self.free_at[i] = done
        self.busy += service
        return done


def simulate(
    p: Params,
    case: Case,
    lam: float,
    *,
    starts: int = 6000,
    seed: int = 12,
    deterministic_service: bool = False,
) -> SimResult:
    """Discrete-event run of ``starts`` Poisson starts at ``lam`` per second (times in ms).

    Host CPU is deterministic; Redis, backend and Blob service times are exponential
    (or deterministic with ``deterministic_service``); network delays are fixed.
    """
    rng = random.Random(seed)

    def draw(mean: float) -> float:
        if mean <= 0:
            return 0.0
        return mean if deterministic_service else rng.expovariate(1.0 / mean)

    if case.workload == "hot":
        return _simulate_hot(p, case, lam, starts, rng, draw)
    s, rtt = case.store, case.rtt_ms
    hosts = [_Station(max(1, round(p.host_cores))) for _ in range(case.hosts)]
    nodes = [_Station() for _ in range(max(1, s.nodes))]
    backend = _Station()
    cpu = p.cpu_per_start_ms(s)
    be_s = 1000.0 / (p.backend_calls * p.backend_starts_per_s) if math.isfinite(p.backend_starts_per_s) else 0.0
    jitter = p.blob_call_ms * p.blob_jitter_share
    release = (p.redis_release_us + listeners(case) * p.redis_sub_us) / 1000
    events: list[tuple[float, int, int, int]] = []  # (time, start, step, node); start numbers break ties
    born: list[float] = []
    host_of = [rng.randrange(case.hosts) for _ in range(starts)]  # a Poisson share per host
    t = 0.0
    for i in range(starts):
        t += rng.expovariate(lam / 1000)
        born.append(t)
        events.append((t, i, 0, rng.randrange(len(nodes)) if s.kind == "cluster" else 0))
    heapq.heapify(events)
    done = [0.0] * starts
    first_backend, last_backend = 10, 10 + p.backend_calls - 1
    # steps: 0 host CPU | 1 acquire reaches the store | 2 Redlock's fence round reaches the nodes |
    # 10.. backend calls | 30 answered | 40 release reaches the store | 41 Cluster bus copies arrive
    while events:
        t, i, step, node = heapq.heappop(events)
        nxt: tuple[float, int] | None = None
        if step == 0:
            end = hosts[host_of[i]].visit(t, cpu)
            if s.kind == "blob":
                calls = (rtt + p.blob_call_ms - jitter + draw(jitter) for _ in range(p.blob_acquire_calls))
                nxt = (end + sum(calls), first_backend)
            else:
                nxt = (end + rtt / 2, 1)
        elif step in (1, 2):
            own = (p.redis_acquire_us if step == 1 else p.redis_fence_us) / 1000
            targets = nodes if s.kind == "redlock" else [nodes[node]]
            end = max(nd.visit(t, draw(own)) for nd in targets)
            nxt = (end + rtt, 2) if (s.kind == "redlock" and step == 1) else (end + rtt / 2, first_backend)
        elif first_backend <= step <= last_backend:
            end = t + rtt / 2 + p.backend_server_ms
            if be_s:
                end = backend.visit(end, draw(be_s))
            nxt = (end + rtt / 2, step + 1 if step < last_backend else 30)
        elif step == 30:
            done[i] = t
            if s.kind != "blob":
                nxt = (t + rtt / 2, 40)
        elif step == 40:
            targets = nodes if s.kind == "redlock" else [nodes[node]]
            end = max(nd.visit(t, draw(release)) for nd in targets)
            if s.kind == "cluster" and s.nodes > 1:
                nxt = (end, 41)
        elif step == 41:
            for k, nd in enumerate(nodes):
                if k != node:
                    nd.visit(t, draw(p.cluster_bus_us / 1000))
        if nxt is not None:
            heapq.heappush(events, (nxt[0], i, nxt[1], node))
    servers = [*hosts, backend] + (nodes if s.kind != "blob" else [])
    return _summary(born, done, servers)


def _summary(born: list[float], done: list[float], servers: list[_Station], extra_busy: float = 0.0) -> SimResult:
    n = len(born)
    lat = sorted(d - b for b, d in zip(born[n // 10 :], done[n // 10 :], strict=True))  # after a warm-up
    span = max(done) - born[0]
    busiest = max([st.busy / span / len(st.free_at) for st in servers] + [extra_busy / span])
    t1, t2 = born[n // 5], born[4 * n // 5]  # answers per second in the middle of the run
    return SimResult(
        p99_ms=lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        p50_ms=lat[len(lat) // 2],
        throughput=sum(1 for d in done if t1 <= d < t2) / (t2 - t1) * 1000,
        busiest=busiest,
    )


def _simulate_hot(
    p: Params, case: Case, lam: float, starts: int, rng: random.Random, draw: Callable[[float], float]
) -> SimResult:
    """One instance ID, served first come first served at its lease.

    A caller that finds the lease free takes it at once; one that finds it held is handed
    it after the release (pub/sub, or its next poll), and the lease waits for it meanwhile
    (real waiters race for it instead: throughput similar, tail latency worse).
    """
    svc = hot_service(p, case)
    hosts = [_Station(max(1, round(p.host_cores))) for _ in range(case.hosts)]
    pre = p.cpu_per_start_ms(case.store) - p.hot_backend_calls * p.grpc_client_ms
    born: list[float] = []
    t = 0.0
    for _ in range(starts):
        t += rng.expovariate(lam / 1000)
        born.append(t)
    host_of = [rng.randrange(case.hosts) for _ in range(starts)]
    at_lease = sorted((hosts[host_of[i]].visit(b, pre) + svc.first_leg, i) for i, b in enumerate(born))
    done = [0.0] * starts
    free_at, busy = 0.0, 0.0
    for at, i in at_lease:
        if at >= free_at:  # free: no hand-off
            grant = at + draw(svc.acquire)
            busy_from = grant
        else:
            poll = rng.uniform(0, svc.poll) if svc.poll else 0.0
            grant = free_at + poll + svc.handoff + draw(svc.acquire)
            busy_from = free_at
        done[i] = grant + svc.hold + sum(draw(m) for m in svc.hold_exps)
        free_at = done[i] + svc.release_leg + draw(svc.release)
        busy += free_at - busy_from
    return _summary(born, done, hosts, extra_busy=busy)


# --------------------------------------------------------------------------- Redis measurement
# The project's scripts as of the planned change (copies: the model must import without redis-py):
# the acquire also returns the start record; the release stores it (about 60 bytes) and wakes
# waiters. Release and fence are preceded by a SET so the token always matches: the figures are
# conservative by one SET (about 1 us).
ACQUIRE = (
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return {redis.call('INCR', KEYS[2]), redis.call('GET', KEYS[3])}\nend\nreturn {0}\n"
)
RELEASE_WITH_RECORD = (
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', 30000)\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])\n"
    "  redis.call('PUBLISH', ARGV[2], '1')\n  return 1\nend\nreturn 0\n"
)
RAISE_FENCE = (
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', 30000)\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  local current = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "  if current < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end\n"
    "  return 1\nend\nreturn 0\n"
)
RECORD = "1:123456:1764400000000000:1764300000000000:1764400030000000"
PATTERNS = ("strict-singleton:{*}:released", "strict-singleton:#{*}:released:*")


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _call(port: int, *args: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_resp(*args))
        data = sock.recv(65536).decode()
    if data.startswith("-"):
        raise RuntimeError(data.strip())
    return data.split("\r\n")[1] if data.startswith("$") else data[1:].strip()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_redis(requests: int = 60_000, subscribers: int = 100) -> dict[str, float]:
    """Server CPU (us) per script call on a private redis-server; and per subscriber per release."""
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"--measure-redis needs {tool} on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if port == 6379:  # pragma: no cover - the kernel does not hand out 6379 for port 0 in practice
        raise SystemExit("refusing port 6379")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    socks: list[socket.socket] = []
    drainer: threading.Thread | None = None
    try:
        for _ in range(100):
            try:
                _call(port, "PING")
                break
            except OSError:
                time.sleep(0.05)
        sha = {
            name: _call(port, "SCRIPT", "LOAD", src)
            for name, src in (("acquire", ACQUIRE), ("release", RELEASE_WITH_RECORD), ("fence", RAISE_FENCE))
        }
        k = "strict-singleton:{__rand_int__}"
        commands = {
            "acquire": [sha["acquire"], "3", f"{k}:lock", f"{k}:fence", f"{k}:start", "tok", "30000"],
            "release": [sha["release"], "2", f"{k}:lock", f"{k}:start", "tok", f"{k}:released", RECORD, "5000"],
            "fence": [sha["fence"], "2", f"{k}:lock", f"{k}:fence", "tok", "7"],
        }

        def run(args: list[str], n: int) -> float:
            before = _cpu_seconds(server.pid)
            subprocess.run(
                [
                    "redis-benchmark",
                    "-p",
                    str(port),
                    "-n",
                    str(n),
                    "-c",
                    "50",
                    "-r",
                    "100000000",
                    "-q",
                    "EVALSHA",
                    *args,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            return (_cpu_seconds(server.pid) - before) / n * 1e6

        out = {
            f"redis_{name}_us": statistics.median(run(a, requests) for _ in range(3)) for name, a in commands.items()
        }
        sel = selectors.DefaultSelector()
        for _ in range(subscribers):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(_resp("PSUBSCRIBE", *PATTERNS))
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            socks.append(sock)

        def drain() -> None:
            while not stop.is_set():
                for key, _ in sel.select(0.1):
                    with contextlib.suppress(OSError):
                        key.fileobj.recv(1 << 20)  # type: ignore[union-attr]

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        time.sleep(0.3)
        with_subs = statistics.median(run(commands["release"], requests // 3) for _ in range(3))
        out["redis_sub_us"] = max(0.0, (with_subs - out["redis_release_us"]) / subscribers)
        # The same hosts subscribed per ID instead, each to another ID's channel than the releases'.
        for i, sock in enumerate(socks):
            sock.setblocking(True)
            sock.sendall(_resp("PUNSUBSCRIBE") + _resp("SUBSCRIBE", f"strict-singleton:{{other-{i}}}:released"))
            sock.setblocking(False)
        time.sleep(0.3)
        scoped = statistics.median(run(commands["release"], requests // 3) for _ in range(3))
        out["redis_other_sub_us"] = max(0.0, (scoped - out["redis_release_us"]) / subscribers)
        return out
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(timeout=5)
        for sock in socks:
            sock.close()
        server.terminate()
        server.wait(timeout=10)


# --------------------------------------------------------------------------- report
def fmt_rate(x: float) -> str:
    return "unbounded" if not math.isfinite(x) else f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(p: Params) -> list[str]:
    rows = [
        "| store | hosts | workload | max starts/s (0.2 / 1 ms RTT) | bottleneck | p99 ms at 50 % (0.2 / 1) "
        "| p99 ms at 80 % (0.2 / 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for store in STORES:
        for hosts in HOSTS:
            for workload in WORKLOADS:
                r = [analyze(replace(p, rtt_ms=rtt), Case(store, hosts, workload, rtt)) for rtt in RTTS]
                names = sorted({x.bottleneck for x in r})
                rows.append(
                    f"| {store.name} | {hosts} | {'distinct IDs' if workload == 'distinct' else 'one hot ID'} | "
                    + " / ".join(fmt_rate(x.max_per_s) for x in r)
                    + f" | {'; '.join(names)} | "
                    + " / ".join(fmt_ms(x.p99_ms[0.5]) for x in r)
                    + " | "
                    + " / ".join(fmt_ms(x.p99_ms[0.8]) for x in r)
                    + " |"
                )
    return rows


def ceilings(p: Params) -> list[str]:
    """Each resource's own ceiling, independent of the others."""
    rows = [
        "| store | store ceiling, distinct IDs (starts/s) | per host (client CPU) "
        "| one hot ID (0.2 / 1 ms RTT, 10 hosts) |",
        "|---|---|---|---|",
    ]
    for store in STORES:
        case = Case(store, 10, "distinct", 0.2)
        res = {r.name: r for r in resources(p, case)}
        store_limit = min(r.limit() for n, r in res.items() if n not in ("starter host CPU", "Durable backend"))
        hot = [hot_limit(replace(p, rtt_ms=rtt), Case(store, 10, "hot", rtt))[0] for rtt in RTTS]
        per_host = 1000.0 * p.host_cores / p.cpu_per_start_ms(store)
        rows.append(
            f"| {store.name} | {fmt_rate(store_limit)} | {fmt_rate(per_host)} | "
            + " / ".join(f"{x:,.0f}" for x in hot)
            + " |"
        )
    return rows


CHECK_CASES: tuple[tuple[Store, int, str], ...] = (
    (STORES[0], 100, "distinct"),
    (STORES[2], 100, "distinct"),
    (STORES[3], 100, "distinct"),
    (STORES[4], 1, "distinct"),
    (STORES[0], 10, "hot"),
    (STORES[4], 10, "hot"),
)


def cross_check(p: Params, starts: int = 20_000) -> list[str]:
    rows = [
        "| case (0.2 ms RTT) | analytic max starts/s | p99 ms at 50 %: analytic / sim | p99 ms at 80 %: analytic / sim "
        "| utilization of the bottleneck at 80 %: model / sim |",
        "|---|---|---|---|---|",
    ]
    for store, hosts, workload in CHECK_CASES:
        case = Case(store, hosts, workload, p.rtt_ms)
        a = analyze(p, case)
        sims = {share: simulate(p, case, share * a.max_per_s, starts=starts) for share in (0.5, 0.8)}
        # the hot ID's lease is busy from a release to the next (hand-off included): Welch's mix
        model_util = 0.8 if workload == "distinct" else hot_service(p, case).moments(0.8 * a.max_per_s / 1000)[0]
        rows.append(
            f"| {store.name}, {hosts} host{'s' if hosts > 1 else ''}, {workload} | {a.max_per_s:,.0f} | "
            f"{fmt_ms(a.p99_ms[0.5])} / {fmt_ms(sims[0.5].p99_ms)} | "
            f"{fmt_ms(a.p99_ms[0.8])} / {fmt_ms(sims[0.8].p99_ms)} | "
            f"{model_util:.2f} / {sims[0.8].busiest:.2f} |"
        )
    return rows


def blob_wave_rates(p: Params, hosts: int, hold_ms: float, seed: int = 7) -> tuple[float, float, float]:
    """Requests to one blob while a wave's winner holds its lease for ``hold_ms``: (before, the mean
    rate when each waiting caller re-tried every ``blob_poll_ms`` with a refused acquire, per caller;
    after, the mean rate with one prober per host; after, the busiest 100 ms window).

    After, per host: its first acquire (refused; the refusal is trusted past the flow's first short
    wait, so the acquire after it is not sent), then probes at pauses drawn from the upper half of
    an interval doubling from ``blob_poll_ms`` to ``blob_probe_max_ms``, the last one seeing it free.
    Arrivals spread over one round trip; seeded, so the figures repeat."""
    rng = random.Random(seed)
    times: list[float] = []
    for _ in range(hosts):
        t = rng.uniform(0.0, p.rtt_ms)
        times.append(t)
        interval = p.blob_poll_ms
        while t < hold_ms:
            t += interval * rng.uniform(0.5, 1.0)
            times.append(t)
            interval = min(2 * interval, p.blob_probe_max_ms)
    before = 1000.0 / p.blob_poll_ms * hosts  # per waiting caller: one refused acquire per poll on each host
    after = sum(1 for x in times if x <= hold_ms) / (hold_ms / 1000.0)
    peak = max(sum(1 for x in times if w <= x < w + 100.0) for w in range(0, int(hold_ms), 10)) * 10.0
    return before, after, peak


def notes(p: Params) -> list[str]:
    out = []
    for dts in (2000.0, 6000.0):
        capped = [
            (s.name, analyze(replace(p, backend_starts_per_s=dts), Case(s, 100, "distinct", 0.2), loads=()).max_per_s)
            for s in STORES
        ]
        out.append(
            f"- Durable backend at {dts:,.0f} starts/s: 100-host maxima become "
            + ", ".join(f"{n} {x:,.0f}" for n, x in capped)
        )
    base = analyze(p, Case(STORES[0], 100, "distinct", 0.2), loads=()).max_per_s
    hot_case = Case(STORES[0], 100, "hot", 0.2)
    all_listen = 1e6 / store_node_us(p, hot_case)
    scoped = 1e6 / (store_node_us(p, Case(STORES[0], 100, "distinct", 0.2)) + 100 * p.redis_other_sub_us)
    out.append(
        f"- Redis release delivery, 100 hosts, distinct IDs. Before (each host kept a pattern subscription "
        f"matching every ID's release channel from its first wait): every release went to all 100, one Redis "
        f"fell from {base:,.0f} to {all_listen:,.0f} starts/s, and each host's listener parsed the whole "
        f"fleet's releases: at {all_listen:,.0f}/s and {p.listener_msg_us:.0f} us each (estimate), "
        f"{all_listen * p.listener_msg_us / 1e6:.1f} cores per host. Now (a host subscribes to an ID's channel "
        f"only while a caller waits for it): a release goes to the hosts waiting for that ID only, none here; "
        f"100 hosts subscribed to other IDs cost {p.redis_other_sub_us:.3f} us per release each, so one Redis "
        f"serves {scoped:,.0f} starts/s and no host parses a release it does not wait for. A hot ID's wave "
        f"still reaches each of its waiting hosts once per release, as it must."
    )
    for hold in (200.0, 1000.0, 5000.0):
        old_rps, new_rps, new_peak = blob_wave_rates(p, 100, hold)
        out.append(
            f"- Blob, a wave from 100 hosts on one ID whose winner holds the lease {hold:,.0f} ms: requests to "
            f"the blob while it is held, when every waiter re-tried every {p.blob_poll_ms:.0f} ms (before): "
            f"{old_rps:,.0f}/s per waiting caller per host; with one prober per host backing off "
            f"({p.blob_poll_ms / 2:.0f}-{p.blob_poll_ms:.0f} ms doubling to {p.blob_probe_max_ms:,.0f} ms): "
            f"{new_rps:,.0f}/s on average, {new_peak:,.0f}/s in the busiest 100 ms (the first acquires, together); "
            f"status reads: about 2 per caller, not one per poll (target {p.blob_per_blob_rps:.0f}/s per blob)."
        )
    slow_backend = replace(p, backend_server_ms=5.0)
    hot = [analyze(slow_backend, Case(st, 10, "hot", 0.2), loads=()).max_per_s for st in (STORES[0], STORES[4])]
    out.append(
        f"- The hot-ID bound is mostly the backend's own latency: with 5 ms per backend call (instead of "
        f"{p.backend_server_ms:.2f} ms) one hot ID manages {hot[0]:,.0f} starts/s on Redis, {hot[1]:,.0f} on Blob."
    )
    c = Case(STORES[0], 1, "distinct", 1.0)
    lam = 0.8 * analyze(replace(p, rtt_ms=1.0), c, loads=()).max_per_s
    mean_lat = latency_grid(replace(p, rtt_ms=1.0), c, lam).quantile(0.5)
    out.append(
        f"- Concurrency a host needs (Little's law) at 1 ms RTT, Redis, 80 % of one host's "
        f"{lam / 0.8:,.0f}/s: about {lam * mean_lat / 1000:.0f} starts in flight."
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure-redis", action="store_true", help="re-measure the Redis CPU per script first")
    ap.add_argument("--no-latest", action="store_true", help="ignore benchmarks/results/latest.json")
    ap.add_argument("--starts", type=int, default=20_000, help="simulated starts per cross-check run")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    p, read = (Params(), ["defaults (--no-latest)"]) if args.no_latest else from_latest()
    if args.measure_redis:
        measured: dict[str, Any] = dict(measure_redis())
        p = replace(p, **measured)
        read.append("measured now: " + ", ".join(f"{k}={v:.2f}" for k, v in measured.items()))
    print("# Scale model for strict starts (python -m benchmarks.model)\n")
    print("Parameters: " + "; ".join(read))
    print(
        f"Redis CPU us: acquire {p.redis_acquire_us:.2f}, release+record {p.redis_release_us:.2f}, "
        f"fence {p.redis_fence_us:.2f}, per pattern subscriber {p.redis_sub_us:.2f}, per other-ID subscriber "
        f"{p.redis_other_sub_us:.3f}, Cluster bus {p.cluster_bus_us:.2f}; "
        "host CPU ms per start: " + ", ".join(f"{s.name} {p.cpu_per_start_ms(s):.3f}" for s in STORES) + "\n"
    )
    print("## Maximum start rate and p99 start latency (Durable backend capacity unbounded)\n")
    print("\n".join(table(p)))
    print("\n## Ceilings per resource\n")
    print("\n".join(ceilings(p)))
    print("\n## Simulation cross-check\n")
    print("\n".join(cross_check(p, args.starts)))
    print("\n## Notes\n")
    print("\n".join(notes(p)))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
