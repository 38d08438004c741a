"""Settled request ids that budget rows no longer hold: one small table row each, forgotten after a horizon.

Why: a session's or tenant's budget ledger is one table row, rewritten whole on every reserve and settle. Kept in
the row, the settled ids that make settling idempotent (a redelivered usage record must not charge twice) made a
hot tenant's every write ~450 kB (10,000 ids), and still covered only its last 10,000 requests: seconds of
traffic at a high rate. The row now keeps its newest few ids (``SLUICE_BUDGET_ROW_IDS``) and older ones move here,
one ~50-byte row each, so a write costs the same at any rate and the dedup horizon is time
(``SLUICE_BUDGET_DEDUP_HORIZON_S``), not a count.

Forgetting: each partition keeps an in-memory queue of its rows in the order written. Work on a partition
(:meth:`SpilledIds.view`, called while a message of that partition is handled, so deletions go to the changelog
partition holding the keys) first deletes the rows older than the horizon. The queue is rebuilt from the table
on first use (after a restart the table recovers from its changelog) and once per horizon, which also catches
rows written by another process that owned the partition before a rebalance. A row is stamped with the time it
was written here, so an id is remembered for at least the horizon after it was settled.

Time is *stream time* per partition, as in streams/stages/meter_horizon.py: the newest ``created_at`` of the
messages handled there, never ahead of the wall clock (a client's clock cannot expire anyone's rows). After an
outage longer than the horizon, the usage records replayed from before the crash are checked against rows that
are still there: nothing has moved the partition's time on yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping
from typing import Any

from schemas.records import now_ms


def spill_key(scope: str, request_id: str) -> str:
    """Length-prefixed, so no scope and id pair can spell another's key."""
    return f"{len(scope)}:{scope}{request_id}"


class SpilledIds:
    def __init__(self, table: MutableMapping[str, Any], horizon_ms: int) -> None:
        self.table = table
        self.horizon_ms = horizon_ms  # <= 0: never forget
        self._queues: dict[int | None, deque[tuple[int, str]]] = {}
        self._built_at: dict[int | None, int] = {}
        self._clock: dict[int | None, int] = {}

    def view(self, scope: str, partition: int | None, created_at: Any = None) -> SpillView:
        """The spill of one ledger (``scope``: its key), while a message of ``partition`` (made at ``created_at``,
        epoch ms, as the message says; missing or not a number: now) is being handled."""
        wall = now_ms()
        at = min(int(created_at), wall) if isinstance(created_at, int | float) and created_at > 0 else wall
        now = self._clock[partition] = max(self._clock.get(partition, 0), at)
        self.expire(partition, now)
        return SpillView(self, scope, partition, now)

    def expire(self, partition: int | None, now: int) -> int:
        """Delete this partition's rows older than the horizon; how many went."""
        if self.horizon_ms <= 0:
            return 0
        built = self._built_at.get(partition)
        if built is None or now - built >= self.horizon_ms:
            self._rebuild(partition, now)
        queue, horizon, gone = self._queues[partition], now - self.horizon_ms, 0
        while queue and queue[0][0] < horizon:
            at, key = queue.popleft()
            row = self.table.get(key)
            if isinstance(row, list) and row and row[0] == at:  # not rewritten since
                del self.table[key]
                gone += 1
        return gone

    def _rebuild(self, partition: int | None, now: int) -> None:
        rows = [
            (int(row[0]), key)
            for key, row in list(self.table.items())
            if isinstance(row, list) and len(row) == 2 and row[1] == partition
        ]
        self._queues[partition] = deque(sorted(rows))
        self._built_at[partition] = now

    def add(self, scope: str, request_id: str, partition: int | None, now: int) -> None:
        key = spill_key(scope, request_id)
        self.table[key] = [now, partition]
        if self.horizon_ms > 0:
            self._queues.setdefault(partition, deque()).append((now, key))

    def __len__(self) -> int:
        return len(self.table)


class SpillView:
    """One ledger's ids in :class:`SpilledIds` (an ``IdSpill`` for ``BudgetLedger.spill_to``)."""

    __slots__ = ("now", "partition", "scope", "store")

    def __init__(self, store: SpilledIds, scope: str, partition: int | None, now: int) -> None:
        self.store, self.scope, self.partition, self.now = store, scope, partition, now

    def __contains__(self, request_id: object) -> bool:
        return isinstance(request_id, str) and spill_key(self.scope, request_id) in self.store.table

    def add(self, request_id: str, at: int) -> None:
        """``at`` (when it was settled) is not kept: the horizon counts from now, when the row is written."""
        self.store.add(self.scope, request_id, self.partition, self.now)
