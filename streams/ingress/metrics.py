"""What the ingress knows about the whole system: Prometheus metrics and the dashboard's live summary.

The ingress sees only its own HTTP traffic, but cost, cache hits and savings happen downstream; so it folds in
``sluice.usage`` (one priced record per request, from any producer), ``sluice.control`` (breaker events) and
consumer-group lag, read by :class:`Feeds`. One :class:`Telemetry` per app owns its own registry, so several apps
(tests) can live in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.records import now_ms
from streams.kafka_clients import assign_all, stop_consumer
from streams.lag import LagReader
from streams.policy.aggregates import Totals
from streams.policy.seen_ids import SeenIds
from streams.settings import Settings

log = logging.getLogger(__name__)

# (role, topic): each role's consumer group is ``<prefix>-<role>``.
LAG_SOURCES: tuple[tuple[str, str], ...] = (
    ("admit", "requests"),
    ("cache", "lookup"),
    ("local", "tier.local"),
    ("cloud", "tier.cloud"),
    ("meter", "responses"),
)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SERIES_POINTS = 300  # dashboard history: 10 minutes at the default 2 s sample interval


class Telemetry:
    """Counters fed by usage records, live state (lag, breakers) and a short history for the dashboard."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sluice_requests", "Requests answered, by tier and status", ["tier", "status"], registry=r
        )
        self.cache_hits = Counter("sluice_cache_hits", "Answers served from the cache, by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "sluice_request_latency_seconds", "End-to-end latency", ["tier"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.cost = Counter("sluice_cost_usd", "Cost charged, USD", ["tenant", "tier"], registry=r)
        self.baseline = Counter("sluice_baseline_cost_usd", "Cost on the frontier model, USD", ["tenant"], registry=r)
        self.savings = Counter("sluice_savings_usd", "Baseline cost minus cost, USD (per request, >= 0)", registry=r)
        self.tokens = Counter("sluice_tokens", "Tokens billed, by tier and kind", ["tier", "kind"], registry=r)
        self.http = Counter("sluice_http_requests", "HTTP requests at the ingress", ["handler", "code"], registry=r)
        self.http_latency = Histogram(
            "sluice_http_request_duration_seconds",
            "Ingress handling time",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overall = Totals()
        self.by_tenant: dict[str, Totals] = {}
        self.by_tier: dict[str, Totals] = {}
        self.lag: dict[tuple[str, str], dict[int, int]] = {}  # (group, topic) -> partition -> lag
        self.breakers: dict[str, dict[str, Any]] = {}  # session -> latest breaker event
        self.series: deque[dict[str, Any]] = deque(maxlen=SERIES_POINTS)
        self._seen = SeenIds(max_size=100_000)
        r.register(_LiveCollector(self))

    def observe_usage(self, usage: dict[str, Any]) -> bool:
        """Count one ``sluice.usage`` record (once per request id); False if it was a repeat or malformed."""
        rid = usage.get("id")
        if not isinstance(rid, str) or not self._seen.add(rid, now_ms()):
            return False
        tier, tenant = str(usage.get("tier") or "none"), str(usage.get("tenant") or "")
        cost = float(usage.get("cost_usd") or 0.0)
        baseline = float(usage.get("baseline_cost_usd") or 0.0)
        self.requests.labels(tier, str(usage.get("status") or "ok")).inc()
        if usage.get("cache"):
            self.cache_hits.labels(str(usage["cache"])).inc()
        if usage.get("latency_ms") is not None:
            self.latency.labels(tier).observe(float(usage["latency_ms"]) / 1000.0)
        self.cost.labels(tenant, tier).inc(max(0.0, cost))
        self.baseline.labels(tenant).inc(max(0.0, baseline))
        self.savings.inc(max(0.0, baseline - cost))
        self.tokens.labels(tier, "prompt").inc(int(usage.get("prompt_tokens") or 0))
        self.tokens.labels(tier, "completion").inc(int(usage.get("completion_tokens") or 0))
        for totals in (
            self.overall,
            self.by_tenant.setdefault(tenant, Totals()),
            self.by_tier.setdefault(tier, Totals()),
        ):
            totals.add_usage(usage)
        return True

    def observe_control(self, event: dict[str, Any]) -> None:
        if event.get("type") == "breaker" and isinstance(event.get("session"), str):
            self.breakers[event["session"]] = event

    def open_breakers(self, now: int | None = None) -> list[dict[str, Any]]:
        """Sessions whose breaker is open now (an expired cooldown means half-open: no longer counted)."""
        now = now_ms() if now is None else now
        return [
            e
            for e in self.breakers.values()
            if e.get("state") == "open" and (e.get("until_ms") is None or int(e["until_ms"]) > now)
        ]

    def breaker_until_ms(self, session: str) -> int | None:
        event = self.breakers.get(session)
        return int(event["until_ms"]) if event and event.get("until_ms") is not None else None

    def set_lag(self, group: str, topic: str, partitions: dict[int, int]) -> None:
        self.lag[(group, topic)] = dict(partitions)

    def lag_by_group(self) -> dict[str, int]:
        return {group: sum(parts.values()) for (group, _), parts in sorted(self.lag.items())}

    def sample(self, now: int | None = None) -> None:
        """Append one point to the dashboard history."""
        o = self.overall
        self.series.append(
            {
                "t": now_ms() if now is None else now,
                "requests": o.requests,
                "cost_usd": round(o.cost_usd, 8),
                "savings_usd": round(o.savings_usd(), 8),
                "hit_rate": o.cache_hit_rate() or 0.0,
                "cost_by_tenant": {t: round(v.cost_usd, 8) for t, v in sorted(self.by_tenant.items())},
                "lag": self.lag_by_group(),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The dashboard's JSON: totals, per-tenant and per-tier figures, lag, open breakers, history."""
        o = self.overall

        def fig(t: Totals) -> dict[str, Any]:
            return {"requests": t.requests, "cost_usd": round(t.cost_usd, 8), "savings_usd": round(t.savings_usd(), 8)}

        return {
            "now_ms": now_ms(),
            **fig(o),
            "baseline_cost_usd": round(o.baseline_cost_usd, 8),
            "savings_ratio": o.savings_ratio(),
            "cache_hit_rate": o.cache_hit_rate(),
            "cache_hits": dict(o.cache_hits),
            "errors": o.errors,
            "latency_p50_ms": o.latency_p50(),
            "latency_p95_ms": o.latency_p95(),
            "by_tenant": {k: fig(v) for k, v in sorted(self.by_tenant.items())},
            "by_tier": {k: fig(v) for k, v in sorted(self.by_tier.items())},
            "lag": {
                g: {"topic": t, "total": sum(p.values()), "partitions": p} for (g, t), p in sorted(self.lag.items())
            },
            "breakers_open": self.open_breakers(),
            "series": list(self.series),
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Gauges computed at scrape time, so stale lag labels and expired breakers never linger."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "sluice_consumer_lag", "Messages not yet processed", labels=["group", "topic", "partition"]
        )
        for (group, topic), parts in sorted(self.t.lag.items()):
            for partition, value in sorted(parts.items()):
                lag.add_metric([group, topic, str(partition)], value)
        yield lag
        opened = self.t.open_breakers()
        per = GaugeMetricFamily(
            "sluice_breaker_open", "1 while a session's breaker is open", labels=["session", "tenant"]
        )
        for e in opened:
            per.add_metric([str(e["session"]), str(e.get("tenant") or "")], 1)
        yield per
        yield GaugeMetricFamily("sluice_breakers_open", "Sessions whose breaker is open", value=len(opened))


class Feeds:
    """Background readers: ``sluice.usage`` (records since this process started, or all retained ones),
    ``sluice.control`` (compacted: from the beginning, for the current breaker states) and lag every
    ``interval_s``. Each restarts after an error; usage is deduplicated by id, so a restart never counts twice."""

    def __init__(
        self, settings: Settings, telemetry: Telemetry, *, interval_s: float = 2.0, usage_from: str = "end"
    ) -> None:
        self.settings = settings
        self.t = telemetry
        self.interval_s = interval_s
        self.usage_since_ms: int | None = now_ms() if usage_from == "end" else None
        self.usage_ready = asyncio.Event()  # set once the usage reader has its start offsets
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forever("usage", self._read_usage)),
            asyncio.create_task(self._forever("control", self._read_control)),
            asyncio.create_task(self._forever("lag", self._poll_lag)),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forever(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away or topic missing: keep serving HTTP, retry shortly
                log.warning("ingress %s feed failed, retrying: %s", name, exc)
                await asyncio.sleep(max(1.0, self.interval_s))

    async def _consume(self, topic: str, since_ms: int | None, handle: Callable[[dict[str, Any]], Any]) -> None:
        """Read ``topic`` from the first record at or after ``since_ms`` (None: the beginning), forever."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **self.settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            tps = await assign_all(consumer, self.settings, self.settings.topic(topic))
            if since_ms is None:
                await consumer.seek_to_beginning(*tps)
            else:  # by time, not the end: a record written while this reader was starting is not skipped
                found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    hit = found.get(tp)
                    consumer.seek(tp, hit.offset if hit is not None else ends[tp])
            for tp in tps:
                await consumer.position(tp)
            if topic == "usage":
                self.usage_ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
                            value = orjson.loads(record.value) if record.value else None
                            if isinstance(value, dict):
                                handle(value)
        finally:
            await stop_consumer(consumer)

    async def _read_usage(self) -> None:
        await self._consume("usage", self.usage_since_ms, self.t.observe_usage)

    async def _read_control(self) -> None:
        await self._consume("control", None, self.t.observe_control)

    async def _poll_lag(self) -> None:
        reader = LagReader(self.settings)
        try:
            while True:
                started = time.monotonic()
                for role, topic in LAG_SOURCES:
                    try:
                        lag = await reader.read(self.settings.group(role), self.settings.topic(topic))
                        self.t.set_lag(lag.group, lag.topic, lag.partitions)
                    except Exception as exc:  # one unreadable group must not blank the others
                        log.debug("lag of %s on %s: %s", role, topic, exc)
                self.t.sample()
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            await reader.close()
