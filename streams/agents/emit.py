"""Sending a stage's output from inside an agent.

``emit`` hands messages to the producer's buffer and returns: Faust flushes the producer before it commits
the input offsets, so an output is on the broker before its input counts as done (at-least-once) without a
broker round trip per event. ``emit_acked`` waits for the acknowledgement; the stages that must order a
send before a table write (complete, meter) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import faust

from streams.stages.outgoing import Outgoing, Source


async def emit(app: faust.App, messages: Iterable[Outgoing]) -> None:
    for m in messages:
        await app.send(m.topic, key=m.key, value=m.value)


async def emit_acked(app: faust.App, messages: Iterable[Outgoing]) -> None:
    """Send all messages, then wait until Kafka has them."""
    futures = [await app.send(m.topic, key=m.key, value=m.value) for m in messages]
    if futures:
        await asyncio.gather(*futures)


def source_of(event: faust.EventT) -> Source:
    msg = event.message
    return Source(topic=msg.topic, partition=msg.partition, offset=msg.offset)
