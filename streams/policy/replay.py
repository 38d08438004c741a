"""Re-deciding logged requests under a candidate configuration, without calling any model (pure).

Input: for each request, its logged record and decisions (``sluice.requests`` + ``sluice.decisions``, assembled
by ``streams/replay/log.py``). Output: what the candidate would have done, next to what happened. The facts
that do not depend on configuration come from the log: the semantic candidates' cosines and verifier scores,
the classifier's score, the local backlog, the answers' tokens. What the candidate changes is re-run with the
same pure policies production uses: ``cache_policy`` thresholds, ``router.route``, the price table, and
``budget``/``session_breaker`` over the sequence in time order (costs settle when the logged answer did).

Known approximations (reported as ``estimated``): a request that was a cache hit but would miss is charged
the tokens of the answer it reused, on the tier that answer came from when the classifier would decide; a
request that was rejected but would be admitted has no logged candidates or score (rules decide, else the
frontier tier, and the full ``max_tokens``); a new hit does not store anything, so later hits are not chained.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.records import Request
from streams.policy import session_breaker as breaker
from streams.policy.budget import BudgetLedger
from streams.policy.cache_policy import CachePolicy, query_text
from streams.policy.cost import estimate_reservation
from streams.policy.replay_records import Logged, Outcome, Replayed, actual_outcome, served_tokens
from streams.policy.router import RouterInputs, route

__all__ = ["Candidate", "Logged", "Outcome", "Replayed", "Replayer", "actual_outcome", "replay"]

GUARD_REASONS = ("breaker", "budget")
CountTokens = Callable[[Sequence[Any], str], int]  # (messages, model) -> prompt tokens


@dataclass(frozen=True)
class Candidate:
    """The configuration to replay under; each ``*_changed`` flag says the candidate file set that part (the
    rest is taken as logged). ``tiers`` is a ``streams.tiers.TierConfig`` (the candidate's or production's)."""

    tiers: Any
    cache: CachePolicy = field(default_factory=CachePolicy)
    knob: float | None = None
    local_only_tenants: Collection[str] = ()
    spill_backlog: int = 0
    session_budget: tuple[float | None, float | None] = (None, None)
    tenant_budgets: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    breaker: breaker.BreakerConfig | None = None  # None: breaker off (when breaker_changed)
    overhead_tokens: int = 64
    cache_changed: bool = False
    route_changed: bool = False
    tiers_changed: bool = False
    budget_changed: bool = False
    breaker_changed: bool = False


class Replayer:
    """Walks the logged requests in time order, keeping the candidate's budget and breaker state."""

    def __init__(self, candidate: Candidate, count_tokens: CountTokens | None = None) -> None:
        self.c = candidate
        self.count_tokens = count_tokens
        self.breakers: dict[str, breaker.SessionState] = {}
        self.ledgers: dict[str, BudgetLedger] = {}
        self._settles: list[tuple[int, int, str, str, str, float, bool]] = []
        self._seq = 0

    def run(self, logs: Sequence[Logged]) -> list[Replayed]:
        out = []
        for log in sorted(logs, key=lambda x: (x.at, x.id)):
            self._settle_until(log.at)
            out.append(self.one(log))
        return out

    # guard: breaker and budgets ------------------------------------------------------------------------------

    def _ledger(self, key: str, limits: tuple[float | None, float | None]) -> BudgetLedger:
        ledger = self.ledgers.get(key)
        if ledger is None:
            ledger = self.ledgers[key] = BudgetLedger(key=key)
        ledger.set_limits(*limits)
        return ledger

    def _settle_until(self, now: int) -> None:
        while self._settles and self._settles[0][0] <= now:
            at, _, rid, session, tenant, cost, ok = heapq.heappop(self._settles)
            for key in (session, f"tenant:{tenant}"):
                if key in self.ledgers:
                    self.ledgers[key].settle(rid, cost, at)
            state = self.breakers.get(session)
            if state is not None and self.c.breaker is not None:
                breaker.probe_result(state, at, ok, request_id=rid, config=self.c.breaker)
                breaker.observe_cost(state, at, cost, config=self.c.breaker)

    def _guard(self, log: Logged, request: Request | None, why: list[str]) -> str | None:
        """The candidate's breaker and budget verdict: a rejection reason, or None."""
        admit = log.decisions.get("admit") or {}
        logged_reason = admit.get("reason") if admit.get("verdict") == "rejected" else None
        if (log.decisions.get("tenant_budget") or {}).get("verdict") == "rejected":
            logged_reason = logged_reason or "budget"
        if self.c.breaker_changed:
            if self.c.breaker is not None and request is not None:
                state = self.breakers.setdefault(log.session, breaker.SessionState(log.session, log.tenant))
                digest = breaker.prompt_hash(query_text(request.chat()))
                decision = breaker.observe_request(state, log.at, digest, request_id=log.id, config=self.c.breaker)
                if not decision.allow:
                    why.append(f"breaker trips ({decision.reason})")
                    return "breaker"
        elif logged_reason == "breaker":
            return "breaker"
        if self.c.budget_changed:
            if request is None:
                return logged_reason if logged_reason == "budget" else None
            text = " ".join(m.content for m in request.chat())
            amount = estimate_reservation(
                text, request.max_tokens, self.c.tiers.priciest, overhead_tokens=self.c.overhead_tokens
            )
            scopes = [(log.session, self.c.session_budget)]
            if log.tenant in self.c.tenant_budgets:
                scopes.append((f"tenant:{log.tenant}", self.c.tenant_budgets[log.tenant]))
            for key, limits in scopes:
                if limits == (None, None):
                    continue
                verdict = self._ledger(key, limits).reserve(log.id, amount, log.at)
                if not verdict.ok:
                    why.append(f"budget: {key} would exceed ${limits[1]} (reserving ${amount:.6f})")
                    return "budget"
        elif logged_reason == "budget":
            return "budget"
        return None

    # cache, route, price ---------------------------------------------------------------------------------------

    def _cache(self, log: Logged, why: list[str]) -> str | None:
        """The candidate's cache verdict: exact | semantic | coalesced, or None for a miss."""
        facts = log.data("lookup").get("cache") or {}
        kind = facts.get("kind")
        logged = kind if kind in ("exact", "semantic", "coalesced") else None
        if not self.c.cache_changed:
            return logged
        if not self.c.cache.enabled:
            if logged:
                why.append(f"cache off: {logged} hit → miss")
            return None
        if logged in ("exact", "coalesced") or kind in ("skip", "refresh"):
            return logged
        feature = log.data("admit").get("feature")
        threshold = self.c.cache.threshold_for(log.tenant, feature)
        passing = [
            (score, cos)
            for cos, score, same in facts.get("candidates") or []
            if same and cos >= self.c.cache.min_cosine and score >= threshold
        ]
        now = "semantic" if passing else None
        if now != logged:
            best = max((s for _, s, same in facts.get("candidates") or [] if same), default=None)
            detail = f"best verifier {best}" if best is not None else "no candidate"
            why.append(f"{logged or 'miss'} → {now or 'miss'}: {detail}, threshold {threshold}")
        return now

    def _route(self, log: Logged, request: Request | None, why: list[str]) -> tuple[Any, str, bool]:
        """(tier, reason, estimated) for a request the candidate sends to a model tier."""
        tiers = self.c.tiers
        logged = (
            log.data("lookup").get("route") if log.data("lookup").get("cache", {}).get("kind") != "coalesced" else None
        )
        names = tiers.names()
        if logged and not self.c.route_changed and logged.get("tier") in names:
            return tiers.get(logged["tier"]), str(logged.get("reason")), False
        if request is None:
            tier = tiers.get(logged["tier"]) if logged and logged.get("tier") in names else tiers.frontier
            return tier, "unlogged", True
        score = logged.get("score") if logged else None
        knob = self.c.knob if self.c.knob is not None else (logged or {}).get("knob", 0.5)
        inputs = RouterInputs(
            local=tiers.weak,
            frontier=tiers.frontier,
            tiers=tiers.tiers,
            knob=float(knob if knob is not None else 0.5),
            local_only_tenants=self.c.local_only_tenants,
            local_backlog=int((logged or {}).get("backlog") or 0),
            spill_backlog=self.c.spill_backlog,
        )
        decision = route(request, inputs, score)
        estimated = logged is None
        if logged is None and decision.reason == "default":
            # No logged score (the request was a hit or rejected): the answer it reused came from this kind.
            source_kind = (log.data("lookup").get("cache") or {}).get("source_tier")
            pick = next((t for t in tiers.tiers if t.kind == source_kind), tiers.frontier)
            return pick, "estimated", True
        tier = tiers.get(decision.tier)
        if logged and logged.get("tier") != tier.name:
            s = f"score {score} vs knob {inputs.knob}" if decision.reason == "classifier" else decision.reason
            why.append(f"route {logged.get('tier')} → {tier.name} ({s})")
        return tier, decision.reason, estimated

    def _price(self, log: Logged, request: Request | None, tier: Any, actual: Outcome) -> Outcome:
        if actual.status != "rejected" and actual.kind != "cache" and actual.tier == tier.name:
            cost = actual.cost_usd
            served_elsewhere = actual.kind != tier.kind  # a cloud request the fallback chain served locally
            if self.c.tiers_changed and not served_elsewhere and actual.status == "ok":
                cost = tier.cost_usd(*actual.tokens)
            return Outcome(
                actual.status, actual.kind, tier.name, None, cost, actual.reason, actual.tokens, actual.latency_ms
            )
        tokens, estimated = served_tokens(log), False
        if tokens is None:
            estimated = True
            max_tokens = request.max_tokens if request is not None else 128
            prompt = 0
            if request is not None and self.count_tokens is not None:
                prompt = self.count_tokens(request.chat(), tier.model)
            elif request is not None:
                prompt = sum(len(m.content) for m in request.chat()) // 4 + 4 * len(request.chat())
            tokens = (prompt, max_tokens)
        return Outcome(
            "ok", tier.kind, tier.name, None, tier.cost_usd(*tokens), None, tokens, actual.latency_ms, estimated
        )

    def one(self, log: Logged) -> Replayed:
        actual = actual_outcome(log)
        why: list[str] = []
        request = log.request
        admit = log.decisions.get("admit") or {}
        if admit.get("verdict") == "deadletter" or (
            admit.get("verdict") == "rejected" and admit.get("reason") not in GUARD_REASONS
        ):
            return Replayed(log, actual, actual, why)  # invalid input stays invalid
        reason = self._guard(log, request, why)
        if reason is not None:
            return Replayed(log, actual, Outcome("rejected", "none", reason=reason), why)
        if actual.status == "rejected":
            why.append(f"admitted (was rejected: {actual.reason})")
        hit = self._cache(log, why)
        if hit is not None:
            outcome = Outcome("ok", "cache", "", hit, 0.0, tokens=(0, 0), latency_ms=actual.latency_ms)
            if actual.kind == "cache":
                outcome.status, outcome.reason = actual.status, actual.reason
        else:
            tier, _, estimated = self._route(log, request, why)
            outcome = self._price(log, request, tier, actual)
            outcome.estimated = outcome.estimated or estimated
        self._seq += 1
        settle_at = log.at + int(outcome.latency_ms)
        heapq.heappush(
            self._settles,
            (settle_at, self._seq, log.id, log.session, log.tenant, outcome.cost_usd, outcome.status == "ok"),
        )
        return Replayed(log, actual, outcome, why)


def replay(logs: Sequence[Logged], candidate: Candidate, count_tokens: CountTokens | None = None) -> list[Replayed]:
    return Replayer(candidate, count_tokens).run(logs)
