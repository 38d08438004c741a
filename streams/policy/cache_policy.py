"""Cache policy (pure): what may be read from or written to the cache, and which candidate may be served.

The rule that matters most: a semantic candidate is served only when the verifier agrees, within the same
tenant (enforced by the store's hard partition) and the same conversation context and answer-changing
parameters (enforced here through ``context_key``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.records import Message, Request, Response
from streams.policy.cache_key import normalize_text, semantic_text
from streams.policy.verifier import DEFAULT_MIN_COSINE, DEFAULT_THRESHOLD


@dataclass(frozen=True)
class CachePolicy:
    enabled: bool = True
    ttl_s: float = 7 * 24 * 3600.0
    max_entries_per_tenant: int = 100_000
    min_cosine: float = DEFAULT_MIN_COSINE  # candidates below this are not even verified
    threshold: float = DEFAULT_THRESHOLD  # verifier probability needed to serve a semantic hit
    tenant_thresholds: Mapping[str, float] = field(default_factory=dict)
    route_thresholds: Mapping[str, float] = field(default_factory=dict)  # by metadata.feature
    candidates: int = 4

    def threshold_for(self, tenant: str, feature: str | None) -> float:
        """A tenant's own threshold wins, then the route's (feature), then the default; never below default."""
        if tenant in self.tenant_thresholds:
            return self.tenant_thresholds[tenant]
        if feature and feature in self.route_thresholds:
            return self.route_thresholds[feature]
        return self.threshold


def may_read(request: Request, policy: CachePolicy) -> bool:
    return policy.enabled and request.cache and not request.cache_refresh


def may_write(request: Request, response: Response, policy: CachePolicy) -> bool:
    """Only ``ok`` answers are cached, and never for a request that opted out."""
    return policy.enabled and request.cache and response.status == "ok" and bool(response.text)


def expired(created_at_ms: int, now_ms: int, policy: CachePolicy) -> bool:
    return now_ms - created_at_ms > policy.ttl_s * 1000


def query_text(messages: Sequence[Message]) -> str:
    """What is embedded: the last user turn (the question being asked), as :func:`semantic_text` reads it."""
    for message in reversed(messages):
        if message.role == "user":
            return semantic_text(message.content)
    return semantic_text(messages[-1].content) if messages else ""


def context_key(messages: Sequence[Message], params: Mapping[str, Any]) -> str:
    """Everything but the last user turn, plus the answer-changing params: a semantic hit needs equal context."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages) - 1)
    context = [[m.role, normalize_text(m.content)] for i, m in enumerate(messages) if i != last_user]
    body = orjson.dumps({"c": context, "p": {k: params[k] for k in sorted(params)}})
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True)
class Candidate:
    entry_id: str
    cosine: float
    text: str  # the cached request's query text
    context: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class SemanticVerdict:
    hit: Candidate | None
    verifier_score: float | None
    examined: int
    best_cosine: float | None
    threshold: float


def choose(
    candidates: Sequence[Candidate],
    scores: Sequence[float],
    *,
    context: str,
    threshold: float,
    policy: CachePolicy,
) -> SemanticVerdict:
    """The best verified candidate with the same context, or none. ``scores`` are verifier probabilities."""
    best: tuple[float, Candidate] | None = None
    for candidate, score in zip(candidates, scores, strict=True):
        if candidate.context != context or candidate.cosine < policy.min_cosine or score < threshold:
            continue
        if best is None or score > best[0]:
            best = (score, candidate)
    return SemanticVerdict(
        hit=best[1] if best else None,
        verifier_score=best[0] if best else (max(scores) if scores else None),
        examined=len(candidates),
        best_cosine=max((c.cosine for c in candidates), default=None),
        threshold=threshold,
    )
