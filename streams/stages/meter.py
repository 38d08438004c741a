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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from schemas.parse import InvalidMessage, parse_response
from schemas.records import Response, dumps, now_ms
from streams.policy.aggregates import Totals, window_start
from streams.policy.cost import UsageRecord
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.outgoing import Outgoing, Source, dead_letter

Send = Callable[[list[Outgoing]], Awaitable[None]]  # publish and wait for the broker's acknowledgement
DIMENSIONS = ("tenant", "session", "tier", "feature", "model")
WINDOW_MS = 60_000
KEEP_WINDOWS = 60


class Aggregates:
    """Running totals and tumbling 1-minute windows per dimension value (this process's partitions)."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], Totals] = {}
        self.windows: dict[tuple[str, str, int], Totals] = {}
        self.overall = Totals()

    def add(self, usage: dict[str, Any]) -> None:
        busy = float(usage.get("busy_ms") or 0.0)
        self.overall.add_usage(usage, busy_ms=busy)
        window = window_start(int(usage.get("created_at") or now_ms()), WINDOW_MS)
        for dim in DIMENSIONS:
            value = usage.get(dim)
            if value is None or value == "":
                continue
            self.running.setdefault((dim, str(value)), Totals()).add_usage(usage, busy_ms=busy)
            self.windows.setdefault((dim, str(value), window), Totals()).add_usage(usage, busy_ms=busy)
        if len(self.windows) > KEEP_WINDOWS * 64:
            oldest = window - KEEP_WINDOWS * WINDOW_MS
            self.windows = {k: v for k, v in self.windows.items() if k[2] >= oldest}


class MeterStage:
    def __init__(
        self,
        settings: Settings,
        ledger: MutableMapping[str, dict[str, Any]],
        baseline_price: Callable[[], Any],
        completion_tokens: Callable[[str, str], int] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.baseline_price = baseline_price  # the frontier tier's price, read at use (the config reloads)
        self.completion_tokens = completion_tokens
        self.aggregates = Aggregates()
        self.counts: Counter[str] = Counter()
        self.trail = DecisionTrail(settings)
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self.started_ms = now_ms()

    def rebuild(self) -> None:
        """Recompute the aggregates from the ledger (after table recovery)."""
        self.aggregates = Aggregates()
        for usage in list(self.ledger.values()):
            self.aggregates.add(usage)

    async def handle(self, raw: bytes, source: Source, send: Send) -> None:
        """One response (see :meth:`handle_batch`)."""
        await self.handle_batch([(raw, source)], send)

    async def handle_batch(
        self, batch: list[tuple[bytes, Source]], send: Send, enter: Callable[[int], None] | None = None
    ) -> None:
        """Publish the batch's usage records and wait for Kafka to have them all, *then* record the ids in the
        ledger: a crash in between re-publishes them (consumers dedup by id), while the opposite order could lose
        them. One acknowledgement per batch instead of one per response is what lets the meter keep up.

        ``enter(i)`` runs before the ledger write for ``batch[i]``: a changelog-backed ledger writes each id to
        the changelog partition of the message it came from, so the agent makes that message the current one."""
        out: list[Outgoing] = []
        counted: dict[str, tuple[int, dict[str, Any]]] = {}  # request id -> (batch index, usage), arrival order
        for index, (raw, source) in enumerate(batch):
            try:
                response = parse_response(raw)
            except InvalidMessage as exc:
                self.counts[f"deadletter:{exc.reason}"] += 1
                out.append(dead_letter(self.settings.topic("deadletter"), raw, source, exc))
                continue
            if response.id in counted or response.id in self.ledger:
                self.counts["duplicate"] += 1
                continue
            usage = self.usage_of(response)
            counted[response.id] = (index, usage)
            out.append(Outgoing(self.settings.topic("usage"), response.session.encode(), dumps(usage)))
            out += self.trail.final(response, usage)
        if not out:
            return
        await send(out)
        for request_id, (index, usage) in counted.items():
            if enter is not None:
                enter(index)
            self.ledger[request_id] = usage
            self.aggregates.add(usage)
        self.counts["counted"] += len(counted)

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
        """``sluice.costs`` records: running totals and the current window per dimension value, plus overall."""
        topic = self.settings.topic("costs")
        wall = max(1, now - self.started_ms)
        out = [self._cost(topic, "all", "all", None, self.aggregates.overall, now, wall)]
        current = window_start(now, WINDOW_MS)
        for (dim, value), totals in self.aggregates.running.items():
            out.append(self._cost(topic, dim, value, None, totals, now, wall))
        for (dim, value, window), totals in self.aggregates.windows.items():
            if window >= current - WINDOW_MS:  # the current and the just-closed window
                out.append(self._cost(topic, dim, value, window, totals, now, WINDOW_MS))
        return out

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
