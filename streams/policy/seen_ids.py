"""A bounded set of recently seen ids: the dedup horizon of the budget ledgers' settlements and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class SeenIds:
    """Ids seen recently, oldest first: at most ``max_size`` and (with ``ttl_ms``) none older than that.

    Why bounded: it lives in a table. The bound is the dedup horizon: a redelivery arriving after its id was
    evicted (more than ``max_size`` newer ids, or ``ttl_ms`` later) is counted again, so size it above the
    worst consumer lag or rebalance replay. Eviction assumes ``now`` roughly increases (insertion order).
    """

    def __init__(self, max_size: int = 10_000, ttl_ms: int | None = None) -> None:
        if max_size < 1 or (ttl_ms is not None and ttl_ms <= 0):
            raise ValueError("max_size and ttl_ms must be positive")
        self.max_size = max_size
        self.ttl_ms = ttl_ms
        self._ids: dict[str, int] = {}

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str, now: int, spill: Callable[[str, int], None] | None = None) -> bool:
        """Record ``item``; True if it was new (count it), False if already seen (skip it).

        ``spill(id, at)`` receives each id evicted for room (not those past the TTL), for a caller that keeps
        older ids elsewhere (see ``BudgetLedger.spill_to``)."""
        self.prune(now)
        if item in self._ids:
            return False
        self._ids[item] = int(now)
        while len(self._ids) > self.max_size:
            oldest = next(iter(self._ids))
            at = self._ids.pop(oldest)
            if spill is not None:
                spill(oldest, at)
        return True

    def prune(self, now: int) -> None:
        if self.ttl_ms is None:
            return
        horizon = now - self.ttl_ms
        while self._ids:
            oldest = next(iter(self._ids))
            if self._ids[oldest] >= horizon:
                break
            del self._ids[oldest]

    def to_dict(self) -> dict[str, Any]:
        return {"max_size": self.max_size, "ttl_ms": self.ttl_ms, "ids": dict(self._ids)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SeenIds:
        ttl = d.get("ttl_ms")
        out = cls(int(d.get("max_size", 10_000)), None if ttl is None else int(ttl))
        out._ids = {str(k): int(v) for k, v in (d.get("ids") or {}).items()}
        return out
