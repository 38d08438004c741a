"""A local multi-node Apache Kafka cluster (KRaft): N combined broker+controller nodes on loopback.

This is how Sluice scales past one machine, rehearsed on one: every topic is replicated
(``SLUICE_REPLICATION_FACTOR``, e.g. 3) with ``min.insync.replicas`` (2 of 3), every producer writes with
``acks=all`` and idempotence, and the nodes share one controller quorum (``controller.quorum.voters``), so the
loss of any one node — the leader of a busy partition included — loses no acknowledged write: the controller
quorum (2 of 3) elects a new leader from the in-sync replicas and clients move to it.

Node *i* (0-based, node.id *i+1*) listens on ``kafka_port + 2i`` (clients) and ``kafka_controller_port + 2i``
(quorum) and keeps its log under ``<data_dir>/kafka/node-<i+1>``; all nodes are formatted with one cluster id
(kept in ``<data_dir>/kafka/cluster.id``). ``Settings.bootstrap`` lists every node, so clients can start while
any one of them is down. On several machines the same properties apply with real host names.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from streams.broker import KAFKA_DIR, BrokerError, LocalBroker, kafka_cluster_id, wait_ready
from streams.settings import Settings


def node_ports(settings: Settings, index: int) -> tuple[int, int]:
    """(client port, controller port) of node ``index`` (0-based)."""
    return settings.kafka_port + 2 * index, settings.kafka_controller_port + 2 * index


class ClusterNode(LocalBroker):
    """One node of a :class:`LocalCluster`: a :class:`LocalBroker` with its own ports, directory and node id."""

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        port, controller = node_ports(cluster.settings, index)
        own = replace(
            cluster.settings, kafka_bootstrap="", kafka_nodes=1, kafka_port=port, kafka_controller_port=controller
        )
        super().__init__(own, cluster.kafka_dir)
        self.cluster = cluster
        self.node_id = index + 1
        self.home = cluster.home / f"node-{self.node_id}"
        self.log_dirs = self.home / "data"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    def server_properties(self) -> str:
        s, n = self.settings, self.cluster.size
        replicas = min(3, n)
        min_isr = self.cluster.settings.with_overrides(replication_factor=replicas).effective_min_insync_replicas
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.cluster.voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.log_dirs}",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                # Replicated defaults, internal topics included (consumer offsets, producer ids/transactions).
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={min_isr}",
                "unclean.leader.election.enable=false",
                f"offsets.topic.replication.factor={replicas}",
                "offsets.topic.num.partitions=8",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                # A node that stops heartbeating is fenced (and its partitions' leadership moves) after this.
                "broker.session.timeout.ms=6000",
                "broker.heartbeat.interval.ms=1000",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "log.segment.bytes=67108864",
                "",
            ]
        )

    def _format_storage(self, config: Path) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster.cluster_id()}", "-c", str(config)
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, timeout_s: float = 90.0) -> bool:
        """(Re)start this node alone and wait until it answers (the other nodes must form a quorum)."""
        if self.running_pid() is not None:
            return False
        proc = self.launch()
        wait_ready(self.settings, timeout_s, proc=proc)
        return True


class LocalCluster:
    """Start, stop and inspect the nodes of a local KRaft cluster whose state lives under ``<data_dir>/kafka``."""

    def __init__(self, settings: Settings, nodes: int | None = None, kafka_dir: Path = KAFKA_DIR) -> None:
        self.size = nodes or settings.kafka_nodes
        if self.size < 1:
            raise ValueError("a cluster needs at least one node")
        self.settings = replace(settings, kafka_nodes=self.size)
        self.kafka_dir = kafka_dir
        self.home = Path(settings.data_dir) / "kafka"
        self._id_lock = threading.Lock()
        self.nodes = [ClusterNode(self, i) for i in range(self.size)]
        self.voters = ",".join(f"{node.node_id}@127.0.0.1:{node.settings.kafka_controller_port}" for node in self.nodes)

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def cluster_id(self) -> str:
        """One id for every node (formatted once, kept so a restarted node rejoins the same cluster)."""
        path = self.home / "cluster.id"
        # Nodes are formatted from parallel threads: two that both found no id file would each write their own,
        # and the nodes then refuse each other (INCONSISTENT_CLUSTER_ID) and exit.
        with self._id_lock:
            if not path.exists():
                self.home.mkdir(parents=True, exist_ok=True)
                path.write_text(kafka_cluster_id())
            return path.read_text().strip()

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def running(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.running_pid() is not None]

    def start(self, timeout_s: float = 120.0) -> bool:
        """Start every node that is not running, then wait until each answers and all have registered; True if
        this call started any. Nodes are launched together: none is ready until a quorum of voters is up."""
        if self.settings.uses_external_cluster:
            return False
        stopped = [n for n in self.nodes if n.running_pid() is None]
        with ThreadPoolExecutor(max(1, len(stopped))) as pool:  # formatting is a JVM start per node: overlap them
            procs = dict(zip([n.node_id for n in stopped], pool.map(ClusterNode.launch, stopped), strict=True))
        try:
            deadline = time.monotonic() + timeout_s
            for n in self.nodes:
                wait_ready(n.settings, max(1.0, deadline - time.monotonic()), proc=procs.get(n.node_id))
            asyncio.run(self._wait_registered(deadline))
        except BrokerError:
            self.stop()
            raise
        return bool(procs)

    async def _wait_registered(self, deadline: float) -> None:
        while True:
            brokers = await broker_ids(self.settings)
            if len(brokers) >= self.size:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"only brokers {sorted(brokers)} of {self.size} registered in time")
            await asyncio.sleep(0.5)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every node (SIGTERM, then SIGKILL); True if any was running."""
        stopped = [n.stop(timeout_s) for n in self.nodes]
        return any(stopped)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (fault injection)."""
        self.node(node_id).kill()


async def broker_ids(settings: Settings) -> set[int]:
    """The node ids of the brokers the cluster currently reports."""
    from streams.kafka_clients import admin_client

    async with admin_client(settings, request_timeout_ms=5000) as admin:
        meta = await admin.describe_cluster()
    return {int(b["node_id"]) for b in meta.get("brokers", [])}


async def partition_leaders(settings: Settings, topic: str) -> dict[int, int]:
    """partition → node id of its current leader (-1: none), from the admin client's describe_topics."""
    from streams.kafka_clients import admin_client

    async with admin_client(settings, request_timeout_ms=5000) as admin:
        (described,) = await admin.describe_topics([topic])
    return {int(p["partition"]): int(p["leader"]) for p in described["partitions"]}


