"""The parts of Redlock that do no I/O, shared by the sync and async classes.

Quorum, validity and fencing follow antirez's Redlock description and pottery's care:

* acquire on all N nodes in parallel, each with a small per-node timeout; a node that
  errs or does not answer in time counts as down;
* success needs a majority (N // 2 + 1) and positive validity, where
  ``validity = ttl - elapsed - drift(ttl)``, with ``drift(ttl) = ttl * 1 % + 2 ms``
  (:mod:`strict_singleton._drift`);
* on failure, release on every node (token-checked), including the ones that did not
  answer in time (their grant may still land);
* if fewer than a majority of nodes could be reached, the store is unavailable
  (``LockUnavailableError``: fail closed); otherwise the lease is held elsewhere.

Fencing: each node's acquire returns that node's ``INCR``-ed counter. The maximum of
those is not monotonic by itself across different majorities, so the holder then
raises every granted node's counter to that maximum (only while it still holds that
node) and succeeds only if a majority confirms. Any later majority overlaps one of
those nodes, whose next ``INCR`` exceeds it, so tokens only grow. Limit: a majority of
nodes losing their data (restart without persistence) can make tokens repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strict_singleton._drift import drift
from strict_singleton.errors import InvalidArgumentError, LockUnavailableError

# KEYS[1] = lock key, KEYS[2] = fence key; ARGV[1] = owner token, ARGV[2] = fencing value.
# While the token holds the lock, raises the node's counter to at least ARGV[2]. Returns 1 or 0.
RAISE_FENCE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if current < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
"""

DEFAULT_NODE_TIMEOUT = 1.0  # busy 2-core machines exceed 250 ms; a slow node only shortens validity


def quorum(n: int) -> int:
    return n // 2 + 1


def validity(ttl: float, elapsed: float) -> float:
    return ttl - elapsed - drift(ttl)


def validate_nodes(clients: Any, node_timeout: float, name: str) -> list[Any]:
    nodes = list(clients)
    if len(nodes) < 3:
        raise InvalidArgumentError(
            f"Redlock needs at least 3 independent Redis masters (5 recommended), got {len(nodes)}", backend=name
        )
    if len({id(c) for c in nodes}) != len(nodes):
        raise InvalidArgumentError("Redlock nodes must be distinct clients", backend=name)
    if isinstance(node_timeout, bool) or not isinstance(node_timeout, (int, float)) or not 0 < node_timeout < 5:
        raise InvalidArgumentError(f"node_timeout must be between 0 and 5 seconds, got {node_timeout!r}", backend=name)
    return nodes


@dataclass(frozen=True, slots=True)
class NodeAnswers:
    """What the nodes said to one acquire round."""

    fences: list[int]  # one per node that granted
    held: int  # nodes where someone else holds the key
    down: list[str]  # nodes that erred or timed out, as "node i: Error"

    def decide(self, n: int) -> str:
        if len(self.fences) >= quorum(n):
            return "granted"
        if len(self.down) > n - quorum(n):  # fewer than a majority reachable: fail closed
            return "unavailable"
        return "held"


def unavailable(answers: NodeAnswers, n: int, *, instance_id: str, backend: str) -> LockUnavailableError:
    return LockUnavailableError(
        f"lock store unavailable: {len(answers.down)} of {n} Redlock nodes down or too slow "
        f"(a majority of {quorum(n)} is needed): {'; '.join(answers.down)}",
        instance_id=instance_id,
        backend=backend,
    )


def describe_nodes(clients: list[Any]) -> str:
    from strict_singleton.lock_backends._redis_common import describe_client

    return "redlock[" + ",".join(describe_client(c).removeprefix("redis(").removesuffix(")") for c in clients) + "]"
