"""A local Apache Kafka cluster: N KRaft nodes (each broker + controller) forming one quorum.

``akece-webhooks kafka start --nodes 3`` runs it (``kafka_commands``); ``stop``/``status``/``reset`` find it by its
``cluster.json``. Each node is a ``LocalKafka`` in its own directory, so a test can SIGKILL one
node by its pid and start it again on the same ports. The data dir holds::

    cluster.json    node count, each node's PLAINTEXT and controller port (reused by every start)
    node-<id>/      node <id>'s own data dir (see kafka_local): properties, logs, pid, broker.log

Replication: one replica per node up to 3, ``min.insync.replicas`` one less (3 nodes: 3 and 2),
for the internal topics and as the broker default; ``topics ensure`` takes the pipeline topics'
from ``AKECE_KAFKA_REPLICATION_FACTOR`` and ``AKECE_KAFKA_MIN_INSYNC_REPLICAS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from services.devtools.broker_dir import Quorum, new_cluster_id
from services.devtools.jars import kafka_home
from services.devtools.kafka_errors import HOST, LocalKafkaError, PortInUseError
from services.devtools.kafka_local import KafkaStatus, LocalKafka
from services.devtools.ports import default_port, free_port, port_in_use
from services.devtools.processes import locked
from services.devtools.readiness import wait_brokers

CLUSTER_FILE = "cluster.json"
MAX_REPLICATION = 3
# Three JVMs on a small machine: a smaller heap each than a single broker's 512 MB.
NODE_HEAP = ("-Xms128m", "-Xmx384m")
T = TypeVar("T")


@dataclass(frozen=True)
class ClusterLayout:
    ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    cluster_id: str

    @property
    def nodes(self) -> int:
        return len(self.ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{port}" for port in self.ports)

    @property
    def voters(self) -> str:
        return ",".join(f"{n}@{HOST}:{port}" for n, port in enumerate(self.controller_ports, 1))

    @property
    def replication(self) -> int:
        return min(self.nodes, MAX_REPLICATION)

    @property
    def min_isr(self) -> int:
        return max(1, self.replication - 1)

    def to_json(self) -> str:
        return json.dumps({"nodes": self.nodes, "ports": self.ports, "controller_ports": self.controller_ports,
                           "cluster_id": self.cluster_id}, indent=1) + "\n"


def is_cluster(data_dir: Path) -> bool:
    return (data_dir / CLUSTER_FILE).is_file()


def _in_parallel(calls: list[Callable[[], T]]) -> list[T]:
    """Run blocking calls on threads at once (a quorum forms only when its majority runs)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


