"""A three-node KRaft cluster on loopback (replication factor 3, min.insync.replicas=2, idempotent acks=all
producers): the leader of a busy partition SIGKILLed mid-run loses nothing — every request gets exactly one final
response at the client and exactly one usage record equal to it. This is how Sluice scales past one machine."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.client import SluiceClient
from streams.cluster import LocalCluster, broker_ids, partition_leaders
from streams.settings import Settings
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim
from tests.integration.faults import (
    Clock,
    Load,
    Pipeline,
    cheap_requests,
    check_exactly_once,
    free_port_block,
    warm_up,
    worker_env,
)

# Bounded well under this on a quiet 2-core machine; the margin is for a loaded one (no timing is asserted).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

N = 3_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Settings, LocalCluster]]:
    base = free_port_block(6)
    settings = Settings(
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_nodes=3,
        kafka_heap_mb=320,
        replication_factor=3,
        topic_prefix="t" + uuid.uuid4().hex[:10],
        partitions=2,
        data_dir=str(tmp_path / "sluice"),
        reply_timeout_s=90.0,
    )
    local = LocalCluster(settings)
    try:
        local.start()
        yield settings, local
    finally:
        local.stop()


async def _min_insync(settings: Settings, topic: str, timeout_s: float = 30.0) -> str | None:
    """The topic's min.insync.replicas. The broker that answers may not know a just-created topic yet (its
    metadata arrives from the controller a moment later: an error and no entries), so ask again until it does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_client_options())
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            (described,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            (resource,) = described.resources
            entries = {entry[0]: entry[1] for entry in resource[4]}
            if "min.insync.replicas" in entries or time.monotonic() > deadline:
                return entries.get("min.insync.replicas")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def test_killing_the_leader_of_a_busy_partition_loses_nothing(
    cluster: tuple[Settings, LocalCluster], tmp_path: Path
) -> None:
    settings, local = cluster
    clock = Clock()
    assert await broker_ids(settings) == {1, 2, 3}
    await create_topics(settings)
    busy = settings.topic("lookup")
    assert await _min_insync(settings, busy) == "2"
    async with ProviderSim() as sim:
        layout = {"front": ("admit", "cache"), "back": ("cloud", "meter")}
        pipeline = Pipeline(settings, tmp_path, worker_env(tmp_path, sim), layout)
        pipeline.start_all()
        try:
            await warm_up(settings, pipeline)
            clock.mark("warm")
            async with SluiceClient(settings) as client:
                load = Load(client, cheap_requests(N))
                publishing = asyncio.create_task(load.publish(rate_per_s=300))
                await load.wait_answered(N // 5, 600, pipeline.tails)
                before = load.answered()
                clock.mark("kill")
                victim = (await partition_leaders(settings, busy))[0]
                await asyncio.to_thread(local.kill, victim)  # SIGKILL the leader of lookup partition 0
                await publishing
                delivered = await load.responses(600, pipeline.tails)
                clock.mark("answered")
                verdict = await check_exactly_once(settings, load, delivered)
                clock.mark("checked")
                after = await partition_leaders(settings, busy)
        finally:
            pipeline.stop_all()
    assert before < N, "the kill came after the run: nothing was tested"
    assert after[0] not in (victim, -1), after  # leadership moved to a surviving in-sync replica
    print(f"killed node {victim} (leader of {busy}[0]) after {before} answers; {verdict}; {clock}")
