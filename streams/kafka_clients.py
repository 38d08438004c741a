"""Small helpers around aiokafka clients shared by the CLI, the client and tooling."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings


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