class LocalCluster:
    """N local nodes bound to one data dir. ``start``/``stop`` are idempotent."""

    def __init__(self, data_dir: Path | None = None, nodes: int | None = None, *,
                 ports: list[int] | None = None, controller_ports: list[int] | None = None,
                 proxied: dict[int, tuple[int, int]] | None = None, home: Path | None = None) -> None:
        self.home = home or kafka_home()
        self.data_dir = (data_dir or self.home / "data").resolve()
        self.nodes = nodes
        self._ports = ports
        self._controller_ports = controller_ports
        self._proxied = proxied or {}  # node id -> (listen port, advertised proxy port)
        self._layout: ClusterLayout | None = None
        self.first_port: int | None = None  # node 1's port of a new layout (default: kafka_local's port)
        self._members: dict[int, LocalKafka] = {}

    @property
    def layout_file(self) -> Path:
        return self.data_dir / CLUSTER_FILE

    @property
    def layout(self) -> ClusterLayout:
        if self._layout is None:
            self._layout = self._read_layout() or self._new_layout()
        return self._layout

    @property
    def bootstrap(self) -> str:
        return self.layout.bootstrap

    def node(self, node_id: int) -> LocalKafka:
        """Node ``node_id`` (1-based), a LocalKafka on its recorded ports."""
        if node_id not in self._members:
            layout = self.layout
            index = node_id - 1
            quorum = Quorum(node_id, layout.voters, layout.replication, layout.min_isr)
            self._members[node_id] = LocalKafka(
                self.data_dir / f"node-{node_id}", port=layout.ports[index],
                controller_port=layout.controller_ports[index], home=self.home, quorum=quorum,
                proxied=self._proxied.get(node_id), heap=NODE_HEAP)
        return self._members[node_id]

    def node_ids(self) -> list[int]:
        return list(range(1, self.layout.nodes + 1))

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> list[KafkaStatus]:
        """Start every node that does not run and wait until all serve and see each other."""
        with locked(self.data_dir):
            layout = self.layout
            self.layout_file.write_text(layout.to_json())
            for node_id in self.node_ids():
                node_dir = self.data_dir / f"node-{node_id}"
                node_dir.mkdir(parents=True, exist_ok=True)
                cluster_id = node_dir / "cluster.id"
                if not cluster_id.exists():
                    cluster_id.write_text(layout.cluster_id + "\n")
        _in_parallel([partial(self.node(n).start, timeout=timeout) for n in self.node_ids()])
        asyncio.run(wait_brokers(layout.bootstrap, layout.nodes, timeout))
        return self.status()

    def start_node(self, node_id: int, timeout: float = 90.0) -> KafkaStatus:
        """Start one node (after a crash) on its recorded ports and wait until it serves."""
        return self.node(node_id).start(timeout=timeout)

    def stop(self, grace: float = 15.0) -> bool:
        """Stop every node at once (one after another, the last ones would wait for a lost quorum)."""
        if not self.layout_file.exists():
            return False
        return any(_in_parallel([partial(self.node(n).stop, grace) for n in self.node_ids()]))

    def status(self) -> list[KafkaStatus]:
        return [self.node(n).status() for n in self.node_ids()]

    def reset(self) -> None:
        """Stop every node and wipe the data dir (refused when it holds files not ours)."""
        if not self.data_dir.exists():
            return
        ours = {CLUSTER_FILE, ".lock"} | {f"node-{n}" for n in self.node_ids()}
        foreign = sorted(p.name for p in self.data_dir.iterdir() if p.name not in ours)
        if foreign:
            raise LocalKafkaError(f"refusing to wipe {self.data_dir}: it holds files kafka_local did "
                                  f"not create ({', '.join(foreign[:5])}); the cluster was left as it was")
        self.stop()
        for node_id in self.node_ids():
            self.node(node_id).reset()
        shutil.rmtree(self.data_dir)

    # -- observing (tests pick their victims with these)

    def pid(self, node_id: int) -> int | None:
        return self.node(node_id).status().pid

    def quorum_leader(self) -> int | None:
        """The active controller: the leader of the highest epoch any running node recorded."""
        best: tuple[int, int] | None = None
        for node_id in self.node_ids():
            if self.pid(node_id) is None:
                continue
            state = _quorum_state(self.node(node_id).data_dir)
            leader, epoch = state.get("leaderId"), state.get("leaderEpoch")
            if isinstance(leader, int) and leader > 0 and isinstance(epoch, int) and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return best[0] if best else None

    # -- layout

    def _read_layout(self) -> ClusterLayout | None:
        try:
            raw: dict[str, Any] = json.loads(self.layout_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        layout = ClusterLayout(tuple(raw["ports"]), tuple(raw["controller_ports"]), str(raw["cluster_id"]))
        if self.nodes not in (None, layout.nodes):
            raise LocalKafkaError(f"{self.data_dir} holds a {layout.nodes}-node cluster: start it without --nodes, "
                                  f"or wipe it with `akece-webhooks kafka reset` first")
        return layout

    def _new_layout(self) -> ClusterLayout:
        nodes = self.nodes or MAX_REPLICATION
        if (self.data_dir / "server.properties").exists() or (self.data_dir / "logs").exists():
            raise LocalKafkaError(f"{self.data_dir} holds a single-node broker: use another --data-dir, "
                                  f"or wipe it with `akece-webhooks kafka reset` first")
        first = self.first_port or default_port()
        ports = self._ports or [first + n for n in range(nodes)]
        controllers = self._controller_ports or [free_port() for _ in range(nodes)]
        if len(ports) != nodes or len(controllers) != nodes:
            raise LocalKafkaError(f"{nodes} nodes need {nodes} ports and {nodes} controller ports")
        if len(set(ports) | set(controllers)) != 2 * nodes:
            raise LocalKafkaError(f"the ports of a cluster must all differ: {ports} and {controllers}")
        for port in (*ports, *controllers):
            if port_in_use(port):
                raise PortInUseError(port)
        return ClusterLayout(tuple(ports), tuple(controllers), new_cluster_id())


def _quorum_state(node_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        state: dict[str, Any] = json.loads((node_dir / "logs" / "__cluster_metadata-0" / "quorum-state").read_text())
        return state
    return {}


__all__ = ["CLUSTER_FILE", "ClusterLayout", "LocalCluster", "is_cluster"]
