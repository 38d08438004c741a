"""Keeping each input partition's events in offset order across seeks, so none is skipped.

Sluice's input topics are written without transactions and never compacted, so a partition's offsets are
contiguous: after a stream got offset N, the next one it must get is N + 1. A fetch can break that. Faust runs
aiokafka in a thread of its own and seeks there; a batch that thread fetched *before* a seek can still reach the
streams *after* it (when a rebalance's recovery resumes the partitions a moment before it seeks them back to
their committed offsets, or while the lost-event guard seeks). Those records come from the old, further position:
offset 1092 arrives where 1089 is due. Faust then notes 1089-1091 as a gap, and its fetch loop drops them when
the seek reads them again (they are below the last offset it read), so they wait for the lost-event guard: two
checks, seconds of latency for a rebalance (bench/restart_bench.py: p99 1.6-5.5 s while a worker joined or left).

Here a record past the offset due is held back instead: dropped before any stream sees it, and the partition is
sought back to the offset due, once. Records past it that still arrive within ``settle_s`` of that seek are more
of the old batch and are dropped too. When the offset due has not come back by then, it is not in the log any more
(retention deleted it before this group read it): the partition is sought to the lowest offset that did arrive,
and reading goes on in order from there; the commit logic and the lost-event guard deal with the hole as before.
Every such step moves the offset due forward, so it ends. Records at or before the offset due pass (Faust drops
repeats itself).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    DELIVER = "deliver"
    DROP = "drop"  # more of a batch fetched before the seek back
    SEEK = "seek"  # drop it, and seek the partition to ``due(partition)``


@dataclass
class _Resync:
    offset: int  # the offset sought
    at: float  # when
    lowest: float = float("inf")  # the lowest offset dropped since


@dataclass
class FetchOrder:
    """The offset due next on each input partition, and the seeks made to restore it."""

    settle_s: float = 2.0
    _due: dict[Hashable, int] = field(default_factory=dict)
    _resync: dict[Hashable, _Resync] = field(default_factory=dict)
    resyncs: int = 0  # seeks asked for (for tests and logs)

    def sought(self, partition: Hashable, offset: int) -> None:
        """The partition's fetch position was set to ``offset``: that is the offset due now."""
        self._due[partition] = offset
        self._resync.pop(partition, None)

    def forget(self, partition: Hashable) -> None:
        self._due.pop(partition, None)
        self._resync.pop(partition, None)

    def due(self, partition: Hashable) -> int | None:
        return self._due.get(partition)

    def verdict(self, partition: Hashable, offset: int, now: float) -> Verdict:
        """What to do with the record at ``offset``; on SEEK, seek the partition to ``due(partition)``."""
        due = self._due.get(partition)
        if due is None or offset <= due:
            if due is None or offset == due:
                self._due[partition] = offset + 1
                self._resync.pop(partition, None)
            return Verdict.DELIVER
        resync = self._resync.get(partition)
        if resync is None or resync.offset != due:
            self._resync[partition] = _Resync(due, now)
            self.resyncs += 1
            return Verdict.SEEK
        resync.lowest = min(resync.lowest, offset)
        if now - resync.at < self.settle_s:
            return Verdict.DROP
        # ``due`` did not come back after the seek: read on from the lowest offset that did.
        self._due[partition] = int(resync.lowest)
        self._resync[partition] = _Resync(int(resync.lowest), now)
        self.resyncs += 1
        return Verdict.SEEK
