"""Sending a stage's output from inside an agent, waiting for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import faust

from streams.stages.outgoing import Outgoing, Source


async def emit(app: faust.App, messages: Iterable[Outgoing]) -> None:
    """Send all messages, then wait until Kafka has them: the input offset is acked only afterwards."""
    futures = [await app.send(m.topic, key=m.key, value=m.value) for m in messages]
    if futures:
        await asyncio.gather(*futures)


def source_of(event: faust.EventT) -> Source:
    msg = event.message
    return Source(topic=msg.topic, partition=msg.partition, offset=msg.offset)
