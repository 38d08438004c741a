"""The Faust side of streams/policy/lost_events.py: read each input partition's state from the app's consumer
on a timer, and seek a partition back to a lost head offset.

It reads Faust consumer internals (``_committed_offset``, ``_acked``, ``_gap``, ``_unacked_messages``), the same
ones Faust's own commit logic uses; if a Faust upgrade renames them the guard logs once and stands down.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import faust

from streams.ordered_fetch import seek_in_thread
from streams.policy.lost_events import LostEventTracker, PartitionView, lost_head

log = logging.getLogger(__name__)


def _end_offset(consumer: Any, tp: Any) -> int | None:
    """The partition's end offset from the last fetch response (aiokafka's highwater), None if not known yet."""
    end = consumer.highwater(tp)
    return end if isinstance(end, int) and end >= 0 else None


def _in_gap(gap: Any) -> Callable[[int], bool]:
    """Membership in Faust's gap tree: offsets the log skips (they will never be acked)."""
    return lambda offset: bool(gap) and bool(gap.at(offset))


class LostEventGuard:
    def __init__(self, app: faust.App, cooldown_s: float) -> None:
        self.app = app
        self.tracker = LostEventTracker(cooldown_s)
        self.sought = 0  # partitions sought back so far (for tests and logs)
        self._broken = False

    def views(self) -> dict[Any, PartitionView]:
        """Every assigned input partition (not changelogs) as the consumer sees it now."""
        consumer: Any = self.app.consumer
        acking = self.app.topics.acks_enabled_for
        taken: dict[Any, set[int]] = defaultdict(set)
        for message in list(consumer._unacked_messages):
            if not message.acked:
                taken[message.tp].add(message.offset)
        idle = not taken
        views = {}
        for tp in consumer.assignment():
            if not acking(tp.topic):
                continue
            gap = consumer._gap.get(tp)
            views[tp] = PartitionView(
                committed=consumer._committed_offset.get(tp),  # 0 kept, and set where a commit-less partition started
                acked=frozenset(consumer._acked.get(tp, ())),
                taken=taken.get(tp, set()),
                absent=_in_gap(gap),
                end=_end_offset(consumer, tp),
                idle=idle,
            )
        return views

    def settled(self) -> bool:
        """No rebalance or table recovery under way (Faust moves offsets then, and seeks on its own after)."""
        app: Any = self.app
        return bool(app.flow_control.is_active()) and not app.rebalancing and not getattr(app, "in_recovery", False)

    async def check(self) -> int:
        """One round: seek back every partition whose lost head was seen twice; returns how many."""
        if self._broken:
            return 0
        if not self.settled():
            self.tracker.reset()
            return 0
        try:
            views = self.views()
        except (AttributeError, KeyError, TypeError) as exc:
            self._broken = True
            log.warning("lost-event guard off: this Faust's consumer is not the expected one (%s)", exc)
            return 0
        generation, now, sought = self.app.consumer_generation_id, time.monotonic(), 0
        for tp, view in views.items():
            head = lost_head(view)
            if self.tracker.observe(tp, head, generation, now):
                assert head is not None
                if await self._deleted_by_retention(tp, head):
                    continue
                log.warning(
                    "%s[%d]: event at offset %d was lost in this process (later ones were taken, or the log goes on "
                    "while nothing is in hand): reading the partition again from it",
                    tp.topic,
                    tp.partition,
                    head,
                )
                await seek_in_thread(self.app.consumer, tp, head)
                sought += 1
        self.sought += sought
        return sought

    async def _deleted_by_retention(self, tp: Any, head: int) -> bool:
        """A head below the log's start was deleted before this group read it: mark it absent, so the commit
        moves on (seeking to it would only reset the fetch to the start again)."""
        consumer: Any = self.app.consumer
        start = (await consumer.earliest_offsets(tp)).get(tp)
        if start is None or head >= start:
            return False
        consumer._gap[tp].addi(head, start)
        log.warning(
            "%s[%d]: offsets %d-%d were deleted by retention before they were read",
            tp.topic,
            tp.partition,
            head,
            start - 1,
        )
        return True


def install(app: faust.App, interval_s: float) -> LostEventGuard | None:
    """Run the guard every ``interval_s`` seconds in ``app`` (0: off)."""
    if interval_s <= 0:
        return None
    guard = LostEventGuard(app, cooldown_s=max(60.0, 10 * interval_s))
    app.timer(interval_s)(guard.check)
    return guard
