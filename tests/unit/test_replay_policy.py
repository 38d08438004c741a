"""The pure re-decision logic of ``sluice replay`` (streams/policy/replay.py) on hand-built logs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from schemas.records import Request
from streams.policy import session_breaker as breaker
from streams.policy.cache_policy import CachePolicy
from streams.policy.replay import Candidate, Logged, replay
from streams.replay.report import build
from streams.tiers import load_tiers

TIERS = load_tiers()
LOCAL, CLOUD = TIERS.get("local-small"), TIERS.get("cloud-frontier")
BASE = Candidate(tiers=TIERS, cache=CachePolicy(threshold=0.8, min_cosine=0.5))


def rec(rid: str, stage: str, verdict: str, data: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"v": 1, "id": rid, "stage": stage, "verdict": verdict, "reason": reason, "at": 0, "data": data}


def served(
    rid: str,
    *,
    at: int = 0,
    tenant: str = "acme",
    session: str = "s",
    tier: str = "local-small",
    score: float | None = 0.7,
    knob: float | None = 0.5,
    reason: str = "classifier",
    candidates: list[list[float]] | None = None,
    tokens: tuple[int, int] = (100, 50),
) -> Logged:
    """A request that missed the cache, was routed to ``tier`` and answered there."""
    t = TIERS.get(tier)
    cost = t.cost_usd(*tokens)
    request = Request(id=rid, tenant=tenant, session=session, prompt=f"question {rid}", max_tokens=64, created_at=at)
    route = {"tier": tier, "reason": reason, "kind": t.kind, "backlog": 0}
    if score is not None:
        route["score"] = score
    if knob is not None and reason == "classifier":
        route["knob"] = knob
    cache = {"kind": "miss", "candidates": candidates or [], "threshold": 0.8}
    stage = t.kind
    decisions = {
        "admit": rec(rid, "admit", "admitted", {"max_tokens": 64, "breaker": "ok", "budget": 0.001}),
        "lookup": rec(rid, "lookup", "miss", {"cache": cache, "route": route}),
        stage: rec(rid, stage, "ok", {"tier": tier, "served": t.kind, "usage": list(tokens), "cost_usd": cost}),
        "meter": rec(
            rid,
            "meter",
            "ok",
            {
                "status": "ok",
                "tier": t.kind,
                "route_tier": tier,
                "usage": list(tokens),
                "cost_usd": cost,
                "cache": None,
                "latency_ms": 100.0,
            },
        ),
    }
    return Logged(rid, tenant, session, at, request, decisions)


def semantic_hit(rid: str, *, score: float, at: int = 0) -> Logged:
    request = Request(id=rid, tenant="acme", session="s", prompt="paraphrase", max_tokens=64, created_at=at)
    cache = {
        "kind": "semantic",
        "similarity": 0.93,
        "verifier_score": score,
        "threshold": 0.8,
        "candidates": [[0.93, score, 1]],
        "source_tier": "cloud",
        "saved": [100, 50],
    }
    decisions = {
        "admit": rec(rid, "admit", "admitted", {"max_tokens": 64}),
        "lookup": rec(rid, "lookup", "semantic", {"cache": cache}),
        "meter": rec(
            rid,
            "meter",
            "ok",
            {"status": "ok", "tier": "cache", "usage": [0, 0], "cost_usd": 0.0, "cache": "semantic", "latency_ms": 5.0},
        ),
    }
    return Logged(rid, "acme", "s", at, request, decisions)


def test_unchanged_config_changes_nothing() -> None:
    logs = [served("a"), served("b", tier="cloud-frontier", score=0.2), semantic_hit("c", score=0.9)]
    out = replay(logs, BASE)
    assert [r.changed for r in out] == [False, False, False]
    report = build(out, since=0, until=1, tenant=None)
    assert report["actual"] == report["candidate"] and report["changed"] == 0


def test_a_higher_threshold_turns_a_semantic_hit_into_a_priced_miss() -> None:
    logs = [semantic_hit("h", score=0.86), served("m", candidates=[[0.9, 0.83, 1]])]
    stricter = replace(BASE, cache=CachePolicy(threshold=0.9, min_cosine=0.5), cache_changed=True)
    out = {r.logged.id: r for r in replay(logs, stricter)}
    hit = out["h"]
    assert hit.actual.kind == "cache" and hit.candidate.kind == "cloud"  # the reused answer came from the cloud
    assert hit.candidate.cost_usd == pytest.approx(CLOUD.cost_usd(100, 50)) and hit.candidate.estimated
    assert "semantic → miss" in hit.why[0]
    assert not out["m"].changed
    looser = replace(BASE, cache=CachePolicy(threshold=0.8, min_cosine=0.5), cache_changed=True)
    out = {r.logged.id: r for r in replay(logs, looser)}
    assert out["m"].candidate.kind == "cache" and out["m"].candidate.cache == "semantic"
    assert out["m"].candidate.cost_usd == 0.0
    report = build(list(out.values()), since=0, until=1, tenant=None)
    assert report["actual"]["cache_hit_rate"] == 0.5 and report["candidate"]["cache_hit_rate"] == 1.0


def test_a_semantic_candidate_with_another_context_never_hits() -> None:
    logs = [served("m", candidates=[[0.99, 0.99, 0]])]
    looser = replace(BASE, cache=CachePolicy(threshold=0.1, min_cosine=0.1), cache_changed=True)
    assert replay(logs, looser)[0].candidate.kind == "local"


def test_a_higher_knob_shifts_tier_shares_and_cost_to_the_cloud() -> None:
    logs = [served(f"r{i}", score=s, tier="local-small", tokens=(200, 80)) for i, s in enumerate((0.55, 0.65, 0.9))]
    out = replay(logs, replace(BASE, knob=0.7, route_changed=True))
    assert [r.candidate.tier for r in out] == ["cloud-frontier", "cloud-frontier", "local-small"]
    assert out[0].candidate.tokens == (200, 80) and not out[0].candidate.estimated  # tokens from the log
    assert out[0].candidate.cost_usd == pytest.approx(CLOUD.cost_usd(200, 80))
    assert "score 0.55 vs knob 0.7" in out[0].why[0]
    report = build(out, since=0, until=1, tenant=None)
    assert report["actual"]["tier_shares"] == {"local": 1.0}
    assert report["candidate"]["tier_shares"] == {"cloud": 0.6667, "local": 0.3333}
    assert report["candidate"]["cost_per_1k_requests_usd"] > report["actual"]["cost_per_1k_requests_usd"]
    assert report["changed"] == 2 and len(report["sample"]) == 2


def test_a_local_only_tenant_stays_local_whatever_the_knob() -> None:
    logs = [served("b1", tenant="bank", score=0.1, reason="residency", knob=None), served("a1", score=0.1)]
    out = {
        r.logged.id: r for r in replay(logs, replace(BASE, knob=0.0, local_only_tenants={"bank"}, route_changed=True))
    }
    assert out["b1"].candidate.tier == "local-small" and not out["b1"].changed
    assert out["a1"].candidate.tier == "local-small"
    out = {
        r.logged.id: r for r in replay(logs, replace(BASE, knob=1.01, local_only_tenants={"bank"}, route_changed=True))
    }
    assert out["b1"].candidate.tier == "local-small"  # residency is a rule, before the classifier
    assert out["a1"].candidate.tier == "cloud-frontier"


def test_a_tighter_budget_rejects_once_the_session_has_spent_it() -> None:
    logs = [served(f"r{i}", at=i * 1000, tier="cloud-frontier", score=0.1, tokens=(1000, 500)) for i in range(5)]
    per_request = CLOUD.cost_usd(1000, 500)
    out = replay(logs, replace(BASE, session_budget=(None, 2.5 * per_request), budget_changed=True))
    # Each answer settles before the next request: two fit under the limit, the third's reservation still fits
    # (spent 2 x cost + one small reservation), and from then on the session is over its budget.
    assert [r.candidate.status for r in out] == ["ok", "ok", "ok", "rejected", "rejected"]
    rejected = [r for r in out if r.candidate.status == "rejected"]
    assert all(r.candidate.reason == "budget" and "budget: s would exceed" in r.why[0] for r in rejected)
    assert all(r.actual.status == "ok" for r in out)
    report = build(out, since=0, until=1, tenant=None)
    assert report["newly_rejected"] == len(rejected) and report["candidate"]["rejected_by_reason"] == {
        "budget": len(rejected)
    }


def test_a_stricter_breaker_trips_on_a_fast_session() -> None:
    logs = [served(f"r{i}", at=i * 10) for i in range(6)]
    config = breaker.BreakerConfig(max_requests=3, rate_window_ms=10_000)
    out = replay(logs, replace(BASE, breaker=config, breaker_changed=True))
    assert [r.candidate.status for r in out] == ["ok"] * 3 + ["rejected"] * 3
    assert out[3].candidate.reason == "breaker" and "breaker trips (rate)" in out[3].why


def test_new_prices_reprice_unchanged_tiers() -> None:
    doc = {
        "tiers": [
            {"name": "local-small", "kind": "local", "model": "m", "input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
            {"name": "cloud-frontier", "kind": "cloud", "model": "gpt-4o"},
        ]
    }
    from streams.tiers import parse_tiers

    priced = parse_tiers(doc)
    out = replay([served("a", tokens=(1_000_000, 1_000_000))], replace(BASE, tiers=priced, tiers_changed=True))
    assert out[0].candidate.tier == "local-small" and out[0].candidate.cost_usd == pytest.approx(3.0)
