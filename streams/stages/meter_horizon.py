"""Keeps the meter's dedup ledger to a horizon, folding what leaves it into per-partition rollups.

Without it the ledger (request id → usage, a changelog-backed table) holds every request ever metered: memory
and restart recovery grow without bound. The ledger only has to remember an id for as long as a redelivery of
its response can arrive (uncommitted offsets after a crash, a rebalance replay), so entries older than the
horizon are dropped, and their totals are added to the partition's rollup first: running totals per tenant,
tier, feature and model (and overall) stay exact across pruning and restarts (rollups + ledger = everything).

Time is *stream time* per partition (the newest ``created_at`` metered there), not the wall clock: a meter
that was down for longer than the horizon replays its uncommitted responses before anything of theirs is pruned.
The trade-off: a response redelivered more than a horizon after its first delivery is counted again.
Per-session totals are not rolled up: a session's running totals last while it is active within the horizon.

Crash safety: each rollup carries a watermark ``upto``; an entry's time ``_t`` (its ``created_at``, raised to the
watermark for a late arrival) says which side it is on. Totals are the rollups plus the entries at or above their
partition's watermark, so an entry is never counted twice whatever was written before a crash. A prune rolls up
the entries in [old watermark, new watermark) and deletes only those below the old one (rolled up by the
previous prune, whose rollup write is long acknowledged): a rollup write lost in a crash loses no totals.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

from schemas.records import now_ms
from streams.policy.aggregates import Totals, group_keys

PARTITION, TIME = "_p", "_t"  # ledger entries record their partition (whose changelog holds them) and time
# A ledger entry is a list: these usage fields (what the totals and rollups read), then the partition and the time.
# Each entry lives for the whole horizon, one per metered request: the whole usage record as a dict held ~1.1 KB
# in memory, this ~0.45 KB (the repeated strings interned, no field names), and its changelog record is half the
# size. Dict entries (the earlier layout, still in older changelogs) are read as they are.
ENTRY_FIELDS = (
    "tenant", "session", "tier", "model", "feature", "status", "cache", "prompt_tokens", "completion_tokens",
    "cost_usd", "baseline_cost_usd", "latency_ms", "attempts", "busy_ms", "created_at",
)  # fmt: skip
_SHARED = frozenset({"tenant", "tier", "model", "feature", "status", "cache"})  # few distinct values: interned
_INTERNED_AT = tuple(i for i, name in enumerate(ENTRY_FIELDS) if name in _SHARED)
_P, _T = len(ENTRY_FIELDS), len(ENTRY_FIELDS) + 1


def ledger_entry(usage: dict[str, Any], partition: int, at: int) -> list[Any]:
    """The compact ledger entry of ``usage`` metered from ``partition`` at stream time ``at``."""
    entry = [usage.get(name) for name in ENTRY_FIELDS]
    for i in _INTERNED_AT:
        if isinstance(value := entry[i], str):
            entry[i] = sys.intern(value)
    entry += (partition, at)
    return entry


def entry_usage(entry: Any) -> dict[str, Any]:
    """The usage fields of a ledger entry (either layout), as the totals read them."""
    if isinstance(entry, dict):
        return entry
    return dict(zip(ENTRY_FIELDS, entry, strict=False))


def entry_place(entry: Any) -> tuple[int | None, int]:
    """(partition, time) of a ledger entry; partition None for entries metered before pruning existed."""
    if isinstance(entry, dict):
        partition = entry.get(PARTITION)
        return (partition if isinstance(partition, int) else None), int(entry.get(TIME) or 0)
    return int(entry[_P]), int(entry[_T])


ROLLED_UP = ("tenant", "tier", "feature", "model")  # bounded dimensions; sessions are not rolled up


class Rollup:
    """Totals of the usage rolled up from one partition's ledger (below ``upto``): overall and per dimension."""

    def __init__(
        self, overall: Totals | None = None, running: dict[tuple[str, str], Totals] | None = None, upto: int = 0
    ) -> None:
        self.overall = overall or Totals()
        self.running = running or {}
        self.upto = upto

    def add(self, usage: dict[str, Any]) -> None:
        busy = float(usage.get("busy_ms") or 0.0)
        self.overall.add_usage(usage, busy_ms=busy)
        for key in group_keys(usage, ROLLED_UP):
            self.running.setdefault(key, Totals()).add_usage(usage, busy_ms=busy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "upto": self.upto,
            "overall": self.overall.to_dict(),
            "running": [[dim, value, totals.to_dict()] for (dim, value), totals in self.running.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Rollup:
        if not d:
            return cls()
        running = {(str(dim), str(value)): Totals.from_dict(t) for dim, value, t in d.get("running") or []}
        return cls(Totals.from_dict(d.get("overall") or {}), running, int(d.get("upto") or 0))


class LedgerHorizon:
    def __init__(
        self,
        ledger: MutableMapping[str, Any],
        rollups: MutableMapping[str, dict[str, Any]],
        horizon_ms: int,
    ) -> None:
        self.ledger = ledger
        self.rollups = rollups  # str(partition) -> Rollup.to_dict()
        self.horizon_ms = horizon_ms
        self.every_ms = max(10_000, horizon_ms // 20)  # prune a partition at most this often (stream time)
        self._heap: dict[int, list[tuple[int, str]]] = {}  # per partition: (time, id) above the watermark
        self._rolled: dict[int, list[str]] = {}  # per partition: ids below the watermark, deleted next prune
        self._upto: dict[int, int] = {}
        self._stream_ms: dict[int, int] = {}
        self._pruned_at: dict[int, int] = {}

    def upto(self, partition: int) -> int:
        if partition not in self._upto:
            self._upto[partition] = Rollup.from_dict(self.rollups.get(str(partition))).upto
        return self._upto[partition]

    def stamp(self, usage: dict[str, Any], partition: int) -> list[Any]:
        """The ledger entry for ``usage`` metered from ``partition``: its fields, its partition and its time."""
        at = max(int(usage.get("created_at") or 0) or now_ms(), self.upto(partition))
        return ledger_entry(usage, partition, at)

    def counted(self, request_id: str, entry: Any) -> None:
        """``entry`` (from :meth:`stamp`) was just written to the ledger under ``request_id``."""
        partition, at = entry_place(entry)
        if partition is None:
            return
        heapq.heappush(self._heap.setdefault(partition, []), (at, request_id))
        self._stream_ms[partition] = max(self._stream_ms.get(partition, 0), at)

    def counts_in_totals(self, entry: Any) -> bool:
        """Whether a ledger entry is outside its partition's rollup (so the running totals add it)."""
        partition, at = entry_place(entry)
        return partition is None or at >= self.upto(partition)

    def cutoff(self, partition: int) -> int:
        return self._stream_ms.get(partition, 0) - self.horizon_ms

    def due(self, partition: int) -> bool:
        if self.horizon_ms <= 0 or partition not in self._stream_ms:
            return False
        return self._stream_ms[partition] - self._pruned_at.get(partition, 0) >= self.every_ms

    def prune(self, partition: int) -> int:
        """Delete what the last prune rolled up, roll up the entries older than the horizon; how many deleted.

        Call it while a message of ``partition`` is being handled: a changelog-backed table writes the rollup and
        the deletions to that message's partition, the one holding these keys."""
        self._pruned_at[partition] = self._stream_ms.get(partition, 0)
        deleted = 0
        for request_id in self._rolled.pop(partition, []):
            if self.ledger.pop(request_id, None) is not None:
                deleted += 1
        cutoff, heap = self.cutoff(partition), self._heap.get(partition, [])
        if cutoff <= self.upto(partition):
            return deleted
        rollup = Rollup.from_dict(self.rollups.get(str(partition)))
        rolled: list[str] = []
        while heap and heap[0][0] < cutoff:
            _, request_id = heapq.heappop(heap)
            entry = self.ledger.get(request_id)
            if entry is not None:
                rollup.add(entry_usage(entry))
                rolled.append(request_id)
        rollup.upto = self._upto[partition] = cutoff
        self.rollups[str(partition)] = rollup.to_dict()
        self._rolled[partition] = rolled
        return deleted

    def all_rollups(self) -> Iterable[Rollup]:
        return [Rollup.from_dict(d) for d in list(self.rollups.values())]

    def reindex(self) -> None:
        """Rebuild the pruning state from the recovered ledger and rollups."""
        self._heap.clear()
        self._rolled.clear()
        self._upto.clear()
        self._stream_ms.clear()
        for request_id, entry in list(self.ledger.items()):
            partition, _ = entry_place(entry)
            if partition is None:
                continue  # metered before pruning existed: kept
            if self.counts_in_totals(entry):
                self.counted(request_id, entry)
            else:
                self._rolled.setdefault(partition, []).append(request_id)
