"""Parsed objects of table rows, reused while the row is still the very value this process last wrote.

The budget and breaker state of a session (or a tenant) is one table row, a JSON-able dict. Rebuilding the
ledger and breaker objects from it on every request costs time in proportion to the row, and a busy row is
large (a ledger remembers up to thousands of settled request ids). A Faust table in memory hands back the
object it was given, so when ``table[key] is`` the dict this process stored, the objects it stored it from are
still exact and are reused. Anything else (a restart, recovery from the changelog, a deletion, a write by other
code) yields a different object, and the row is parsed again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class ParsedRows(Generic[T]):
    def __init__(self, max_rows: int = 1024) -> None:
        # Least recently used rows beyond this are parsed again when next needed. Small on purpose: the rows worth
        # keeping are the busy ones, and every object kept is one more for each full garbage collection to walk
        # (20,000 rows of one-off sessions halved the exact-hit throughput in bench/pipeline_bench.py).
        self.max_rows = max_rows
        self._rows: OrderedDict[str, tuple[object, T]] = OrderedDict()

    def take(self, key: str, saved: object) -> T | None:
        """The objects ``saved`` was written from, if ``saved`` is the value this cache last stored for ``key``.

        Taken out: the caller mutates them and :meth:`put` s them back with the row it writes, so an exception
        between the two leaves nothing half-changed behind (the row is parsed again)."""
        hit = self._rows.pop(key, None)
        if hit is None or saved is None or hit[0] is not saved:
            return None
        return hit[1]

    def put(self, key: str, saved: object, parsed: T) -> None:
        """``saved`` (now the table's value for ``key``) was built from ``parsed``."""
        self._rows[key] = (saved, parsed)
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)
