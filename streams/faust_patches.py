"""Fixes for faust-streaming 0.15.3 that at-least-once delivery depends on, and two that make a worker start
in seconds (bench/restart_bench.py).

While flow control is paused (table recovery) or after a rebalance (stale generation), a stream *skips* the
events already in its buffer, and acks them "so the lag does not grow". Acking lets the next commit move
past events nobody processed: they are lost (faust-streaming issues #216, #221). Here a skipped event is
left unacked instead, so the committed offset stays before it; Faust seeks every stream partition back to
its committed offset when recovery completes, and the event is delivered again. Sluice's stages are
idempotent per request id, so a redelivery is harmless.

That seek is aiokafka's ``seek_to_committed``, which does nothing for a partition without a committed offset
(and for one committed at 0): there the consumer kept its fetch position, past the skipped events, and they
were never read. Here such a partition is sought to its beginning (Sluice's apps reset to earliest), and the
offset it starts from counts as committed (Faust stores None for 0, and then checks no head at all).

Faust's commit must never move past an event no stream acked. Two paths let it:

- ``_new_offset`` lets the first acked offset be one past the committed one (``min(acked) - committed > 1``),
  so a single lost event at the head is committed past, and it checks nothing when the committed offset is 0.
  Here any unacked head holds the commit.
- the fetch loop treats offsets missing between two fetched records as a "gap" (compaction, transaction
  markers) and commits past it. Sluice's agents read only uncompacted topics written without transactions, where
  offsets are contiguous: records missing there were dropped in this process (Faust drops the rest of a
  fetched batch when a rebalance starts), not absent. Here they hold the commit instead.

Records fetched before a seek and delivered after it (the recovery resumes partitions a moment before it seeks
them) are kept out of the streams by streams/ordered_fetch.py. A commit held anyway is released by the lost-event
guard (streams/lost_event_guard.py), which seeks the partition back to the held offset, and which marks offsets
that retention deleted as absent.

Start-up: the seek above takes each partition's log start from one ListOffsets request (aiokafka's
``seek_to_beginning`` + ``position`` waited ~1.5 s per partition while Faust holds the fetcher paused, and idle
input topics never get a commit, so every start and rebalance paid it), and the table manager does not sleep a
second before recovery (one per role's app). A worker's first answer came 39 s after its start, now 6 s.
"""

from __future__ import annotations

import functools
import inspect
import logging
import textwrap
from collections.abc import Callable
from typing import Any

from streams import ordered_fetch

log = logging.getLogger(__name__)
_ACK_SKIPPED = "do_ack or value is skipped_value"
_applied = False


def _patched(method: Any) -> Any:
    import faust.streams as streams

    source = textwrap.dedent(inspect.getsource(method))
    if source.count(_ACK_SKIPPED) != 1:
        return None
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(_ACK_SKIPPED, "do_ack"), streams.__file__, "exec"), vars(streams), namespace)
    return next(v for k, v in namespace.items() if callable(v))


async def _seek_every_partition(consumer: Any, is_input: Callable[[str], bool]) -> dict[Any, int]:
    """In the consumer's thread: each assigned partition to its committed offset; an input partition without
    one to its beginning (changelog partitions, which Faust positions itself, are left where they are).

    The beginnings come from one ListOffsets request and a plain ``seek``: aiokafka's ``seek_to_beginning``
    and ``position`` wait for its fetcher to apply the reset, about 1.5 s per partition while Faust holds the
    fetcher paused, which made a worker's start (and every restart: idle topics never get a commit) take
    tens of seconds."""
    sought: dict[Any, int] = {}
    fresh = []
    for tp in consumer.assignment():
        offset = await consumer.committed(tp)
        if offset is not None and offset >= 0:
            consumer.seek(tp, offset)
        elif is_input(tp.topic):
            fresh.append(tp)
            continue
        sought[tp] = offset
    if fresh:
        beginnings = await consumer.beginning_offsets(fresh)
        for tp in fresh:
            consumer.seek(tp, beginnings[tp])
            sought[tp] = beginnings[tp]
    return sought


async def _seek_to_committed(self: Any) -> dict[Any, int]:
    is_input = self.consumer.app.topics.acks_enabled_for
    return await self.call_thread(_seek_every_partition, self._ensure_consumer(), is_input)


async def _perform_seek(self: Any) -> None:
    """Faust's ``Consumer.perform_seek``, keeping 0 as a committed offset (Faust's stores None for it)."""
    from faust.transport.consumer import ensure_TP

    sought = await self.seek_to_committed()
    ordered_fetch.record_sought(self, sought)
    self._read_offset.update({tp: o if o is not None and o >= 0 else None for tp, o in sought.items()})
    self._committed_offset.update({ensure_TP(tp): o for tp, o in sought.items() if o is not None and o >= 0})


def _holding_an_unacked_head(original: Callable[[Any, Any], int | None]) -> Callable[[Any, Any], int | None]:
    @functools.wraps(original)
    def _new_offset(self: Any, tp: Any) -> int | None:
        acked, committed = self._acked[tp], self._committed_offset[tp]
        if acked and committed is not None and committed not in self._acked_index[tp]:
            if not self._gap[tp].at(committed):  # the head is neither acked nor known absent
                return None
        return original(self, tp)

    return _new_offset


async def _no_gap_in_contiguous_topics(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    log.info(
        "%s[%d]: offsets %d-%d skipped by this process's fetch are held", tp.topic, tp.partition, offset_from, offset_to
    )


_TABLES_SLEEP = "await self.sleep(1.0)"


async def _start_tables_at_once(self: Any) -> None:
    """Faust's ``TableManager.on_start`` without its one-second sleep, which gives agents time to register tables
    before the channel list is finalized. Sluice registers every table before the worker starts, and a worker
    starts its roles' apps one after another, so the sleep only added a second per role to every (re)start."""
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


def apply() -> bool:
    """Patch both stream iterators (Cython-backed and pure Python) once; False, with a warning, if this Faust's
    source is not the expected one."""
    global _applied
    if _applied:
        return True
    import faust.streams as streams

    patched = {name: _patched(getattr(streams.Stream, name)) for name in ("_c_aiter", "_py_aiter")}
    if any(fn is None for fn in patched.values()):
        log.warning("faust's stream iterators changed: the skipped-event patch was not applied")
        return False
    for name, fn in patched.items():
        setattr(streams.Stream, name, fn)
    from faust.transport.drivers import aiokafka as driver

    driver.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed
    from faust.transport.consumer import Consumer

    Consumer.perform_seek = _perform_seek
    Consumer._new_offset = _holding_an_unacked_head(Consumer._new_offset)
    Consumer._add_gap = _no_gap_in_contiguous_topics
    ordered_fetch.apply()
    from faust.tables.manager import TableManager

    source = inspect.getsource(TableManager.on_start)
    if source.count(_TABLES_SLEEP) == 1 and "self._update_channels()" in source and "self.recovery.start()" in source:
        TableManager.on_start = _start_tables_at_once
    else:
        log.info("faust's TableManager.on_start changed: its start-up sleep is kept")
    _applied = True
    return True
