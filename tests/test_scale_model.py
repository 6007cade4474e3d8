"""Invariants of the multi-host scale model (benchmarks/model.py). Fast, no I/O, no timing."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from benchmarks.model import (
    HOSTS,
    STORES,
    Case,
    Grid,
    Params,
    analyze,
    from_latest,
    hot_service,
    latency_grid,
    resources,
    simulate,
)

P = Params()


def max_rate(p: Params, store_index: int, hosts: int, workload: str = "distinct", rtt: float = 0.2) -> float:
    return analyze(replace(p, rtt_ms=rtt), Case(STORES[store_index], hosts, workload, rtt), loads=()).max_per_s


@pytest.mark.parametrize("workload", ["distinct", "hot"])
def test_throughput_never_falls_when_capacity_grows(workload: str) -> None:
    for i in range(len(STORES)):
        rates = [max_rate(P, i, h, workload) for h in HOSTS]
        if workload == "distinct":  # more hosts: never slower (hot: bounded by the lease, flat up to wake-up cost)
            assert rates == sorted(rates), (STORES[i].name, rates)
        faster = replace(P, redis_acquire_us=P.redis_acquire_us / 2, redis_release_us=P.redis_release_us / 2)
        bigger = replace(faster, blob_account_rps=2 * P.blob_account_rps, host_cores=2 * P.host_cores)
        for h in HOSTS:
            base = max_rate(P, i, h, workload)
            assert max_rate(faster, i, h, workload) >= base * (1 - 1e-9)
            assert max_rate(bigger, i, h, workload) >= base * (1 - 1e-9)


def test_more_cluster_primaries_raise_the_distinct_id_ceiling_but_not_linearly() -> None:
    one, three, six = (max_rate(P, i, 100) for i in (0, 1, 2))
    assert one < three < six
    assert six < 6 * one  # every release's PUBLISH is forwarded to every primary


def test_utilization_stays_at_or_below_one_under_the_reported_maximum() -> None:
    for store in STORES:
        for hosts in HOSTS:
            for workload in ("distinct", "hot"):
                r = analyze(P, Case(store, hosts, workload, 0.2), loads=())
                assert 0 < r.max_per_s < math.inf
                assert all(u <= 1 + 1e-9 for u in r.util_at_max.values()), (store.name, hosts, workload, r.util_at_max)
                if workload == "distinct":  # the named bottleneck is the resource at 100 %
                    assert r.util_at_max[r.bottleneck] == pytest.approx(1.0)
                for res in resources(P, r.case):
                    assert 0.8 * r.max_per_s * res.per_start < res.capacity


def test_hot_id_rate_is_bounded_by_one_over_the_lease_hold_whatever_the_store() -> None:
    for store in STORES:
        for hosts in HOSTS:
            for rtt in (0.2, 1.0):
                case = Case(store, hosts, "hot", rtt)
                p = replace(P, rtt_ms=rtt)
                hold_ms = hot_service(p, case).mean()
                r = analyze(p, case, loads=())
                assert r.max_per_s <= 1000 / hold_ms * (1 + 1e-9)
                assert r.max_per_s < max_rate(P, STORES.index(store), hosts)  # far below distinct IDs
    # and a longer round trip lengthens the hold: fewer starts per ID
    assert max_rate(P, 0, 10, "hot", rtt=1.0) < max_rate(P, 0, 10, "hot", rtt=0.2)


def test_latency_grows_with_load_and_round_trip() -> None:
    for store in STORES:
        case = Case(store, 10, "distinct", 0.2)
        r = analyze(P, case)
        assert r.p99_ms[0.5] <= r.p99_ms[0.8]
        slow = analyze(replace(P, rtt_ms=1.0), Case(store, 10, "distinct", 1.0))
        assert slow.p99_ms[0.5] > r.p99_ms[0.5]


def test_a_capped_durable_backend_caps_every_store_alike() -> None:
    capped = replace(P, backend_starts_per_s=2000.0)
    for i, store in enumerate(STORES):
        r = analyze(capped, Case(store, 100, "distinct", 0.2), loads=())
        assert r.max_per_s == pytest.approx(2000.0)
        assert r.bottleneck == "Durable backend"
        # strict adds no backend calls: one start is one start's worth of backend capacity on every store
        assert next(x for x in resources(P, r.case) if x.name == "Durable backend").per_start == 1.0
        assert max_rate(P, i, 100) >= 2000.0


@pytest.mark.parametrize(
    ("store_index", "hosts", "workload"),
    [(0, 100, "distinct"), (2, 100, "distinct"), (0, 10, "hot")],
)
def test_simulation_agrees_with_the_analytic_p99_at_half_load(store_index: int, hosts: int, workload: str) -> None:
    case = Case(STORES[store_index], hosts, workload, 0.2)
    a = analyze(P, case, loads=(0.5,))
    sim = simulate(P, case, 0.5 * a.max_per_s, starts=8000, seed=3)
    assert sim.p99_ms == pytest.approx(a.p99_ms[0.5], rel=0.15)
    assert sim.throughput == pytest.approx(0.5 * a.max_per_s, rel=0.1)


def test_grid_reproduces_an_exponential_and_a_fixed_delay() -> None:
    g = Grid(0.01, 4000).fixed(2.0).exp(3.0)
    assert g.quantile(0.99) == pytest.approx(2.0 + 3.0 * math.log(100), rel=0.01)
    assert sum(g.p) == pytest.approx(1.0)
    assert latency_grid(P, Case(STORES[0], 1, "distinct", 0.2), 1.0).quantile(0.5) > 0


def test_missing_benchmark_results_fall_back_to_the_stated_defaults(tmp_path: Path) -> None:
    p, notes = from_latest(tmp_path / "absent.json")
    assert p == Params()
    assert "defaults" in notes[0]
    (tmp_path / "latest.json").write_text('{"floors": {"redis lease acquire+release": 0.2}}')
    p, _ = from_latest(tmp_path / "latest.json")
    assert p.redis_client_ms == pytest.approx(0.1)
