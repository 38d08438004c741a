"""The cost model: pricing, worst-case reservations and the v1 usage record."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from schemas.records import Response, Usage
from streams.policy.cost import (
    CACHE_KINDS,
    USAGE_SCHEMA_VERSION,
    Price,
    UsageRecord,
    UsageRecordV1,
    as_price,
    estimate_prompt_tokens,
    estimate_reservation,
    price_usd,
)


def test_price_usd_per_million() -> None:
    assert price_usd(3.0, 15.0, 1000, 500) == pytest.approx(0.003 + 0.0075)
    assert price_usd(0.0, 0.0, 10**6, 10**6) == 0.0
    assert price_usd(2.5, 10.0, 0, 0) == 0.0


@pytest.mark.parametrize("args", [(1.0, 1.0, -1, 0), (1.0, 1.0, 0, -1), (-1.0, 1.0, 1, 1), (1.0, -0.5, 1, 1)])
def test_price_usd_rejects_negatives(args: tuple[float, float, int, int]) -> None:
    with pytest.raises(ValueError):
        price_usd(*args)


def test_as_price_accepts_tuples_objects_and_prices() -> None:
    p = Price(1.0, 2.0)
    assert as_price(p) is p
    assert as_price((1, 2)) == p
    assert as_price([1.0, 2.0]) == p
    assert as_price(SimpleNamespace(input_per_1m=1.0, output_per_1m=2.0)) == p  # like tiers.Tier / ModelPrice
    with pytest.raises(TypeError):
        as_price("cheap")
    with pytest.raises(ValueError):
        Price(-1.0, 0.0)
    assert p.cost(1_000_000, 500_000) == pytest.approx(2.0)


def test_estimate_prompt_tokens_rounds_up() -> None:
    assert estimate_prompt_tokens("") == 0
    assert estimate_prompt_tokens("abcd", chars_per_token=4) == 1
    assert estimate_prompt_tokens("abcde", chars_per_token=4) == 2
    assert estimate_prompt_tokens(300) == 100  # a character count, default 3 chars/token
    with pytest.raises(ValueError):
        estimate_prompt_tokens("x", chars_per_token=0)
    with pytest.raises(ValueError):
        estimate_prompt_tokens(-1)


def test_reservation_is_prompt_plus_full_completion() -> None:
    price = (1.0, 2.0)
    # text: 300 chars -> 100 tokens estimated, + 8 framing; 128 completion tokens at the output price
    assert estimate_reservation("x" * 300, 128, price) == pytest.approx((108 * 1.0 + 128 * 2.0) / 1e6)
    # an int is an exact token count
    assert estimate_reservation(100, 128, price, overhead_tokens=0) == pytest.approx((100 + 256) / 1e6)
    assert estimate_reservation(0, 0, price, overhead_tokens=0) == 0.0


def test_reservation_covers_any_actual_cost_within_max_tokens() -> None:
    pytest.importorskip("bpe_openai")
    from streams.policy.token_count import count_tokens

    price = Price(2.5, 10.0)
    text = "Summarise the quarterly report for the board and list three risks, with owners and dates. " * 20
    reserve = estimate_reservation(text, 256, price)
    actual_prompt = count_tokens(text, "gpt-4o")
    for completion in (0, 1, 128, 256):
        assert price.cost(actual_prompt, completion) <= reserve


def test_reservation_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        estimate_reservation("hi", -1, (1.0, 1.0))
    with pytest.raises(ValueError):
        estimate_reservation("hi", 10, (1.0, 1.0), overhead_tokens=-1)
    with pytest.raises(ValueError):
        estimate_reservation(-5, 10, (1.0, 1.0))
    with pytest.raises(TypeError):
        estimate_reservation(True, 10, (1.0, 1.0))


def record(**kw: object) -> UsageRecordV1:
    base: dict[str, object] = dict(
        id="r1",
        tenant="acme",
        session="s1",
        tier="cloud",
        model="gpt-4o-mini",
        prompt_tokens=100,
        completion_tokens=20,
        cost_usd=0.000027,
        latency_ms=412.5,
        cache=None,
        feature="search",
        attempts=2,
        baseline_cost_usd=0.00045,
        status="ok",
        created_at=1_700_000_000_000,
    )
    base.update(kw)
    return UsageRecordV1(**base)  # type: ignore[arg-type]


def test_usage_record_json_round_trip() -> None:
    r = record()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["v"] == USAGE_SCHEMA_VERSION == 1
    assert UsageRecordV1.from_dict(d) == r
    assert r.total_tokens == 120
    assert r.savings_usd == pytest.approx(0.00045 - 0.000027)
    assert UsageRecord is UsageRecordV1


@pytest.mark.parametrize("kind", sorted(CACHE_KINDS))
def test_usage_record_cache_kinds(kind: str) -> None:
    r = record(cache=kind, cost_usd=0.0)
    assert UsageRecordV1.from_dict(r.to_dict()).cache == kind


def test_usage_record_rejects_unknown_versions_and_kinds() -> None:
    with pytest.raises(ValueError):
        UsageRecordV1.from_dict({**record().to_dict(), "v": 2})
    with pytest.raises(ValueError):
        record(cache="fuzzy")
    with pytest.raises(ValueError):
        record(prompt_tokens=-1)


def test_usage_record_from_minimal_dict_takes_defaults() -> None:
    r = UsageRecordV1.from_dict({"id": "x"})
    assert (r.tier, r.attempts, r.cache, r.feature, r.status, r.cost_usd) == ("none", 1, None, None, "ok", 0.0)


def test_from_response_prices_the_baseline() -> None:
    resp = Response(
        id="r9",
        tenant="acme",
        session="s",
        status="ok",
        tier="local",
        model="qwen",
        usage=Usage(1000, 200),
        cost_usd=0.0,
        latency_ms=88.0,
        created_at=5,
    )
    r = UsageRecordV1.from_response(resp, baseline_price=(2.5, 10.0), feature="chat", attempts=1)
    assert (r.id, r.tier, r.prompt_tokens, r.completion_tokens, r.cache, r.feature) == (
        "r9",
        "local",
        1000,
        200,
        None,
        "chat",
    )
    assert r.baseline_cost_usd == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)
    assert UsageRecordV1.from_response(resp).baseline_cost_usd == 0.0


def test_from_response_cache_hit_uses_saved_usage() -> None:
    route = {
        "tier": "cache",
        "cache": {"kind": "semantic", "saved_usage": {"prompt_tokens": 400, "completion_tokens": 100}},
    }
    resp = Response(id="r2", tenant="t", session="s", status="ok", tier="cache", route=route)
    r = UsageRecordV1.from_response(resp, baseline_price=Price(1.0, 4.0))
    assert r.cache == "semantic"
    assert (r.prompt_tokens, r.completion_tokens, r.cost_usd) == (0, 0, 0.0)
    assert r.baseline_cost_usd == pytest.approx((400 + 400) / 1e6)
