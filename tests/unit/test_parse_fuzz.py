"""Property-based fuzzing of the parsers and the admit stage, without a broker.

Properties: any bytes make ``parse_*`` either return a record or raise ``InvalidMessage`` (never another
exception); a request that parses survives every re-encoding the pipeline does (job, tenant hop, result,
rejection); the admit stage turns every refused message into exactly one dead letter with a documented reason,
plus a rejection when an id was readable. Examples are derandomized so CI sees the same inputs every run.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.parse import (
    InvalidMessage,
    parse_job,
    parse_lookup,
    parse_request,
    parse_response,
    parse_result,
)
from schemas.records import Job, Response, Result, dumps
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.outgoing import Source
from tests.fixtures.hostile import (
    FIELD_DEFECTS,
    FUZZ_LIMITS,
    hostile_messages,
    json_values,
    valid_requests,
)


def fuzz(n: int) -> Any:
    """Derandomized: the same ``n`` examples on every run (no example database), no per-example deadline."""
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


REASON = re.compile(
    r"malformed_json|invalid_utf8|not_an_object|oversized|unknown_version|prompt_too_long|too_deep:metadata"
    r"|(missing_field|wrong_type|too_long):[a-z_]+"
)
SETTINGS = Settings(
    topic_prefix="fz",
    max_message_bytes=FUZZ_LIMITS.max_message_bytes,
    max_prompt_chars=FUZZ_LIMITS.max_prompt_chars,
    default_max_tokens=FUZZ_LIMITS.default_max_tokens,
    breaker_enabled=False,
)
SRC = Source("fz.requests", 0, 7)


def _outcome(parse: Any, raw: bytes) -> Any:
    try:
        return parse(raw)
    except InvalidMessage as exc:
        assert exc.reason and exc.detail
        return exc


@fuzz(2000)
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_invalid_message(raw: bytes) -> None:
    for parse in (parse_job, parse_lookup, parse_result, parse_response):
        _outcome(parse, raw)
    _outcome(lambda b: parse_request(b, FUZZ_LIMITS), raw)


# Objects with the field names the parsers look at, holding any JSON value: this reaches deep into each parser.
RECORD_FIELDS = (
    "v",
    "id",
    "tenant",
    "session",
    "status",
    "usage",
    "route",
    "request",
    "job",
    "response",
    "tier",
    "key",
    "admitted_at",
    "command",
    "older_than_ms",
    "cost_usd",
    "created_at",
    "text",
)
record_like = st.dictionaries(st.sampled_from(RECORD_FIELDS), json_values | st.just(1), max_size=8)


@fuzz(600)
@given(record_like, st.sampled_from(("request", "job", "response", "result")))
def test_record_shaped_objects_parse_or_raise_invalid_message(data: dict[str, Any], nest: str) -> None:
    for value in (data, {"v": 1, nest: data}, {"v": 1, "job": {"v": 1, "request": data}, "response": data}):
        raw = orjson.dumps(value)
        for parse in (parse_job, parse_lookup, parse_result, parse_response):
            _outcome(parse, raw)
        _outcome(lambda b: parse_request(b, FUZZ_LIMITS), raw)


@fuzz(1000)
@given(hostile_messages)
def test_hostile_messages_are_refused_with_a_documented_reason(message: tuple[bytes | None, bytes]) -> None:
    _, raw = message
    with pytest.raises(InvalidMessage) as info:
        parse_request(raw, FUZZ_LIMITS)
    assert REASON.fullmatch(info.value.reason), info.value.reason
    rid = info.value.request_id
    assert rid is None or (isinstance(rid, str) and 0 < len(rid) <= 256)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with any field set to any JSON value: valid or not, the outcome must be clean."""
    data = draw(valid_requests())
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from([*sorted(FIELD_DEFECTS), "unknown", "feature"]))
        data[name] = draw(json_values)
    return orjson.dumps(data)


@fuzz(400)
@given(valid_requests().map(orjson.dumps) | mutated())
def test_accepted_requests_survive_every_re_encoding(raw: bytes) -> None:
    request = _outcome(lambda b: parse_request(b, FUZZ_LIMITS), raw)
    if isinstance(request, InvalidMessage):
        return
    job = Job(request=request, tier="local", key="k" * 64, route={"feature": request.feature})
    assert parse_job(dumps(job)) == job
    assert parse_job(orjson.dumps({"v": 1, "kind": "job", "job": job.to_dict()}["job"])) == job  # tenant hop
    rejected = Response.rejected(request, "budget")
    assert parse_response(dumps(rejected)) == rejected
    assert parse_result(dumps(Result(job=job, response=rejected))).job == job


