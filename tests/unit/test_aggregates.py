"""Aggregation helpers: window keys, mergeable totals with derived figures, bounded seen-id sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.policy.aggregates import (
    LatencyHistogram,
    Totals,
    group_keys,
    merge,
    window_key,
    window_start,
)
from streams.policy.cost import UsageRecordV1
from streams.policy.seen_ids import SeenIds

T0 = 1_700_000_012_345


def as_json(d: object) -> object:
    return json.loads(json.dumps(d, allow_nan=False))


def test_window_start_and_key() -> None:
    assert window_start(61_234) == 60_000
    assert window_start(60_000) == 60_000
    assert window_start(59_999) == 0
    assert window_start(T0, 1000) == 1_700_000_012_000
    start = window_start(T0)
    assert start % 60_000 == 0 and start <= T0 < start + 60_000
    assert window_key("tenant", "acme", T0) == f"tenant:acme:{start}"
    with pytest.raises(ValueError):
        window_start(1, 0)


def test_group_keys_skip_missing_dimensions() -> None:
    usage = {"session": "s1", "tenant": "acme", "tier": "cloud", "feature": None}
    assert group_keys(usage) == [("session", "s1"), ("tenant", "acme"), ("tier", "cloud")]
    assert group_keys({"tier": ""}, ("tier",)) == []


def test_totals_and_derived_figures() -> None:
    t = Totals()
    assert t.cost_per_1k_requests() is None and t.cache_hit_rate() is None and t.savings_ratio() is None
    assert t.latency_p50() is None and t.utilization(0) is None
    t.add(cost_usd=0.002, baseline_cost_usd=0.01, prompt_tokens=100, completion_tokens=10, latency_ms=100)
    t.add(cost_usd=0.0, baseline_cost_usd=0.01, latency_ms=5, cache="exact")
    t.add(cost_usd=0.0, baseline_cost_usd=0.01, latency_ms=7, cache="semantic")
    t.add(cost_usd=0.002, baseline_cost_usd=0.0, status="error", attempts=3, busy_ms=30_000)
    assert t.requests == 4 and t.errors == 1 and t.attempts == 6
    assert t.cost_per_1k_requests() == pytest.approx(1.0)  # $0.004 over 4 requests
    assert t.cache_hit_rate() == pytest.approx(0.5)
    assert t.savings_usd() == pytest.approx(0.026)
    assert t.savings_ratio() == pytest.approx(1 - 0.004 / 0.03)
    assert t.utilization(60_000) == pytest.approx(0.5)
    assert t.utilization(60_000, slots=2) == pytest.approx(0.25)
    s = as_json(t.summary(wall_ms=60_000))
    assert isinstance(s, dict)
    assert s["cache_hits"] == {"exact": 1, "semantic": 1} and s["utilization"] == pytest.approx(0.5)
    assert s["latency_p50_ms"] is not None and "latency" not in s


def test_percentiles_are_within_five_percent() -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=5.0, sigma=1.0, size=5000)
    h = LatencyHistogram()
    for x in samples:
        h.add(float(x))
    for q in (0.5, 0.95, 0.99):
        got = h.percentile(q)
        assert got is not None
        assert got == pytest.approx(float(np.quantile(samples, q)), rel=0.06)
    assert len(h.counts) <= 201
    assert h.percentile(1.0) == pytest.approx(samples.max(), rel=0.06)


def test_percentile_edge_cases() -> None:
    h = LatencyHistogram()
    assert h.percentile(0.5) is None
    with pytest.raises(ValueError):
        h.percentile(0.0)
    h.add(0.2)
    h.add(-5)
    p50 = h.percentile(0.5)  # both sit in the sub-millisecond bucket: resolution there is the observed range
    assert p50 is not None and 0.0 <= p50 <= 0.2 and h.percentile(1.0) == pytest.approx(0.2)
    h.add(1e12)  # lands in the last bucket, clamped to what was seen
    assert h.percentile(1.0) == pytest.approx(1e12)


def test_merge_equals_adding_everything_to_one() -> None:
    rng = np.random.default_rng(3)
    a, b, both = Totals(), Totals(), Totals()
    for i in range(300):
        kw = dict(
            cost_usd=float(rng.uniform(0, 0.01)),
            latency_ms=float(rng.uniform(1, 2000)),
            cache=["exact", None, "coalesced"][i % 3],
            prompt_tokens=i,
        )
        (a if i % 2 else b).add(**kw)  # type: ignore[arg-type]
        both.add(**kw)  # type: ignore[arg-type]
    m = merge(a, b)
    assert m.requests == 300 and a.requests + b.requests == 300  # inputs untouched
    assert m.to_dict()["latency"] == both.to_dict()["latency"]
    assert m.cost_usd == pytest.approx(both.cost_usd)
    assert m.cache_hits == both.cache_hits and m.prompt_tokens == both.prompt_tokens
    assert merge(Totals(), Totals()).to_dict() == Totals().to_dict()


def test_totals_json_round_trip() -> None:
    t = Totals()
    assert Totals.from_dict(as_json(t.to_dict())).to_dict() == t.to_dict()  # type: ignore[arg-type]
    t.add(cost_usd=0.1, latency_ms=42, cache="coalesced", busy_ms=40)
    back = Totals.from_dict(as_json(t.to_dict()))  # type: ignore[arg-type]
    assert back.to_dict() == t.to_dict()
    back.add(latency_ms=50)
    assert back.latency.n == 2


def test_add_usage_from_a_usage_record() -> None:
    rec = UsageRecordV1(
        id="r",
        tenant="t",
        session="s",
        tier="local",
        model="m",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.0,
        latency_ms=250.0,
        cache=None,
        attempts=1,
        baseline_cost_usd=0.003,
        created_at=T0,
    )
    t = Totals()
    t.add_usage(rec.to_dict(), busy_ms=rec.latency_ms)
    t.add_usage({"cache": "exact", "status": "ok"})
    assert (t.requests, t.prompt_tokens, t.completion_tokens, t.busy_ms) == (2, 10, 5, 250.0)
    assert t.latency.n == 1 and t.cache_hits == {"exact": 1}


def test_seen_ids_dedup_and_bound() -> None:
    seen = SeenIds(max_size=3)
    assert seen.add("a", T0) and not seen.add("a", T0 + 1)
    for x in "bcd":
        seen.add(x, T0)
    assert len(seen) == 3 and "a" not in seen and "d" in seen


def test_seen_ids_ttl_and_round_trip() -> None:
    seen = SeenIds(max_size=100, ttl_ms=1000)
    seen.add("a", T0)
    seen.add("b", T0 + 500)
    back = SeenIds.from_dict(as_json(seen.to_dict()))  # type: ignore[arg-type]
    assert "a" in back and back.max_size == 100 and back.ttl_ms == 1000
    assert back.add("c", T0 + 1200)
    assert "a" not in back and "b" in back
    with pytest.raises(ValueError):
        SeenIds(max_size=0)


def test_non_finite_latencies_are_ignored() -> None:
    h = LatencyHistogram()
    h.add(float("inf"))
    h.add(float("nan"))
    assert h.n == 0
    h.add(12.0)
    assert as_json(h.to_dict())


def reference_counts(samples: list[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for ms in samples:
        b = LatencyHistogram.bucket(ms)
        counts[b] = counts.get(b, 0) + 1
    return counts


@pytest.mark.parametrize("seed", range(20))
def test_compact_histogram_matches_bucket_counts_through_adds_merges_and_json(seed: int) -> None:
    """A histogram keeps no dict while its samples share one bucket; whatever it stores, its buckets, merges,
    percentiles and JSON must equal those of plain per-bucket counting."""
    rng = np.random.default_rng(seed)
    # few distinct values, so many histograms stay in one bucket and some merges cross into a second
    samples = [float(v) for v in rng.choice([0.5, 3.0, 3.1, 40.0, 41.0, 900.0], size=int(rng.integers(0, 12)))]
    cut = int(rng.integers(0, len(samples) + 1))
    left, right, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for ms in samples[:cut]:
        left.add(ms)
    for ms in samples[cut:]:
        right.add(ms)
    for ms in samples:
        whole.add(ms)
    left.merge(right)
    expected = reference_counts(samples)
    for h in (left, whole):
        assert h.buckets() == expected and h.n == len(samples)
        assert (h.counts is None) == (len(expected) <= 1)
        back = LatencyHistogram.from_dict(as_json(h.to_dict()))  # type: ignore[arg-type]
        assert back == h and back.buckets() == expected and back.to_dict() == h.to_dict()
    assert left == whole
    for q in (0.5, 0.95, 1.0):
        assert left.percentile(q) == whole.percentile(q)


def test_totals_share_no_mutable_state() -> None:
    """Totals without cache hits share one read-only empty mapping; the first hit gives a total its own dict."""
    a, b = Totals(), Totals()
    a.add(cache="exact")
    a.merge(Totals.from_dict({"requests": 1, "cache_hits": {"semantic": 2}}))
    assert dict(a.cache_hits) == {"exact": 1, "semantic": 2}
    assert dict(b.cache_hits) == {} and Totals().cache_hits == {}
    b.merge(a)
    assert dict(b.cache_hits) == {"exact": 1, "semantic": 2} and b.cache_hits is not a.cache_hits


def test_merging_two_one_bucket_histograms_of_different_buckets() -> None:
    a, b, same = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.add(3.0)
    b.add(40.0)
    b.add(41.0)
    same.add(3.05)
    a.merge(same)
    assert a.counts is None and a.buckets() == {LatencyHistogram.bucket(3.0): 2}
    a.merge(b)
    assert a.buckets() == reference_counts([3.0, 3.05, 40.0, 41.0]) and a.n == 4
    assert a.percentile(0.25) == pytest.approx(3.0, rel=0.05) and a.percentile(1.0) == pytest.approx(41.0, rel=0.05)
