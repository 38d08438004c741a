"""The local cluster's layout and replication settings, checked without starting a JVM."""

from __future__ import annotations

from pathlib import Path

from streams.broker import kafka_cluster_id
from streams.cluster import LocalCluster, node_ports
from streams.settings import Settings
from streams.topics import new_topics


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_three_nodes_share_one_quorum_on_distinct_ports_and_dirs(tmp_path: Path) -> None:
    settings = Settings(kafka_port=30000, kafka_controller_port=30001, data_dir=str(tmp_path))
    cluster = LocalCluster(settings, nodes=3)
    assert cluster.bootstrap == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    assert [node_ports(settings, i) for i in range(3)] == [(30000, 30001), (30002, 30003), (30004, 30005)]
    props = [_props(n.server_properties()) for n in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
    assert all(p["controller.quorum.voters"] == voters for p in props)
    assert len({p["log.dirs"] for p in props}) == 3
    assert all(p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2" for p in props)
    assert all(p["offsets.topic.replication.factor"] == "3" for p in props)
    assert cluster.cluster_id() == cluster.cluster_id()  # one id, kept for restarts


def test_replicated_topics_get_min_insync_replicas() -> None:
    single = new_topics(Settings())
    assert all("min.insync.replicas" not in t.topic_configs for t in single)
    replicated = new_topics(Settings(replication_factor=3))
    assert all(t.replication_factor == 3 and t.topic_configs["min.insync.replicas"] == "2" for t in replicated)
    compacted = [t for t in replicated if t.topic_configs.get("cleanup.policy") == "compact"]
    assert compacted  # the spec's own configs are kept next to it
    assert Settings(replication_factor=3, min_insync_replicas=3).effective_min_insync_replicas == 3
    assert Settings(replication_factor=2).effective_min_insync_replicas == 1


def test_clients_bootstrap_from_every_local_node_unless_told_otherwise() -> None:
    assert Settings(kafka_port=9092).bootstrap == "127.0.0.1:9092"
    assert Settings(kafka_port=9092, kafka_nodes=2).bootstrap == "127.0.0.1:9092,127.0.0.1:9094"
    assert Settings(kafka_bootstrap="k1:9092,k2:9092", kafka_nodes=3).bootstrap == "k1:9092,k2:9092"


def test_nodes_formatted_in_parallel_threads_all_get_the_same_cluster_id(tmp_path: Path) -> None:
    """The nodes' storage is formatted from a thread pool; a racy id file gave each node its own cluster id
    (seen in CI: the nodes refused each other with INCONSISTENT_CLUSTER_ID and exited)."""
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(20):
        cluster = LocalCluster(Settings(data_dir=str(tmp_path / str(attempt))), nodes=3)
        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(LocalCluster.cluster_id, [cluster] * 8))
        assert len(ids) == 1


def test_cluster_ids_never_start_with_a_dash() -> None:
    """Kafka's storage tool reads a leading ``-`` as an option; 1 in 64 random ids began with one (a CI failure)."""
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])  # 0xf8 encodes to a leading "-" in base64url
    cluster_id = kafka_cluster_id(lambda: next(draws))
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert all(not kafka_cluster_id().startswith("-") for _ in range(2000))
