"""Meter stage: every final response → exactly one usage record, and running cost aggregates.

Runs on ``sluice.responses`` (key: request id, so one partition owns each id). ``ledger`` (a Faust table,
changelog-backed) maps request id → usage record: it is the dedup set *and* the source of the aggregates, so a
redelivered or duplicated response is counted once, and after a restart the aggregates are rebuilt from the
recovered ledger instead of being replayed (which could count twice).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from schemas.parse import InvalidMessage, parse_response
from schemas.records import Response, dumps, now_ms
from streams.policy.aggregates import Totals, group_keys, window_start
from streams.policy.cost import UsageRecord
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.meter_horizon import LedgerHorizon, Rollup, entry_usage
from streams.stages.outgoing import Outgoing, Source, dead_letter

Send = Callable[[list[Outgoing]], Awaitable[None]]  # publish and wait for the broker's acknowledgement
DIMENSIONS = ("tenant", "session", "tier", "feature", "model")
# Per-minute windows for the dimensions a dashboard plots over time. Not per session: with a session per request
# they were one more record per request in every snapshot (running totals per session are kept and published).
WINDOW_DIMENSIONS = frozenset(DIMENSIONS) - {"session"}
WINDOW_MS = 60_000


class Aggregates:
    """Running totals per dimension value and tumbling 1-minute windows per ``WINDOW_DIMENSIONS`` value (this
    process's partitions).

    ``dirty`` and ``dirty_windows``: the keys changed since the last snapshot (only those are re-published).
    Sessions are forgotten once idle past the ledger horizon (see meter_horizon.py), so the running totals stay
    bounded; windows are kept for the newest window start seen and the one before it (the ones a snapshot can
    still change)."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], Totals] = {}
        self.windows: dict[tuple[str, str, int], Totals] = {}
        self.overall = Totals()
        self.dirty: set[tuple[str, str]] = set()
        self.dirty_windows: set[tuple[str, str, int]] = set()
        self.newest_window = 0
        self.session_seen: dict[str, int] = {}

    def add(self, usage: dict[str, Any]) -> None:
        busy = float(usage.get("busy_ms") or 0.0)
        self.overall.add_usage(usage, busy_ms=busy)
        created = int(usage.get("created_at") or now_ms())
        window = window_start(created, WINDOW_MS)
        if window > self.newest_window:
            self._advance(window)
        for key in group_keys(usage, DIMENSIONS):
            self.running.setdefault(key, Totals()).add_usage(usage, busy_ms=busy)
            self.dirty.add(key)
            if key[0] in WINDOW_DIMENSIONS:
                window_key = (*key, window)
                self.windows.setdefault(window_key, Totals()).add_usage(usage, busy_ms=busy)
                self.dirty_windows.add(window_key)
        session = usage.get("session")
        if session:
            self.session_seen[str(session)] = max(self.session_seen.get(str(session), 0), created)

    def _advance(self, window: int) -> None:
        """A new newest window: drop windows older than the one before it (once a minute, not per record; a late
        record for an older window opens it again, and the next advance drops it)."""
        self.newest_window = window
        oldest = window - WINDOW_MS
        self.windows = {k: v for k, v in self.windows.items() if k[2] >= oldest}

    def add_rollup(self, rollup: Rollup) -> None:
        self.overall.merge(rollup.overall)
        for key, totals in rollup.running.items():
            self.running.setdefault(key, Totals()).merge(totals)
            self.dirty.add(key)

    def forget_sessions(self, idle_before: int) -> None:
        for session, seen in list(self.session_seen.items()):
            if seen < idle_before:
                del self.session_seen[session]
                self.running.pop(("session", session), None)
                self.dirty.discard(("session", session))


@dataclass
class Billing:
    """A batch between :meth:`MeterStage.prepare` and :meth:`MeterStage.record`."""

    batch: list[tuple[bytes, Source]]
    out: list[Outgoing] = field(default_factory=list)
    counted: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # id -> (batch index, usage)


class MeterStage:
    def __init__(
        self,
        settings: Settings,
        ledger: MutableMapping[str, Any],
        baseline_price: Callable[[], Any],
        completion_tokens: Callable[[str, str], int] | None = None,
        rollups: MutableMapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        horizon_ms = int(settings.meter_dedup_horizon_s * 1000)
        self.horizon = LedgerHorizon(ledger, {} if rollups is None else rollups, horizon_ms)
        self.baseline_price = baseline_price  # the frontier tier's price, read at use (the config reloads)
        self.completion_tokens = completion_tokens
        self.aggregates = Aggregates()
        self.counts: Counter[str] = Counter()
        self.trail = DecisionTrail(settings)
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self.started_ms = now_ms()
        self._pending: set[str] = set()  # ids prepared and not yet recorded

    def rebuild(self) -> None:
        """Recompute the aggregates from the rollups and the ledger (after table recovery)."""
        self.aggregates = Aggregates()
        self.forget_pending()
        for rollup in self.horizon.all_rollups():
            self.aggregates.add_rollup(rollup)
        self.horizon.reindex()
        for entry in list(self.ledger.values()):
            if self.horizon.counts_in_totals(entry):
                self.aggregates.add(entry_usage(entry))

    async def handle(self, raw: bytes, source: Source, send: Send) -> None:
        """One response (see :meth:`handle_batch`)."""
        await self.handle_batch([(raw, source)], send)

    async def handle_batch(self, batch: list[tuple[bytes, Source]], send: Send) -> None:
        """Publish the batch's usage records, wait for Kafka to have them all, *then* record the ids in the
        ledger (:meth:`prepare`, then :meth:`record`)."""
        billing = self.prepare(batch)
        if billing.out:
            await send(billing.out)
        self.record(billing)

    def forget_pending(self) -> None:
        """Drop the prepared ids not recorded (their events were never acked, so Kafka delivers them again)."""
        self._pending.clear()

    def prepare(self, batch: list[tuple[bytes, Source]]) -> Billing:
        """The usage records (and dead letters, decisions) for ``batch``, whose ids stay pending until
        :meth:`record`. The caller publishes ``out`` and waits for the acknowledgement before recording: a crash
        in between re-publishes them (consumers dedup by id), while the opposite order could lose them. A copy of
        a pending id (a redelivery that overtook the first) is dropped here like a copy of a recorded one."""
        billing = Billing(batch)
        for index, (raw, source) in enumerate(batch):
            try:
                response = parse_response(raw)
            except InvalidMessage as exc:
                self.counts[f"deadletter:{exc.reason}"] += 1
                billing.out.append(dead_letter(self.settings.topic("deadletter"), raw, source, exc))
                continue
            if response.id in self._pending or response.id in self.ledger:
                self.counts["duplicate"] += 1
                continue
            usage = self.usage_of(response)
            self._pending.add(response.id)
            billing.counted[response.id] = (index, usage)
            billing.out.append(Outgoing(self.settings.topic("usage"), response.session.encode(), dumps(usage)))
            billing.out += self.trail.final(response, usage)
        return billing

    def record(self, billing: Billing) -> None:
        """Write the billed ids to the ledger and the aggregates (after Kafka acknowledged ``billing.out``).

        A changelog-backed ledger writes to the changelog partition of the current event: the agent makes the
        response being recorded the current one (streams/agents/meter.py)."""
        batch = billing.batch
        partitions: set[int] = set()
        for request_id, (index, usage) in billing.counted.items():
            partition = batch[index][1].partition
            entry = self.horizon.stamp(usage, partition)
            self.ledger[request_id] = entry
            self._pending.discard(request_id)
            self.horizon.counted(request_id, entry)
            self.aggregates.add(usage)
            partitions.add(partition)
        self.counts["counted"] += len(billing.counted)
        for partition in partitions:
            if self.horizon.due(partition):
                self.counts["pruned"] += self.horizon.prune(partition)
                self.aggregates.forget_sessions(self.horizon.cutoff(partition))

    def usage_of(self, response: Response) -> dict[str, Any]:
        route = response.route or {}
        feature = route.get("feature") if isinstance(route.get("feature"), str) else None
        if response.tier == "cache" or response.status == "rejected":
            attempts = 0
        else:
            attempts = int(route.get("attempts") or 1)
        if (
            response.status == "ok"
            and response.tier in ("local", "cloud")
            and response.usage.completion_tokens == 0
            and response.text
            and self.completion_tokens is not None
        ):
            # A provider that reported no usage: count the completion with the model's own tokenizer.
            from dataclasses import replace

            from schemas.records import Usage

            counted = self.completion_tokens(response.text, response.model)
            response = replace(response, usage=Usage(response.usage.prompt_tokens, counted))
        record = UsageRecord.from_response(
            response, baseline_price=self.baseline_price(), feature=feature, attempts=attempts
        )
        usage = record.to_dict()
        usage["busy_ms"] = float(route.get("generation_ms") or 0.0) if response.tier == "local" else 0.0
        return usage

    def snapshot(self, now: int) -> list[Outgoing]:
        """All of :meth:`snapshot_records` at once."""
        return list(self.snapshot_records(now))

    def changed_totals(self) -> int:
        """How many totals and windows the next snapshot will send."""
        return len(self.aggregates.dirty) + len(self.aggregates.dirty_windows)

    def snapshot_records(self, now: int) -> Iterator[Outgoing]:
        """``sluice.costs`` records: overall, and the running totals and windows changed since the last snapshot
        (the topic is keyed per dimension value and window, so a compacted read holds the latest of each).

        Lazy, so the caller can spread thousands of sessions' totals over time; the changed keys are taken at the
        first record, and a key that changes meanwhile is sent again next time."""
        aggregates = self.aggregates
        dirty, aggregates.dirty = sorted(aggregates.dirty), set()
        dirty_windows, aggregates.dirty_windows = sorted(aggregates.dirty_windows), set()
        topic = self.settings.topic("costs")
        wall = max(1, now - self.started_ms)
        yield self._cost(topic, "all", "all", None, aggregates.overall, now, wall)
        for dim, value in dirty:
            totals = aggregates.running.get((dim, value))
            if totals is not None:
                yield self._cost(topic, dim, value, None, totals, now, wall)
        for dim, value, window in dirty_windows:
            totals = aggregates.windows.get((dim, value, window))
            if totals is not None:
                yield self._cost(topic, dim, value, window, totals, now, WINDOW_MS)

    def _cost(
        self, topic: str, dim: str, value: str, window: int | None, totals: Totals, now: int, wall: int
    ) -> Outgoing:
        record = {
            "v": 1,
            "dim": dim,
            "value": value,
            "window_start": window,
            "window_ms": WINDOW_MS if window is not None else None,
            "instance": self.instance,
            "emitted_at": now,
            **totals.summary(wall_ms=wall if dim == "tier" and value == "local" else None),
        }
        key = f"{dim}:{value}:{window or 'total'}:{self.instance}".encode()
        return Outgoing(topic, key, dumps(record))
