"""A fetched record whose delivery cannot block is handed to the conductor directly; any that could block
(flow stopped, producer buffer over its limit, a full stream buffer) still goes through Faust's
``wait_first(..., suspend_flow.wait())``, which a rebalance can abandon. Real Faust objects, no broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.types import TP

from streams import drain_fast_path
from streams.app import create_app, raw_topic
from streams.settings import Settings


class _Message:
    def __init__(self, tp: TP) -> None:
        self.tp = tp


async def test_deliveries_that_cannot_block_skip_wait_first(tmp_path: Path) -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0), "admit")
    from faust.transport.consumer import Consumer

    assert "_sluice_deliver" in Consumer._drain_messages.__code__.co_names  # the patch is in Faust's loop
    consumer = app.consumer
    tp = TP("x.requests", 0)
    channel = raw_topic(app, "x.requests")
    app.topics._tp_index[tp].add(channel)
    message = _Message(tp)
    app.flow_control.resume()

    delivered: list[Any] = []
    raced: list[Any] = []

    async def callback(m: Any) -> None:
        delivered.append(m)

    async def wait_first(*coros: Any) -> None:
        raced.append(coros)
        for c in coros:
            c.close()

    consumer.wait_first = wait_first  # type: ignore[method-assign]

    assert drain_fast_path.cannot_block(consumer, message)
    await drain_fast_path.deliver(consumer, callback, message)
    assert (delivered, raced) == ([message], [])

    pending = app.producer.buffer.pending
    blockers = {
        "suspended flow": (consumer.suspend_flow.set, consumer.suspend_flow.clear),
        "paused flow control": (app.flow_control.suspend, app.flow_control.resume),
        "full stream buffer": (lambda: _fill(channel.queue), lambda: _drain(channel.queue)),
        "producer buffer over its limit": (lambda: _fill(pending, 101), lambda: _drain(pending)),
    }
    for name, (block, unblock) in blockers.items():
        block()
        assert not drain_fast_path.cannot_block(consumer, message), name
        await drain_fast_path.deliver(consumer, callback, message)
        unblock()
        assert drain_fast_path.cannot_block(consumer, message), name
    assert len(raced) == len(blockers) and len(delivered) == 1  # each blocked delivery went through wait_first


def _fill(queue: Any, n: int = 0) -> None:
    while not queue.full() if not n else queue.qsize() < n:
        queue.put_nowait(object())


def _drain(queue: Any) -> None:
    while not queue.empty():
        queue.get_nowait()
