"""Redlock checks: every node as a Redis server, plus what only a quorum needs.

A majority of N nodes is only as good as the nodes' independence: two URLs that reach
one server (the same ``run_id``), or a node that replicates another (``role:slave``, a
``master_host:master_port`` naming another node, or a shared ``master_replid``), count
twice for one failure. And N sets how many nodes may fail: ``N - (N // 2 + 1)``.
"""

from __future__ import annotations

from typing import Any

from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis import NodeFacts, connect, db_of, node_checks, quiet_policy_warning, reach
from strict_singleton.doctor._redis_acl import permissions_check
from strict_singleton.doctor._redis_cycle import new_scratch, scratch_cycle
from strict_singleton.lock_backends._redis_common import DEFAULT_PREFIX
from strict_singleton.lock_backends._redlock_common import quorum
from strict_singleton.lock_backends._url import redact_url, redlock_node_urls

_ROW = "row 8"
_MAX_NODE_TIMEOUT = 4.0  # RedlockLease takes less than 5 s per node


def independence_check(target: str, facts: list[NodeFacts]) -> Check:
    """Failure if any two nodes are one server or one replication group."""
    problems: list[str] = []
    by_address = {(f.host, f.port): i for i, f in enumerate(facts)}
    for i, node in enumerate(facts):
        if node.role == "slave":
            where = f"{node.master_host}:{node.master_port}"
            j = by_address.get((node.master_host or "", node.master_port or 0))
            problems.append(f"node {i + 1} is a replica of {where}" + (f" (node {j + 1})" if j is not None else ""))
        for j in range(i + 1, len(facts)):
            other = facts[j]
            if node.run_id and node.run_id == other.run_id:
                problems.append(f"nodes {i + 1} and {j + 1} are one server (same run_id)")
            elif node.master_replid and node.master_replid == other.master_replid:
                problems.append(f"nodes {i + 1} and {j + 1} share a replication history (master_replid)")
    if problems:
        return Check(
            target,
            "independent nodes",
            Status.FAILURE,
            "; ".join(problems) + ": one failure takes several votes, and a failover can hand a held lease to a "
            "second caller",
            fix="give every Redlock node its own master with no replication between them",
            guarantee=_ROW,
            measured=f"{len(problems)} problem(s)",
        )
    unknown = [i + 1 for i, f in enumerate(facts) if f.run_id is None or f.role is None]
    if unknown:
        return Check(
            target,
            "independent nodes",
            Status.WARNING,
            f"could not read INFO on node(s) {', '.join(map(str, unknown))}; independence not checked there",
            fix="allow INFO for this user, or confirm by hand that the nodes share no server or replication",
            guarantee=_ROW,
            measured="unknown",
        )
    return Check(
        target,
        "independent nodes",
        Status.OK,
        "distinct run_ids, all masters, no shared replication",
        guarantee=_ROW,
        measured=f"{len(facts)} independent",
    )


def quorum_check(target: str, nodes: int, down: int) -> Check:
    """How many nodes may fail, and how many already have."""
    need = quorum(nodes)
    spare = nodes - need
    measured = f"{nodes} nodes, quorum {need}, {down} down"
    if down > spare:
        return Check(
            target,
            "quorum",
            Status.FAILURE,
            f"{down} of {nodes} nodes unreachable: no majority of {need}, every start fails closed",
            fix="bring the nodes back",
            guarantee=_ROW,
            measured=measured,
        )
    if down:
        return Check(
            target,
            "quorum",
            Status.WARNING,
            f"{down} of {nodes} nodes unreachable: leases work, but only {spare - down} more may fail",
            fix="bring the nodes back",
            guarantee=_ROW,
            measured=measured,
        )
    if nodes % 2 == 0:
        return Check(
            target,
            "quorum",
            Status.WARNING,
            f"{nodes} nodes tolerate {spare} failure(s), as {nodes - 1} would: the extra node adds load, no safety",
            fix=f"use {nodes - 1} or {nodes + 1} nodes",
            guarantee=_ROW,
            measured=measured,
        )
    return Check(target, "quorum", Status.OK, f"any {spare} node(s) may fail", guarantee=_ROW, measured=measured)


def check_redlock(
    url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None, checks: list[Check]
) -> list[Check]:
    """Every check of one ``redlock://`` lock URL, each appended to ``checks`` as it is
    done (``checks`` is returned)."""
    from strict_singleton.lock_backends.redlock import RedlockLease

    prefix = prefix or DEFAULT_PREFIX
    urls = redlock_node_urls(url)
    clients: list[Any] = [connect(u, timeout) for u in urls]
    try:
        facts: list[NodeFacts] = []
        up: list[Any] = []
        for i, (node_url, client) in enumerate(zip(urls, clients, strict=True)):
            node_target = f"{target} node {i + 1} {redact_url(node_url)}"
            reached, ok = reach(client, node_target, prefix=prefix)
            checks += reached
            if ok:
                node, fact = node_checks(client, node_target, clock_skew=clock_skew)
                checks += node
                checks.append(permissions_check(client, node_target, prefix=prefix, db=db_of(client)))
                facts.append(fact)
                up.append(client)
        checks.append(quorum_check(target, len(urls), len(urls) - len(up)))
        if len(facts) > 1:
            checks.append(independence_check(target, facts))
        if len(up) >= quorum(len(urls)):
            scratch = new_scratch(prefix, target)
            lease = RedlockLease(clients, prefix=prefix, node_timeout=min(timeout, _MAX_NODE_TIMEOUT), name=target)
            quiet_policy_warning(lease)
            try:
                # Wake-ups: a waiter hears a release from any node; the first reachable one stands in.
                checks += scratch_cycle(lease, up, up[0], scratch, target=target, timeout=timeout)
            finally:
                lease.close()
        return checks
    finally:
        for client in clients:
            client.close()


__all__ = ["check_redlock"]
