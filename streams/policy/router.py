"""Tier routing decision (pure). The foundation routes everything to the local tier."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from schemas.records import Request


@dataclass(frozen=True)
class RouteDecision:
    tier: str
    reason: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def route(request: Request, tiers: tuple[str, ...] = ("local",)) -> RouteDecision:
    """Pick a tier: an explicit ``metadata.route`` hint naming a known tier wins, else the first tier."""
    hint = request.metadata.get("route")
    if isinstance(hint, str) and hint in tiers:
        return RouteDecision(tier=hint, reason="hint")
    return RouteDecision(tier=tiers[0], reason="default")