def discover_nodes(settings: Settings) -> int:
    """How many nodes a local cluster under ``data_dir`` has (0: none was ever started there)."""
    home = Path(settings.data_dir) / "kafka"
    return len(list(home.glob("node-*/server.properties")))


def start_local_kafka(settings: Settings) -> bool:
    """What ``sluice up`` starts: nothing with ``KAFKA_BOOTSTRAP``, a cluster with ``SLUICE_KAFKA_NODES`` > 1,
    else the single-node broker; True if it started something."""
    if settings.uses_external_cluster:
        return False
    if settings.kafka_nodes > 1:
        return LocalCluster(settings).start()
    return LocalBroker(settings).start()


def broker_command(settings: Settings, action: str, nodes: int | None) -> int:
    """``sluice broker start|stop|status [--nodes N]`` for a local cluster (N > 1)."""
    size = nodes or (settings.kafka_nodes if settings.kafka_nodes > 1 else discover_nodes(settings))
    cluster = LocalCluster(settings, size)
    if action == "start":
        started = cluster.start()
        print(("started" if started else "already running") + f" {size} nodes at {cluster.bootstrap}")
        print(
            f"clients: SLUICE_KAFKA_NODES={size} SLUICE_REPLICATION_FACTOR={min(3, size)} "
            f"(or KAFKA_BOOTSTRAP={cluster.bootstrap}); logs under {cluster.home}"
        )
        return 0
    if action == "stop":
        print("stopped" if cluster.stop() else "not running")
        return 0
    running = cluster.running()
    print(f"nodes running: {running or 'none'} of {size}")
    return 0 if len(running) == size else 1
