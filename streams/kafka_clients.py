"""Small helpers around aiokafka clients shared by the CLI, the client and tooling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.settings import Settings


@asynccontextmanager
async def admin_client(settings: Settings, **options: Any) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client for the settings' cluster (``options``: more aiokafka options), closed on exit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **options, **settings.kafka_client_options())
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def groupless_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading a topic's partitions directly (reports, tails, replay)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False, **settings.kafka_client_options()
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer; aiokafka 0.14 raises a stray CancelledError when a group-less consumer stops
    before its internal reset task ran. Swallow only that one, never a real cancellation of our task."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def assign_all(consumer: AIOKafkaConsumer, settings: Settings, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to a group-less consumer."""
    from streams.topics import partition_counts

    count = (await partition_counts(settings, [topic])).get(topic, 0)
    if not count:
        raise LookupError(f"topic {topic} does not exist: run `sluice topics create`")
    tps = [TopicPartition(topic, p) for p in range(count)]
    consumer.assign(tps)
    return tps


def back_off_failed_metadata_updates() -> None:
    """Make a failed cluster-metadata update wait ``retry_backoff_ms`` before it returns (aiokafka 0.14 returns
    at once, and the producers', fetchers' and coordinators' loops that asked for it ask again at once).

    Why: with the broker down, connection refused is instant, so every Kafka client in a worker asked for
    metadata in a tight loop: a worker sat at 95% CPU and logged about 5,000 "Unable to update metadata" lines a
    second until the broker came back (seen in the broker-restart fault test). All callers share one update
    future per client, so waiting inside the update paces every one of them."""
    from aiokafka.client import AIOKafkaClient

    original = AIOKafkaClient._metadata_update
    if getattr(original, "sluice_backoff", False):
        return

    async def metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> Any:
        ok = await original(self, cluster_metadata, topics)
        if ok is False:
            await asyncio.sleep(self._retry_backoff)
        return ok

    metadata_update.sluice_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = metadata_update
