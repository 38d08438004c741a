"""The decision trail's records (no keys, round trip, off switch), the candidate file and the shadow's settings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from schemas.parse import InvalidMessage, parse_decision
from schemas.records import Job, Request, Response, Usage
from streams.replay.candidate import load_candidate
from streams.replay.command import parse_time_ms
from streams.replay.shadow import settings_env, shadow_request, shadow_settings
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail, scrub
from workers.errors import ConfigError

SETTINGS = Settings(topic_prefix="sx")


def _cloud_response(chain: list[str], reason: str | None = None) -> tuple[Job, Response]:
    request = Request(id="r1", tenant="acme", session="s", prompt="hi")
    job = Job(request=request, tier="cloud-frontier", key="k", route={"tier": "cloud-frontier"})
    route = {"tier": "cloud-frontier", "chain": chain, "attempts": 4, "provider": "anthropic", "fallback": True}
    response = Response(
        id="r1",
        tenant="acme",
        session="s",
        status="ok",
        tier="cloud",
        model="claude",
        usage=Usage(9, 3),
        cost_usd=0.001,
        route=route,
        reason=reason,
    )
    return job, response


def test_tier_records_scrub_anything_key_shaped_and_round_trip() -> None:
    chain = ["openai:gpt-4o failed 401: Incorrect API key provided: sk-live-abcdef123456", "anthropic ok"]
    job, response = _cloud_response(chain, reason="x-api-key: sk-ant-secret99 rejected")
    [out] = DecisionTrail(SETTINGS).tier("cloud", job, response)
    assert out.topic == "sx.decisions" and out.key == b"r1"
    assert b"sk-live" not in out.value and b"sk-ant" not in out.value
    decision = parse_decision(out.value)
    assert (decision.stage, decision.verdict, decision.data["served"]) == ("cloud", "ok", "cloud")
    assert decision.data["attempts"] == 4 and decision.data["fallback"] is True and decision.data["usage"] == [9, 3]
    assert "[redacted]" in decision.data["chain"][0] and decision.data["chain"][1] == "anthropic ok"
    assert scrub("Authorization: Bearer abc.def") == "Authorization: [redacted]"


def test_decision_versions_are_checked_and_the_trail_can_be_off() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_decision(orjson.dumps({"v": 2, "id": "x", "stage": "admit"}))
    assert info.value.reason == "unknown_version"
    job, response = _cloud_response([])
    off = DecisionTrail(Settings(topic_prefix="sx", decisions_enabled=False))
    assert off.tier("cloud", job, response) == [] and off.final(response, {}) == []
    assert off.admit(job.request, "admitted") == [] and off.routed(job, {}, 0) == []


def test_time_arguments() -> None:
    now = 1_800_000_000_000
    assert parse_time_ms("now", now) == now and parse_time_ms("1700000000123", now) == 1_700_000_000_123
    assert parse_time_ms("90m", now) == now - 90 * 60_000
    assert parse_time_ms("2027-01-15T00:00:00Z", now) == parse_time_ms("2027-01-15T00:00:00", now)
    with pytest.raises(ValueError):
        parse_time_ms("last tuesday", now)


def test_candidate_sections_override_production_and_silence_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "candidate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": {"threshold": 0.93, "tenants": {"acme": 0.97}},
                "router": {"knob": 0.6, "local_only_tenants": ["bank"]},
                "budgets": {"session_hard_usd": 0.25, "tenants": {"acme": {"budget_hard_usd": 5}}},
                "breaker": {"max_requests": 5, "rate_window_s": 2},
            }
        )
    )
    production = Settings(topic_prefix="sx", local_only_tenants="gov", session_budget_soft_usd=0.1)
    c = load_candidate(path, production)
    assert c.cache.threshold == 0.93 and c.cache.threshold_for("acme", None) == 0.97
    assert c.knob == 0.6 and c.local_only_tenants == {"bank"}
    assert c.session_budget == (0.1, 0.25) and c.tenant_budgets["acme"] == (None, 5.0)
    assert c.breaker is not None and (c.breaker.max_requests, c.breaker.rate_window_ms) == (5, 2000)
    assert c.cache_changed and c.route_changed and c.budget_changed and c.breaker_changed and not c.tiers_changed
    silent = tmp_path / "empty.yaml"
    silent.write_text("{}\n")
    same = load_candidate(silent, production)
    assert not (same.cache_changed or same.route_changed or same.budget_changed or same.breaker_changed)
    assert same.local_only_tenants == {"gov"} and same.tiers.frontier.name == "cloud-frontier"
    bad = tmp_path / "bad.yaml"
    bad.write_text("routerz: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_candidate(bad, production)


def test_the_shadow_gets_its_own_namespace_and_never_the_requesters_topic(tmp_path: Path) -> None:
    path = tmp_path / "candidate.yaml"
    path.write_text(
        yaml.safe_dump({"router": {"knob": 0.8}, "cache": {"threshold": 0.95}, "breaker": {"enabled": False}})
    )
    production = Settings(topic_prefix="prod", data_dir=str(tmp_path / "data"), kafka_sasl_password="pw")
    shadow = shadow_settings(production, "abc", path)
    assert shadow.topic_prefix == "prod-shadow-abc" and shadow.topic("usage") == "prod-shadow-abc.usage"
    assert Path(shadow.data_dir) == tmp_path / "data" / "shadow" / "abc"
    assert yaml.safe_load(Path(shadow.tiers_file).read_text())["router"]["knob"] == 0.8
    assert yaml.safe_load(Path(shadow.cache_policy_file).read_text())["threshold"] == 0.95
    assert shadow.breaker_enabled is False and production.breaker_enabled is True
    env = settings_env(shadow)
    assert env["SLUICE_TOPIC_PREFIX"] == "prod-shadow-abc" and env["SLUICE_BREAKER_ENABLED"] == "false"
    assert Settings.from_env(env) == shadow  # the child worker sees exactly these settings
    request = Request(id="r1", tenant="acme", session="s", prompt="hi", reply_to="acme.inbox", created_at=1)
    moved = shadow_request(request)
    assert moved.reply_to is None and moved.id == "r1" and moved.created_at > 1


def test_the_decisions_topic_is_created_with_the_configured_retention() -> None:
    from streams.topics import new_topics

    topics = {t.name: t for t in new_topics(Settings(topic_prefix="sx", decisions_retention_ms=3_600_000))}
    assert topics["sx.decisions"].topic_configs["retention.ms"] == "3600000"
    assert "retention.ms" not in topics["sx.responses"].topic_configs
