"""Sending a stage's output from inside an agent.

``emit`` hands messages to the producer's buffer and returns: Faust flushes the producer before it commits
the input offsets, so an output is on the broker before its input counts as done (at-least-once) without a
broker round trip per event. ``emit_acked`` waits for the acknowledgement; the stages that must order a
send before a table write (complete, meter) use it.

Messages go straight to the aiokafka producer under the app's Faust producer (``Producer.flush`` flushes
it before every commit). Faust's ``Topic.send`` wraps each message in a FutureMessage, a PendingMessage, sensor
callbacks and a completion callback chain Sluice never uses: dropping them cut the exact-hit path's CPU per
answer by about a quarter (bench/pipeline_bench.py, alternating runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import faust

from streams.stages.outgoing import Outgoing, Source


def _kafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under the app's Faust producer: the one Faust flushes before it commits."""
    return app.producer._ensure_producer()


async def emit(app: faust.App, messages: Iterable[Outgoing]) -> None:
    # Straight to aiokafka (same producer, same key partitioning): Faust's Topic.send adds a FutureMessage, a
    # PendingMessage and a callback chain per message that Sluice never uses.
    producer = _kafka_producer(app)
    for m in messages:
        await producer.send(m.topic, m.value, key=m.key)


async def emit_unacked(app: faust.App, messages: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
    """Send all messages; the futures resolve when Kafka has them (see streams/agents/ack_pipeline.py)."""
    producer = _kafka_producer(app)
    return [await producer.send(m.topic, m.value, key=m.key) for m in messages]


async def emit_acked(app: faust.App, messages: Iterable[Outgoing]) -> None:
    """Send all messages, then wait until Kafka has them."""
    futures = await emit_unacked(app, messages)
    if futures:
        await asyncio.gather(*futures)


def source_of(event: faust.EventT) -> Source:
    msg = event.message
    return Source(topic=msg.topic, partition=msg.partition, offset=msg.offset)
