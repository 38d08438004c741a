"""``sluice report``: cost per tenant, session, tier and feature, from the replayable ``sluice.usage`` log.

Reads the topic from ``--since`` (offsets by timestamp) to its current end, counts each request id once, and
prints the figures; ``--json`` ends with one JSON object; ``--chart`` writes a self-contained HTML chart.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.kafka_clients import assign_all, groupless_consumer, stop_consumer
from streams.policy.aggregates import Totals
from streams.settings import Settings

DIMENSIONS = ("tenant", "session", "tier", "feature")


@dataclass
class Report:
    overall: Totals = field(default_factory=Totals)
    by: dict[str, dict[str, Totals]] = field(default_factory=lambda: {d: {} for d in DIMENSIONS})
    duplicates: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.overall.add_usage(usage)
        for dim in DIMENSIONS:
            value = usage.get(dim) or "(none)"
            self.by[dim].setdefault(str(value), Totals()).add_usage(usage)

    def summary(self) -> dict[str, Any]:
        o = self.overall
        return {
            "requests": o.requests,
            "cost_usd": round(o.cost_usd, 8),
            "baseline_cost_usd": round(o.baseline_cost_usd, 8),
            "savings_usd": round(o.savings_usd(), 8),
            "savings_ratio": o.savings_ratio(),
            "cost_per_1k_requests": o.cost_per_1k_requests(),
            "cache_hit_rate": o.cache_hit_rate(),
            "latency_p50_ms": o.latency_p50(),
            "latency_p95_ms": o.latency_p95(),
            "duplicates_ignored": self.duplicates,
            **{
                f"by_{dim}": {k: round(t.cost_usd, 8) for k, t in sorted(self.by[dim].items())}
                for dim in ("tenant", "tier", "feature")
            },
        }


def build_report(records: Iterable[dict[str, Any]]) -> Report:
    report, seen = Report(), set()
    for usage in records:
        rid = usage.get("id")
        if rid in seen:
            report.duplicates += 1
            continue
        seen.add(rid)
        report.add(usage)
    return report


async def read_usage(settings: Settings, since_ms: int | None) -> list[dict[str, Any]]:
    """Every usage record from ``since_ms`` (or the start) up to the end offsets read when we began."""
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        tps = await assign_all(consumer, settings, settings.topic("usage"))
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps}) if since_ms is not None else {}
        for tp in tps:  # explicit seeks: a lazy seek_to_beginning after end_offsets resolved to the end here
            if since_ms is None:
                consumer.seek(tp, starts[tp])
            else:
                hit = found.get(tp)
                consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        records: list[dict[str, Any]] = []
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, batch in batches.items():
                records.extend(orjson.loads(m.value) for m in batch if m.value)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    finally:
        await stop_consumer(consumer)


def render_text(report: Report, top: int = 10) -> str:
    o = report.overall
    ratio = o.savings_ratio()
    lines = [
        f"requests {o.requests}   cost ${o.cost_usd:.6f}   baseline ${o.baseline_cost_usd:.6f}   "
        f"saved ${o.savings_usd():.6f}" + (f" ({ratio:.1%})" if ratio is not None else ""),
        f"cost per 1,000 requests ${o.cost_per_1k_requests() or 0:.6f}   cache hit rate {o.cache_hit_rate() or 0:.1%}",
    ]
    for dim in DIMENSIONS:
        rows = sorted(report.by[dim].items(), key=lambda kv: -kv[1].cost_usd)[:top]
        lines.append(f"\nby {dim}:")
        lines.append(f"  {'':28} {'requests':>9} {'cost $':>12} {'per 1k $':>11} {'saved $':>11} {'hits':>6}")
        for name, t in rows:
            lines.append(
                f"  {name[:28]:28} {t.requests:>9} {t.cost_usd:>12.6f} {t.cost_per_1k_requests() or 0:>11.6f} "
                f"{t.savings_usd():>11.6f} {sum(t.cache_hits.values()):>6}"
            )
    return "\n".join(lines)


def render_chart(report: Report, path: Path) -> None:
    """A self-contained HTML page with SVG bars: cost vs baseline per tenant, cost per tier and feature."""
    sections = []
    for dim in ("tenant", "tier", "feature"):
        rows = sorted(report.by[dim].items(), key=lambda kv: -kv[1].baseline_cost_usd)[:15]
        peak = max([max(t.cost_usd, t.baseline_cost_usd) for _, t in rows] + [1e-12])
        bars = []
        for i, (name, t) in enumerate(rows):
            y = 24 * i + 4
            w_cost, w_base = 480 * t.cost_usd / peak, 480 * t.baseline_cost_usd / peak
            bars.append(
                f'<text x="0" y="{y + 14}">{html.escape(name[:24])}</text>'
                f'<rect x="170" y="{y}" width="{w_base:.1f}" height="9" fill="#c8d3e6"><title>baseline '
                f"${t.baseline_cost_usd:.6f}</title></rect>"
                f'<rect x="170" y="{y + 10}" width="{w_cost:.1f}" height="9" fill="#2f6fdb"><title>cost '
                f"${t.cost_usd:.6f}</title></rect>"
            )
        height = 24 * len(rows) + 8
        sections.append(
            f"<h2>cost by {dim} (dark) vs baseline (light)</h2>"
            f'<svg class="chart" data-dim="{dim}" width="680" height="{height}">{"".join(bars)}</svg>'
        )
    s = report.summary()
    page = (
        "<!doctype html><meta charset=utf-8><title>Sluice cost report</title>"
        "<style>body{font:14px system-ui;margin:24px}text{font:12px system-ui}</style>"
        f"<h1>Sluice cost report</h1><p>{s['requests']} requests · cost ${s['cost_usd']:.6f} · baseline "
        f"${s['baseline_cost_usd']:.6f} · savings {(s['savings_ratio'] or 0):.1%} · generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>" + "".join(sections)
    )
    path.write_text(page, encoding="utf-8")
