"""Spotting an input event lost inside a consumer process, so it can be read again.

Faust commits a partition only up to its first offset that no stream has acked (with streams/faust_patches.py;
unpatched, it also commits past a single missing head offset and past offsets missing from a fetch). An event
that never reaches a stream (Faust drops the rest of a fetched batch when a rebalance starts mid-batch, and
relies on a later seek to read it again, which does not always come) then holds the commit at its offset for
good: every later event is processed, and the held one is never answered. In a CI fault drill 500 requests
waited ten minutes that way.

A head offset is lost when nothing holds it (not acked, not taken by a stream) although a *later* offset of the
same partition was already taken: each partition's events enter one queue in offset order, so a later event is
taken only after the earlier ones were taken, or dropped. It is also lost when the log holds it (the partition's
end offset is past it) while the process is idle: no event of any partition is in a stream's hands, so none sits
in a queue behind a slow one. That is the stall where *every* event after a drop was dropped too (a meter restarted
while responses kept arriving once sat at its committed offset that way for a minute, with nothing taken after).
Seeing the same lost head on two checks in a row, the guard seeks the partition back to it; events after it are
delivered again, which Sluice's stages absorb (they are idempotent per request id).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartitionView:
    """One partition as the consumer sees it between commits."""

    committed: int | None  # the next offset a restart would read (None: nothing committed yet)
    acked: Collection[int]  # offsets acked since that commit
    taken: Collection[int]  # offsets a stream took and has not acked yet
    absent: Callable[[int], bool] = lambda offset: False  # offsets known not to exist (gaps in the log)
    end: int | None = None  # the partition's end offset as last fetched (None: unknown)
    idle: bool = False  # no event of any partition is taken and unacked in this consumer


def lost_head(view: PartitionView) -> int | None:
    """The committed offset, if its event was lost in this process; None when it is held, pending or unknown."""
    head = view.committed
    if head is None or head in view.acked or head in view.taken or view.absent(head):
        return None
    later_taken = any(o > head for o in view.acked) or any(o > head for o in view.taken)
    if later_taken:
        return head
    return head if view.idle and view.end is not None and view.end > head else None


@dataclass
class LostEventTracker:
    """Confirms a lost head over two checks before acting, then leaves the partition alone for ``cooldown_s``
    (the event read again may sit behind events queued before the seek, and must not trigger another seek)."""

    cooldown_s: float
    _suspect: dict[Hashable, tuple[int, int]] = field(default_factory=dict)  # partition -> (head, generation)
    _sought: dict[Hashable, tuple[int, float]] = field(default_factory=dict)  # partition -> (head, when)

    def observe(self, partition: Hashable, head: int | None, generation: int, now: float) -> bool:
        """Record one check's verdict for ``partition``; True when it should be sought back to ``head`` now."""
        if head is None:
            self._suspect.pop(partition, None)
            return False
        sought = self._sought.get(partition)
        if sought is not None and sought[0] == head and now - sought[1] < self.cooldown_s:
            return False
        if self._suspect.get(partition) != (head, generation):
            self._suspect[partition] = (head, generation)
            return False
        del self._suspect[partition]
        self._sought[partition] = (head, now)
        return True

    def reset(self) -> None:
        """Forget suspicions (a rebalance: offsets and generations change, and Faust seeks on its own)."""
        self._suspect.clear()
