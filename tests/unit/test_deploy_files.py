"""docker-compose.yml (the path for users with Docker) and the broker config stay coherent."""

from __future__ import annotations

from pathlib import Path

import yaml

from streams.broker import LocalBroker
from streams.roles import ROLES
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_compose_parses_and_names_kafka_qdrant_and_every_role() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "qdrant"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for role in ROLES:
        command = services[f"sluice-{role}"]["command"]
        assert command == ["sluice", "worker", "--role", role]
        assert services[f"sluice-{role}"]["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["sluice-topics"]["command"] == ["sluice", "topics", "create"]


def test_local_broker_is_kraft_on_loopback_without_auto_creation(tmp_path: Path) -> None:
    props = LocalBroker(Settings(data_dir=str(tmp_path), kafka_port=29092)).server_properties()
    lines = dict(line.split("=", 1) for line in props.splitlines() if line)
    assert lines["process.roles"] == "broker,controller"
    assert lines["auto.create.topics.enable"] == "false"
    assert lines["listeners"].startswith("PLAINTEXT://127.0.0.1:29092")
    assert lines["log.dirs"].startswith(str(tmp_path))


def test_external_cluster_starts_nothing(tmp_path: Path) -> None:
    broker = LocalBroker(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path)))
    assert broker.start() is False
    assert not (tmp_path / "kafka").exists()