@pytest.mark.parametrize("depth", [33, 64, 200, 253, 254, 255, 600, 1000])
def test_deep_metadata_is_refused_before_it_breaks_re_encoding(depth: int) -> None:
    # Built as text: orjson itself refuses to encode more than 254 levels (the very failure this prevents).
    nested = b'{"n": ' * depth + b'"leaf"' + b"}" * depth
    raw = b'{"tenant": "t", "session": "s", "prompt": "p", "metadata": ' + nested + b"}"
    with pytest.raises(InvalidMessage) as info:
        parse_request(raw, FUZZ_LIMITS)
    assert info.value.reason == "too_deep:metadata"


def test_reply_to_must_be_a_topic_name() -> None:
    ok = parse_request(orjson.dumps({"tenant": "t", "session": "s", "prompt": "p", "reply_to": "svc.in_box-1"}))
    assert ok.reply_to == "svc.in_box-1"
    for name in ("a b", "..", "x" * 250, "ü", "a/b", "a\x00"):
        raw = orjson.dumps({"id": "r", "tenant": "t", "session": "s", "prompt": "p", "reply_to": name})
        with pytest.raises(InvalidMessage) as info:
            parse_request(raw)
        assert info.value.reason == "wrong_type:reply_to" and "reply_to" not in info.value.partial


@fuzz(300)
@given(hostile_messages)
def test_admit_stage_dead_letters_each_hostile_message_once(message: tuple[bytes | None, bytes]) -> None:
    _, raw = message
    stage = AdmitStage(SETTINGS)
    outs = asyncio.run(stage.handle(raw, SRC))
    letters = [orjson.loads(o.value) for o in outs if o.topic == "fz.deadletter"]
    replies = [orjson.loads(o.value) for o in outs if o.topic == "fz.responses" or not o.topic.startswith("fz.")]
    assert len(letters) == 1
    [letter] = letters
    assert REASON.fullmatch(letter["reason"]) and letter["offset"] == 7 and letter["original_bytes"] == len(raw)
    if letter["request_id"]:
        assert replies and all(r["id"] == letter["request_id"] and r["status"] == "rejected" for r in replies)
        internal = {o.topic for o in outs if o.topic.startswith("fz.")} - {"fz.decisions"}  # the audit trail
        assert internal == {"fz.deadletter", "fz.responses"}  # a reply_to copy never lands in Sluice's topics
    else:
        assert replies == []


async def test_admit_never_replies_into_sluices_own_topics() -> None:
    stage = AdmitStage(SETTINGS)  # every topic "exists" for this stage
    for internal in ("fz.requests", "fz.usage", "fz-admit-sessions-changelog", "__consumer_offsets"):
        bad = orjson.dumps({"id": "b1", "tenant": "t", "session": "s", "prompt": 1, "reply_to": internal})
        assert _topics(await stage.handle(bad, SRC)) == ["fz.deadletter", "fz.responses"]
        good = orjson.dumps({"id": "g1", "tenant": "t", "session": "s", "prompt": "hi", "reply_to": internal})
        [out] = [o for o in await stage.handle(good, SRC) if o.topic != "fz.decisions"]
        assert out.topic == "fz.responses" and orjson.loads(out.value)["reason"] == "unknown_reply_to"
    ok = orjson.dumps({"id": "g2", "tenant": "t", "session": "s", "prompt": "hi", "reply_to": "fz.responses"})
    assert _topics(await stage.handle(ok, SRC)) == ["fz.lookup"]
    inbox = orjson.dumps({"id": "g3", "tenant": "t", "session": "s", "prompt": "hi", "reply_to": "fz.inbox.svc-a"})
    assert _topics(await stage.handle(inbox, SRC)) == ["fz.lookup"]  # a user's inbox under the prefix is fine


def _topics(outs: list[Any]) -> list[str]:
    return sorted(o.topic for o in outs if o.topic != "fz.decisions")
