"""Reading a whole topic (from its start to the end offsets read when we began) with a group-less consumer."""

from __future__ import annotations

from typing import Any

import orjson

from streams.kafka_clients import assign_all, groupless_consumer, stop_consumer
from streams.settings import Settings


async def read_records(settings: Settings, topic: str) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, JSON value) of every non-empty record of ``topic``."""
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        tps = await assign_all(consumer, settings, topic)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        out: list[tuple[int, int, dict[str, Any]]] = []
        pending = {tp for tp in tps if starts[tp] < ends[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, batch in batches.items():
                out.extend((tp.partition, m.offset, orjson.loads(m.value)) for m in batch if m.value)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await stop_consumer(consumer)


async def read_to_end(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every JSON record of ``topic``, in partition order."""
    return [value for _, _, value in await read_records(settings, topic)]
