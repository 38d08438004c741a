"""Side-by-side summary of a replay: what happened vs what the candidate would have done (pure rendering)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from streams.policy.replay import Outcome, Replayed

SAMPLE = 10


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Cost per 1,000 requests, cache hit rate, tier shares and rejections of one column."""
    n = len(outcomes)
    cost = sum(o.cost_usd for o in outcomes)
    hits = Counter(o.cache for o in outcomes if o.kind == "cache" and o.cache)
    kinds = Counter(o.kind for o in outcomes)
    tiers = Counter(o.tier or o.kind for o in outcomes)
    rejected = Counter(o.reason or "rejected" for o in outcomes if o.status == "rejected")
    return {
        "requests": n,
        "cost_usd": round(cost, 8),
        "cost_per_1k_requests_usd": round(cost * 1000 / n, 8) if n else 0.0,
        "cache_hit_rate": round(sum(hits.values()) / n, 4) if n else 0.0,
        "cache_hits": dict(hits),
        "tier_shares": {k: round(v / n, 4) for k, v in sorted(kinds.items())} if n else {},
        "tiers": dict(sorted(tiers.items())),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(rejected),
        "errors": sum(1 for o in outcomes if o.status == "error"),
        "estimated": sum(1 for o in outcomes if o.estimated),
    }


def build(replayed: Sequence[Replayed], *, since: int, until: int, tenant: str | None) -> dict[str, Any]:
    changed = [r for r in replayed if r.changed]
    return {
        "since_ms": since,
        "until_ms": until,
        "tenant": tenant,
        "actual": summarize([r.actual for r in replayed]),
        "candidate": summarize([r.candidate for r in replayed]),
        "changed": len(changed),
        "newly_rejected": sum(1 for r in changed if r.candidate.status == "rejected" and r.actual.status != "rejected"),
        "sample": [
            {
                "id": r.logged.id,
                "tenant": r.logged.tenant,
                "actual": r.actual.label(),
                "candidate": r.candidate.label() + (" (estimated)" if r.candidate.estimated else ""),
                "why": r.why or ["prices"],
            }
            for r in changed[:SAMPLE]
        ],
    }


def render_text(report: dict[str, Any]) -> str:
    a, c = report["actual"], report["candidate"]
    rows = [
        ("requests", a["requests"], c["requests"]),
        ("cost USD", f"{a['cost_usd']:.6f}", f"{c['cost_usd']:.6f}"),
        ("cost per 1,000 requests", f"{a['cost_per_1k_requests_usd']:.6f}", f"{c['cost_per_1k_requests_usd']:.6f}"),
        ("cache hit rate", f"{a['cache_hit_rate']:.1%}", f"{c['cache_hit_rate']:.1%}"),
        ("rejected", a["rejected"], c["rejected"]),
        ("errors", a["errors"], c["errors"]),
    ]
    for kind in sorted(set(a["tier_shares"]) | set(c["tier_shares"])):
        rows.append((f"share {kind}", f"{a['tier_shares'].get(kind, 0):.1%}", f"{c['tier_shares'].get(kind, 0):.1%}"))
    for reason in sorted(set(a["rejected_by_reason"]) | set(c["rejected_by_reason"])):
        rows.append(
            (f"rejected: {reason}", a["rejected_by_reason"].get(reason, 0), c["rejected_by_reason"].get(reason, 0))
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'actual':>14}  {'candidate':>14}"]
    lines += [f"{name:{width}}  {x!s:>14}  {y!s:>14}" for name, x, y in rows]
    lines.append(f"\n{report['changed']} of {a['requests']} decisions change ({c['estimated']} priced by estimate)")
    for s in report["sample"]:
        lines.append(f"  {s['id']} [{s['tenant']}]: {s['actual']} → {s['candidate']}: {'; '.join(s['why'])}")
    return "\n".join(lines)
