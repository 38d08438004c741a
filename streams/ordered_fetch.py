"""The Faust side of streams/policy/fetch_order.py: every record of an input partition passes the consumer's
``FetchOrder`` on its way from the fetch to the streams, and every seek Sluice makes (the recovery's, through
streams/faust_patches.py, and the lost-event guard's) tells it the offset due next. Faust itself seeks input
partitions only there: its other seeks (``seek_wait``) are on changelogs, which are not checked.

Seeks run in the consumer's own thread, where aiokafka lives: aiokafka's ``seek`` called from the event loop
raced its fetcher thread (a KeyError in ``fetched_records`` crashed a worker's fetcher while the broker restarted).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from streams.policy.fetch_order import FetchOrder, Verdict

log = logging.getLogger(__name__)
_ATTR = "_sluice_fetch_order"


def order_of(consumer: Any) -> FetchOrder:
    """The consumer's FetchOrder (one per Faust consumer, made on first use)."""
    order = consumer.__dict__.get(_ATTR)
    if order is None:
        order = FetchOrder()
        setattr(consumer, _ATTR, order)
    return order


async def seek_in_thread(consumer: Any, tp: Any, offset: int, *, resync: bool = False) -> None:
    """Faust's ``Consumer.seek`` with aiokafka's seek run in the consumer's thread; the offset is due next
    (``resync``: a seek FetchOrder asked for, which knows it already)."""
    thread = getattr(consumer, "_thread", None)
    if thread is None:  # not the threaded aiokafka driver: Faust's own seek
        await consumer.seek(tp, offset)
    else:
        await thread.call_thread(thread._ensure_consumer().seek, tp, offset)
        consumer._read_offset[tp] = offset if offset else None  # what Consumer.seek does after its _seek
    if not resync:
        order_of(consumer).sought(tp, offset)


def _ordered(getmany: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(getmany)
    async def ordered_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        order = order_of(self)
        is_input = self.app.topics.acks_enabled_for
        async for tp, message in getmany(self, timeout):
            if not is_input(tp.topic):
                yield tp, message
                continue
            verdict = order.verdict(tp, message.offset, time.monotonic())
            if verdict is Verdict.DELIVER:
                yield tp, message
            elif verdict is Verdict.SEEK:
                due = order.due(tp)
                assert due is not None
                log.info(
                    "%s[%d]: offset %d fetched where %d is due (a batch from before a seek): reading again from %d",
                    tp.topic,
                    tp.partition,
                    message.offset,
                    due,
                    due,
                )
                await seek_in_thread(self, tp, due, resync=True)

    ordered_getmany.sluice_ordered = True  # type: ignore[attr-defined]
    return ordered_getmany


def record_sought(consumer: Any, sought: dict[Any, int | None]) -> None:
    """Positions set by a seek to committed offsets (streams/faust_patches.py) are the offsets due."""
    order = order_of(consumer)
    for tp, offset in sought.items():
        if offset is not None and offset >= 0:
            order.sought(tp, offset)


def apply() -> None:
    from faust.transport.consumer import Consumer

    if getattr(Consumer.getmany, "sluice_ordered", False):
        return
    Consumer.getmany = _ordered(Consumer.getmany)
