"""Shared fixtures. Integration tests use a genuine Kafka broker: ``KAFKA_BOOTSTRAP`` when set (scripts/test.sh
starts one), else a broker this session starts from infra/kafka's jars on a test port and stops at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from streams.broker import LocalBroker

    data_dir = tmp_path_factory.mktemp("broker")
    settings = Settings(data_dir=str(data_dir), kafka_port=19092, kafka_controller_port=19093)
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings isolated per test: a unique topic prefix (so topics and consumer groups never collide)."""
    prefix = "t" + uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        partitions=2,
        data_dir=str(tmp_path / "sluice"),
        reply_timeout_s=90.0,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a ``sluice`` subprocess needs to see the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        KAFKA_BOOTSTRAP=settings.bootstrap,
        SLUICE_TOPIC_PREFIX=settings.topic_prefix,
        SLUICE_PARTITIONS=str(settings.partitions),
        SLUICE_DATA_DIR=settings.data_dir,
        SLUICE_LOCAL_THREADS="1",
        # One model instance per test worker: several workers share the 2 cores, and backlog tests count one.
        SLUICE_LOCAL_CONCURRENCY="1",
        # SLUICE_TEST_WORKER_LOG_LEVEL=info (with DEVLOG=1 for Faust's own) when a subprocess's log must tell more
        SLUICE_LOG_LEVEL=os.environ.get("SLUICE_TEST_WORKER_LOG_LEVEL", "warning"),
    )
    return env
