"""What the log says happened to a request, and the outcome records replay compares (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.records import Request


@dataclass
class Logged:
    """One request as the log tells it: the request record (None when past retention) and each stage's
    decision record (dicts as on ``sluice.decisions``)."""

    id: str
    tenant: str
    session: str
    at: int  # ms: when the request was published
    request: Request | None = None
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> record

    def data(self, stage: str) -> dict[str, Any]:
        return dict((self.decisions.get(stage) or {}).get("data") or {})


@dataclass
class Outcome:
    status: str  # ok | rejected | error
    kind: str  # cache | local | cloud | none
    tier: str = ""  # tier name ("" for cache and none)
    cache: str | None = None
    cost_usd: float = 0.0
    reason: str | None = None
    tokens: tuple[int, int] = (0, 0)
    latency_ms: float = 0.0
    estimated: bool = False

    def label(self) -> str:
        if self.status == "rejected":
            return f"rejected ({self.reason})"
        where = f"cache:{self.cache}" if self.kind == "cache" else (self.tier or self.kind)
        return f"{self.status} {where} ${self.cost_usd:.6f}"


@dataclass
class Replayed:
    logged: Logged
    actual: Outcome
    candidate: Outcome
    why: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        a, c = self.actual, self.candidate
        return (a.status, a.kind, a.tier, a.cache) != (c.status, c.kind, c.tier, c.cache) or (
            abs(a.cost_usd - c.cost_usd) > 1e-12
        )


def actual_outcome(log: Logged) -> Outcome:
    """What happened, from the meter's record (else the latest stage that decided)."""
    final, admit = log.decisions.get("meter"), log.decisions.get("admit") or {}
    tenant_budget = log.decisions.get("tenant_budget") or {}
    if final:
        d = final["data"]
        kind = str(d.get("tier") or "none")
        usage = d.get("usage") or [0, 0]
        return Outcome(
            status=str(d.get("status") or final.get("verdict") or "ok"),
            kind=kind,
            tier="" if kind in ("cache", "none") else str(d.get("route_tier") or kind),
            cache=d.get("cache"),
            cost_usd=float(d.get("cost_usd") or 0.0),
            reason=final.get("reason"),
            tokens=(int(usage[0]), int(usage[1])),
            latency_ms=float(d.get("latency_ms") or 0.0),
        )
    for record in (admit, tenant_budget):
        if record.get("verdict") in ("rejected", "deadletter"):
            return Outcome("rejected", "none", reason=record.get("reason"))
    return Outcome("error", "none", reason="no_final_decision")


def served_tokens(log: Logged) -> tuple[int, int] | None:
    """Tokens of the answer this request got or reused (a tier's usage, or a cache hit's saved usage)."""
    for stage in ("local", "cloud"):
        usage = log.data(stage).get("usage")
        if usage and log.decisions[stage].get("verdict") == "ok":
            return int(usage[0]), int(usage[1])
    saved = (log.data("lookup").get("cache") or {}).get("saved")
    if saved and (saved[0] or saved[1]):
        return int(saved[0]), int(saved[1])
    return None
