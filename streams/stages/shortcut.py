"""Exact hits answered in the admit stage, when this process also owns the key's cache partition.

The long way for an exact hit is requests → admit → ``sluice.lookup`` → lookup → responses: one more record
produced and consumed, and one more Faust event, for an answer that is a dictionary read. When the worker runs
both the admit and the cache roles (the default all-roles worker), the exact table's partition for the key is
often in this very process; then admit reads it and answers at once, with the same response, counts and
decision records the lookup stage would have produced.

Correctness rests on ownership: the exact table is partitioned by dedup key, and only the process that owns a
key's partition (as an active, recovered table partition) has its entries and sees every purge. ``owns`` says
so; anything else, including a rebalance in progress, takes the long way, which is always right. Only a read
happens here: claims, coalescing and cache writes stay with the lookup and complete stages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from schemas.records import Job, now_ms
from streams.stages.lookup import LookupStage
from streams.stages.outgoing import Outgoing


class ExactShortcut:
    def __init__(self, lookup: LookupStage, owns: Callable[[str], bool]) -> None:
        self.lookup = lookup
        self.owns = owns  # dedup key -> this process holds its exact-table partition, recovered and active
        self.counts: Counter[str] = Counter()

    def find(self, job: Job) -> dict[str, Any] | None:
        """The fresh exact entry for the job if this process may answer it here; nothing changes."""
        entry = self.lookup.exact_entry(job, now_ms())
        if entry is None:
            return None
        if not self.owns(job.key):
            self.counts["not_owner"] += 1
            return None
        return entry

    def answer(self, job: Job, entry: dict[str, Any]) -> list[Outgoing]:
        self.counts["answered"] += 1
        return self.lookup.answer_exact(job, entry, via="admit")
