"""Reading topics back in tests (plain aiokafka consumers, no consumer group)."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka_clients import assign_all, stop_consumer
from streams.settings import Settings


async def read_topic(
    settings: Settings, topic: str, *, until: int, timeout_s: float = 60.0, distinct_ids: bool = False
) -> list[dict]:
    """Read JSON records from the start of ``topic`` until ``until`` records (with ``distinct_ids``: records
    with ``until`` different ids, for topics where a redelivery may repeat a record) or the timeout."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await assign_all(consumer, settings, topic)
        for tp, offset in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, offset)
        out: list[dict] = []
        deadline = time.monotonic() + timeout_s

        def count() -> int:
            return len({r.get("id") for r in out}) if distinct_ids else len(out)

        while count() < until and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                out.extend(orjson.loads(r.value) for r in records if r.value is not None)
        return out
    finally:
        await stop_consumer(consumer)


async def produce_raw(settings: Settings, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=k, value=v) for k, v in values])
    finally:
        await producer.stop()
