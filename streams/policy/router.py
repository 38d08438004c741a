"""Tier routing (pure): rules first, then the learned classifier's score against one cost/quality knob.

Order of rules, first match wins:
1. data residency: a local-only tenant never leaves local tiers, whatever else happens;
2. an explicit hint (``metadata.route`` naming a tier, or ``local`` / ``cloud``);
3. the local tier cannot take it: context (prompt estimate + ``max_tokens``) over its ``max_context``;
4. spill-over: the local queue is past its bound → interactive requests go to the next tier, batch waits;
5. the classifier: score (probability the small tier suffices) ≥ knob → local, else the frontier tier.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from schemas.records import Request


class TierLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def max_context(self) -> int | None: ...


@dataclass(frozen=True)
class RouteDecision:
    tier: str  # tier name, e.g. "local-small"
    reason: str  # residency | hint | context | spill | classifier | default
    score: float | None = None
    knob: float | None = None
    kind: str = "local"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RouterInputs:
    local: TierLike  # the small local tier
    frontier: TierLike  # the tier hard requests go to
    tiers: tuple[TierLike, ...]
    knob: float
    local_only_tenants: Collection[str] = ()
    local_backlog: int = 0  # requests waiting for the local pool (consumer lag)
    spill_backlog: int = 0  # 0: never spill


def estimate_prompt_tokens(request: Request) -> int:
    chars = sum(len(m.content) for m in request.chat())
    return chars // 3 + 8 * len(request.chat()) + 16  # generous: ~3 chars/token plus the chat template


def route(request: Request, inputs: RouterInputs, score: float | None) -> RouteDecision:
    local, frontier = inputs.local, inputs.frontier

    def to(tier: TierLike, reason: str) -> RouteDecision:
        return RouteDecision(tier.name, reason, score, inputs.knob if reason == "classifier" else None, tier.kind)

    if request.tenant in inputs.local_only_tenants:
        return to(local, "residency")
    hint = request.metadata.get("route")
    if isinstance(hint, str):
        for tier in inputs.tiers:
            if hint in (tier.name, tier.kind) and tier.kind != "cache":
                return to(tier, "hint")
    needed = estimate_prompt_tokens(request) + request.max_tokens
    if local.max_context is not None and needed > local.max_context:
        return to(frontier, "context")
    if inputs.spill_backlog and inputs.local_backlog >= inputs.spill_backlog and request.priority == "interactive":
        return to(frontier, "spill")
    if score is None:
        return to(local, "default")
    return to(local if score >= inputs.knob else frontier, "classifier")
