"""The admission stage without a broker: what it emits for each kind of input."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import orjson

from schemas.parse import parse_job
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.outgoing import Outgoing, Source

SETTINGS = Settings(topic_prefix="sx", max_prompt_chars=50, max_tokens_limit=64)
SRC = Source("sx.requests", 1, 42)


async def _no_such_topic(name: str) -> bool:
    return name == "svc.inbox"


def split(outs: list[Outgoing]) -> tuple[list[Outgoing], list[dict]]:
    """The stage's messages, and its decision records (sluice.decisions, keyed by request id)."""
    decided = [o for o in outs if o.topic == "sx.decisions"]
    assert all(o.key == orjson.loads(o.value)["id"].encode() for o in decided)
    return [o for o in outs if o.topic != "sx.decisions"], [orjson.loads(o.value) for o in decided]


async def test_valid_request_goes_to_lookup_keyed_by_dedup_key() -> None:
    stage = AdmitStage(SETTINGS)
    raw = orjson.dumps({"id": "r1", "tenant": "acme", "session": "s", "prompt": "hi", "max_tokens": 8})
    [out], [decided] = split(await stage.handle(raw, SRC))
    assert out.topic == "sx.lookup"
    job = parse_job(out.value)
    assert out.key == job.key.encode() and len(job.key) == 64
    assert job.request.id == "r1" and job.route == {} and job.tier == ""
    assert stage.counts["admitted"] == 1
    assert (decided["id"], decided["stage"], decided["verdict"], decided["reason"]) == ("r1", "admit", "admitted", None)
    assert decided["data"] == {
        "prompt": "hi",
        "prompt_chars": 2,
        "messages": 1,
        "max_tokens": 8,
        "priority": "interactive",
    }


async def test_identical_requests_share_a_key_and_tenants_do_not() -> None:
    stage = AdmitStage(SETTINGS)

    async def key(tenant: str, rid: str) -> bytes | None:
        raw = orjson.dumps({"id": rid, "tenant": tenant, "session": rid, "prompt": "same question"})
        return (await stage.handle(raw, SRC))[0].key

    assert await key("acme", "a") == await key("acme", "b")
    assert await key("acme", "a") != await key("globex", "c")


async def test_max_tokens_over_the_limit_is_clamped_and_noted() -> None:
    stage = AdmitStage(SETTINGS)
    raw = orjson.dumps({"tenant": "acme", "session": "s", "prompt": "hi", "max_tokens": 5000})
    [out], [decided] = split(await stage.handle(raw, SRC))
    job = parse_job(out.value)
    assert job.request.max_tokens == 64
    assert job.route["notes"] == ["max_tokens clamped to 64"]
    assert decided["data"]["max_tokens"] == 64 and decided["data"]["clamped_from"] == 5000


async def test_invalid_input_goes_to_deadletter_and_the_requester_hears_back() -> None:
    stage = AdmitStage(SETTINGS, _no_such_topic)
    raw = orjson.dumps({"id": "r9", "tenant": "acme", "session": "s", "prompt": "x" * 51, "reply_to": "svc.inbox"})
    outs, [decided] = split(await stage.handle(raw, SRC))
    assert (decided["id"], decided["verdict"], decided["reason"]) == ("r9", "deadletter", "prompt_too_long")
    assert [o.topic for o in outs] == ["sx.deadletter", "sx.responses", "svc.inbox"]
    letter = orjson.loads(outs[0].value)
    assert letter["reason"] == "prompt_too_long" and letter["request_id"] == "r9"
    assert (letter["source_topic"], letter["partition"], letter["offset"]) == ("sx.requests", 1, 42)
    reply = orjson.loads(outs[1].value)
    assert (reply["id"], reply["status"], reply["reason"], reply["tier"]) == (
        "r9",
        "rejected",
        "prompt_too_long",
        "none",
    )
    assert stage.counts["deadletter:prompt_too_long"] == 1


async def test_anonymous_garbage_is_dead_lettered_without_a_reply() -> None:
    stage = AdmitStage(SETTINGS)
    outs = await stage.handle(b"\x00\x01 not json", SRC)
    assert [o.topic for o in outs] == ["sx.deadletter"]  # no id: no decision record to key
    assert orjson.loads(outs[0].value)["reason"] == "malformed_json"


async def test_unknown_reply_topic_is_rejected_on_the_responses_topic_only() -> None:
    stage = AdmitStage(SETTINGS, _no_such_topic)
    raw = orjson.dumps({"id": "r2", "tenant": "acme", "session": "s", "prompt": "hi", "reply_to": "nowhere"})
    outs, [decided] = split(await stage.handle(raw, SRC))
    assert [o.topic for o in outs] == ["sx.responses"]
    assert orjson.loads(outs[0].value)["reason"] == "unknown_reply_to"
    assert (decided["verdict"], decided["reason"]) == ("rejected", "unknown_reply_to")


async def test_per_tenant_limits_clamp_or_reject(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  strict: {max_tokens: 32, over_limit: reject, max_prompt_chars: 20}\n  small: {max_tokens: 16}\n"
    )
    stage = AdmitStage(Settings(topic_prefix="sx", max_tokens_limit=64, tenants_file=str(tenants)))

    async def run(tenant: str, prompt: str, max_tokens: int) -> dict:
        raw = orjson.dumps({"id": "x", "tenant": tenant, "session": "s", "prompt": prompt, "max_tokens": max_tokens})
        [out], [decided] = split(await stage.handle(raw, SRC))
        assert decided["verdict"] == ("admitted" if out.topic == "sx.lookup" else "rejected")
        return {"topic": out.topic, **orjson.loads(out.value)}

    assert (await run("strict", "hi", 33))["reason"] == "max_tokens_over_limit"
    assert (await run("strict", "x" * 21, 8))["reason"] == "prompt_over_tenant_limit"
    assert (await run("strict", "hi", 32))["topic"] == "sx.lookup"
    assert (await run("small", "hi", 50))["request"]["max_tokens"] == 16
    assert (await run("anyone", "hi", 100))["request"]["max_tokens"] == 64  # the global cap


async def test_the_trail_redacts_listed_tenants_and_can_be_turned_off() -> None:
    redacting = AdmitStage(replace(SETTINGS, redact_prompt_tenants="bank, acme2"))
    raw = orjson.dumps({"id": "p1", "tenant": "bank", "session": "s", "prompt": "my account is 1234"})
    _, [decided] = split(await redacting.handle(raw, SRC))
    assert "prompt" not in decided["data"] and "1234" not in str(decided)
    assert decided["data"]["prompt_chars"] == 18
    assert decided["data"]["prompt_sha256"] == hashlib.sha256(b"my account is 1234").hexdigest()
    off = AdmitStage(replace(SETTINGS, decisions_enabled=False))
    outs = await off.handle(raw, SRC)
    assert [o.topic for o in outs] == ["sx.lookup"]
