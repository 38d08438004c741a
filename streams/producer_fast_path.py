"""Faust's topic sends (table changelog writes among them) without a task and a loop turn per message.

Every ``Topic.publish_message`` first awaits ``app.maybe_start_producer()``, which is wrapped in mode's
``@stampede``: each call creates a task and waits for it, so every message costs one turn of the event loop even
when the producer is long started. Faust writes table changes through its producer buffer, whose drain task
publishes one message at a time: under load (a turn of the loop took ~2 ms) it drained ~500 changelog writes/s
while a one-group worker produced ~3 per request, the buffer passed its limit, and Faust held every stream until
it drained (the "producer buffer full" stalls of bench/pipeline_bench.py --single-group). Here a producer that
is already started is returned directly; before that, and with transactions, Faust's way is unchanged.
"""

from __future__ import annotations

from typing import Any

_applied = False


def apply() -> None:
    """Patch ``faust.topics.Topic._get_producer`` once."""
    global _applied
    if _applied:
        return
    from faust.topics import Topic

    original = Topic._get_producer

    async def _get_producer(self: Any) -> Any:
        app = self.app
        producer = app._producer
        if producer is not None and producer.started and not app.in_transaction:
            return producer
        return await original(self)

    Topic._get_producer = _get_producer
    _applied = True
