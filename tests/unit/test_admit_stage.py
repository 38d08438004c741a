"""The admission stage without a broker: what it emits for each kind of input."""

from __future__ import annotations

import orjson

from schemas.parse import parse_job
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.outgoing import Source

SETTINGS = Settings(topic_prefix="sx", max_prompt_chars=50, max_tokens_limit=64)
SRC = Source("sx.requests", 1, 42)


async def _no_such_topic(name: str) -> bool:
    return name == "svc.inbox"


async def test_valid_request_goes_to_lookup_keyed_by_dedup_key() -> None:
    stage = AdmitStage(SETTINGS)
    raw = orjson.dumps({"id": "r1", "tenant": "acme", "session": "s", "prompt": "hi", "max_tokens": 8})
    [out] = await stage.handle(raw, SRC)
    assert out.topic == "sx.lookup"
    job = parse_job(out.value)
    assert out.key == job.key.encode() and len(job.key) == 64
    assert job.request.id == "r1" and job.route == {} and job.tier == ""
    assert stage.counts["admitted"] == 1


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
    job = parse_job((await stage.handle(raw, SRC))[0].value)
    assert job.request.max_tokens == 64
    assert job.route["notes"] == ["max_tokens clamped to 64"]


async def test_invalid_input_goes_to_deadletter_and_the_requester_hears_back() -> None:
    stage = AdmitStage(SETTINGS, _no_such_topic)
    raw = orjson.dumps({"id": "r9", "tenant": "acme", "session": "s", "prompt": "x" * 51, "reply_to": "svc.inbox"})
    outs = await stage.handle(raw, SRC)
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
    assert [o.topic for o in outs] == ["sx.deadletter"]
    assert orjson.loads(outs[0].value)["reason"] == "malformed_json"


async def test_unknown_reply_topic_is_rejected_on_the_responses_topic_only() -> None:
    stage = AdmitStage(SETTINGS, _no_such_topic)
    raw = orjson.dumps({"id": "r2", "tenant": "acme", "session": "s", "prompt": "hi", "reply_to": "nowhere"})
    outs = await stage.handle(raw, SRC)
    assert [o.topic for o in outs] == ["sx.responses"]
    assert orjson.loads(outs[0].value)["reason"] == "unknown_reply_to"


async def test_per_tenant_limits_clamp_or_reject(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  strict: {max_tokens: 32, over_limit: reject, max_prompt_chars: 20}\n  small: {max_tokens: 16}\n"
    )
    stage = AdmitStage(Settings(topic_prefix="sx", max_tokens_limit=64, tenants_file=str(tenants)))

    async def run(tenant: str, prompt: str, max_tokens: int) -> dict:
        raw = orjson.dumps({"id": "x", "tenant": tenant, "session": "s", "prompt": prompt, "max_tokens": max_tokens})
        [out] = await stage.handle(raw, SRC)
        return {"topic": out.topic, **orjson.loads(out.value)}

    assert (await run("strict", "hi", 33))["reason"] == "max_tokens_over_limit"
    assert (await run("strict", "x" * 21, 8))["reason"] == "prompt_over_tenant_limit"
    assert (await run("strict", "hi", 32))["topic"] == "sx.lookup"
    assert (await run("small", "hi", 50))["request"]["max_tokens"] == 16
    assert (await run("anyone", "hi", 100))["request"]["max_tokens"] == 64  # the global cap
