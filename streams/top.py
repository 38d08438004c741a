"""``sluice top``: one screen that says whether Sluice keeps up and what it costs right now.

Everything comes from Kafka itself, so it works against any deployment without a metrics stack: committed vs end
offsets (lag), end offsets of ``responses`` by timestamp (throughput), the last minute of ``sluice.usage``
(hit rate and spend per tenant) and the compacted ``sluice.control`` (breakers). ``--once`` prints one frame.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.records import now_ms
from streams.kafka_clients import assign_all, groupless_consumer, stop_consumer
from streams.lag import GroupLag, LagReader
from streams.policy.aggregates import Totals
from streams.settings import Settings
from streams.topics import partition_counts

# (role, topic): each role is its own consumer group ``<prefix>-<role>`` (``<prefix>-worker`` with SLUICE_SINGLE_GROUP).
GROUPS = (
    ("admit", "requests"),
    ("cache", "lookup"),
    ("cache", "results"),
    ("local", "tier.local"),
    ("local", "tier.local.batch"),
    ("cloud", "tier.cloud"),
    ("meter", "responses"),
)
USAGE_WINDOW_MS = 60_000


class Tail:
    """A group-less consumer over every partition of a topic, read from ``since_ms`` (None: the start) onwards."""

    def __init__(self, settings: Settings, topic: str, since_ms: int | None) -> None:
        self.settings, self.topic, self.since_ms = settings, topic, since_ms
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []

    async def _start(self) -> None:
        s = self.settings
        consumer = groupless_consumer(s)
        await consumer.start()
        try:
            self.tps = await assign_all(consumer, s, self.topic)
        except LookupError:
            await stop_consumer(consumer)
            raise
        starts = await consumer.beginning_offsets(self.tps)
        ends = await consumer.end_offsets(self.tps)
        found = await consumer.offsets_for_times(dict.fromkeys(self.tps, self.since_ms)) if self.since_ms else {}
        for tp in self.tps:  # explicit seeks, as in streams.report
            hit = found.get(tp)
            consumer.seek(tp, starts[tp] if self.since_ms is None else hit.offset if hit else ends[tp])
        self.consumer = consumer

    async def poll(self) -> list[tuple[int, dict[str, Any]]]:
        """(timestamp ms, record) for everything new up to the end offsets as of this call."""
        if self.consumer is None:
            await self._start()
        assert self.consumer is not None
        ends = await self.consumer.end_offsets(self.tps)
        out: list[tuple[int, dict[str, Any]]] = []
        pending = {tp for tp in self.tps if await self.consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + 5.0
        while pending and time.monotonic() < deadline:
            batches = await self.consumer.getmany(*pending, timeout_ms=200)
            for records in batches.values():
                for m in records:
                    try:
                        value = orjson.loads(m.value) if m.value else None
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        out.append((m.timestamp, value))
            pending = {tp for tp in pending if await self.consumer.position(tp) < ends[tp]}
        return out

    async def close(self) -> None:
        if self.consumer is not None:
            await stop_consumer(self.consumer)


@dataclass
class Frame:
    lags: list[tuple[GroupLag, bool]] = field(default_factory=list)  # (lag, topic exists)
    responses_per_s: float | None = None
    tenants: dict[str, Totals] = field(default_factory=dict)
    breakers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Top:
    """Holds the clients between frames so a refresh costs a few metadata calls and the new records only."""

    def __init__(self, settings: Settings, interval_s: float) -> None:
        self.settings, self.interval_s = settings, interval_s
        self.lag = LagReader(settings)
        self.usage = Tail(settings, settings.topic("usage"), now_ms() - USAGE_WINDOW_MS)
        self.control = Tail(settings, settings.topic("control"), None)
        self.recent: deque[tuple[int, dict[str, Any]]] = deque()
        self.breakers: dict[str, dict[str, Any]] = {}
        self.offsets: AIOKafkaConsumer | None = None
        self.responses: list[TopicPartition] = []

    async def close(self) -> None:
        for tail in (self.usage, self.control):
            await tail.close()
        if self.offsets is not None:
            await stop_consumer(self.offsets)
        await self.lag.close()

    async def frame(self) -> Frame:
        f = Frame()
        for role, name in GROUPS:
            lag = await self.lag.read(self.settings.group(role), self.settings.topic(name))
            f.lags.append((lag, bool(lag.partitions)))
        f.responses_per_s = await self._throughput()
        try:
            self.recent.extend(await self.usage.poll())
        except LookupError as exc:
            f.notes.append(str(exc))
        cutoff = now_ms() - USAGE_WINDOW_MS
        while self.recent and self.recent[0][0] < cutoff:
            self.recent.popleft()
        seen: set[str] = set()
        for _, usage in self.recent:
            if usage.get("id") in seen:  # redelivery: count each request once
                continue
            seen.add(str(usage.get("id")))
            f.tenants.setdefault(str(usage.get("tenant") or "(none)"), Totals()).add_usage(usage)
        try:
            for _, event in await self.control.poll():
                if event.get("type") == "breaker" and isinstance(event.get("session"), str):
                    self.breakers[event["session"]] = event
        except LookupError as exc:
            f.notes.append(str(exc))
        f.breakers = [e for e in self.breakers.values() if e.get("state") != "closed"]
        return f

    async def _throughput(self) -> float | None:
        """Responses published in the last interval: end offsets minus the offsets at (now - interval)."""
        s, topic = self.settings, self.settings.topic("responses")
        if self.offsets is None:
            self.offsets = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, **s.kafka_client_options())
            await self.offsets.start()
            count = (await partition_counts(s, [topic])).get(topic, 0)
            self.responses = [TopicPartition(topic, p) for p in range(count)]
        if not self.responses:
            return None
        ends = await self.offsets.end_offsets(self.responses)
        found = await self.offsets.offsets_for_times(
            dict.fromkeys(self.responses, now_ms() - int(self.interval_s * 1000))
        )
        total = sum(ends[tp] - (hit.offset if (hit := found.get(tp)) else ends[tp]) for tp in self.responses)
        return total / self.interval_s


def render(f: Frame, settings: Settings, interval_s: float) -> str:
    lines = [f"sluice top · {settings.bootstrap} · prefix {settings.topic_prefix} · {time.strftime('%H:%M:%S')}", ""]
    lines.append(f"{'consumer group':<28} {'topic':<34} {'lag':>8}  per partition")
    for lag, exists in f.lags:
        if not exists:
            lines.append(f"{lag.group:<28} {lag.topic:<34} {'-':>8}  (no such topic)")
            continue
        parts = " ".join(f"{p}:{n}" for p, n in sorted(lag.partitions.items()))
        lines.append(f"{lag.group:<28} {lag.topic:<34} {lag.total:>8}  {parts}")
    rate = "-" if f.responses_per_s is None else f"{f.responses_per_s:.2f}/s"
    lines += ["", f"throughput: {rate} responses over the last {interval_s:g}s", ""]
    lines.append(f"{'tenant (last 60s)':<28} {'requests':>9} {'hit rate':>9} {'cost/min $':>12} {'per 1k $':>11}")
    if not f.tenants:
        lines.append("  (no usage in the last minute)")
    for name, t in sorted(f.tenants.items(), key=lambda kv: (-kv[1].cost_usd, kv[0])):
        lines.append(
            f"{name[:28]:<28} {t.requests:>9} {t.cache_hit_rate() or 0:>9.1%} {t.cost_usd:>12.6f} "
            f"{t.cost_per_1k_requests() or 0:>11.6f}"
        )
    lines += ["", f"open breakers: {len(f.breakers)}"]
    for e in sorted(f.breakers, key=lambda e: str(e.get("session"))):
        until = e.get("until_ms")
        left = f"{max(0, (int(until) - now_ms()) / 1000):.0f}s left" if until else ""
        lines.append(
            f"  session {str(e['session'])[:40]:<40} tenant {str(e.get('tenant') or '')[:20]:<20} "
            f"{e.get('state')} ({e.get('reason') or '-'}) {left}".rstrip()
        )
    lines += [f"note: {n}" for n in f.notes]
    return "\n".join(lines)


async def watch(settings: Settings, interval_s: float, once: bool) -> None:
    top, tty = Top(settings, interval_s), sys.stdout.isatty()
    try:
        while True:
            text = render(await top.frame(), settings, interval_s)
            if once:
                print(text)
                return
            sys.stdout.write(("\x1b[H\x1b[2J" if tty else "\n") + text + "\n")
            sys.stdout.flush()
            await asyncio.sleep(interval_s)
    finally:
        await top.close()


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        asyncio.run(watch(settings, max(0.25, args.interval), args.once))
    except KeyboardInterrupt:
        pass
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("top", help="live view: lag per group, throughput, cost per tenant, open breakers")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=run)
