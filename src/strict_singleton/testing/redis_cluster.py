"""A real Redis Cluster of three masters (no replicas) on free loopback ports, for tests.

Each node is a :class:`~strict_singleton.testing.RedisServer` with cluster mode on, its
node table in a private temporary directory, in its own process group (killed with
the group on :meth:`RedisCluster3.stop`, and when the test process dies). ``start()``
gives each node a third of the 16384 slots (``CLUSTER ADDSLOTS``: works on Redis 6 and
7), joins them with ``CLUSTER MEET`` and polls, within a deadline, until every node
reports ``cluster_state:ok`` and knows all three. No ``redis-cli`` needed.

Usage::

    with RedisCluster3() as cluster:
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from strict_singleton.testing.redis_server import RedisServer

SLOTS = 16384
_BUS_OFFSET = 10000  # Redis 6 cannot set the cluster bus port: it is always port + 10000


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    from strict_singleton.testing import free_port

    for _ in range(200):
        port = free_port()
        bus = port + _BUS_OFFSET
        if bus < 65536 and not {port, bus} & taken and _port_is_free(bus):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a Redis Cluster node")


class RedisClusterNode(RedisServer):
    """One redis-server with ``--cluster-enabled yes`` and its node table in ``directory``."""

    label = "redis-cluster-node"

    def __init__(self, directory: Path, *, port: int, startup_timeout: float = 10.0) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.directory = directory

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout", "5000",
            "--dir", str(self.directory),
        ]  # fmt: skip


class RedisCluster3:
    """Three cluster masters on free ports; ``start()`` returns once the cluster is ok."""

    def __init__(self, *, ready_timeout: float = 30.0) -> None:
        self.ready_timeout = ready_timeout
        self._tmp: Path | None = None
        self.nodes: list[RedisClusterNode] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self) -> RedisCluster3:
        import redis

        self._tmp = Path(tempfile.mkdtemp(prefix="strict-singleton-cluster-"))
        try:
            taken: set[int] = set()
            for _ in range(3):
                port = free_cluster_port(taken)
                taken |= {port, port + _BUS_OFFSET}
                self.nodes.append(RedisClusterNode(self._tmp, port=port).start())
            clients: list[Any] = [redis.Redis(port=p, socket_timeout=5) for p in self.ports]
            try:
                share = -(-SLOTS // len(clients))
                for i, client in enumerate(clients):
                    client.execute_command("CLUSTER ADDSLOTS", *range(i * share, min((i + 1) * share, SLOTS)))
                for port in self.ports[1:]:
                    clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
                self._await_ok(clients)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _await_ok(self, clients: list[Any]) -> None:
        # Bounded polling on a condition: gossip converges in well under a second.
        deadline = time.monotonic() + self.ready_timeout
        while True:
            infos = [_parse_info(c.execute_command("CLUSTER INFO")) for c in clients]
            if all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == "3" for i in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster on ports {self.ports} not ok after {self.ready_timeout} s: {infos}")
            time.sleep(0.05)  # poll interval, not a synchronisation

    def stop(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> RedisCluster3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_info(reply: Any) -> dict[str, str]:
    """``CLUSTER INFO`` as text fields (redis-py may already have parsed it into a dict)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


__all__ = ["RedisCluster3", "RedisClusterNode", "free_cluster_port"]
