from __future__ import annotations

import orjson
import pytest

from schemas.parse import InvalidMessage, Limits, parse_job, parse_request, parse_response
from schemas.records import Job, Response, Usage, dumps

LIMITS = Limits(max_message_bytes=2000, max_prompt_chars=100, default_max_tokens=32)


def _req(**fields: object) -> bytes:
    base: dict[str, object] = {"tenant": "acme", "session": "s1", "prompt": "hello"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_valid_request_fills_defaults() -> None:
    r = parse_request(_req(), LIMITS)
    assert (r.tenant, r.session, r.prompt, r.max_tokens, r.priority) == ("acme", "s1", "hello", 32, "interactive")
    assert len(r.id) == 32 and r.created_at > 0
    assert [m.content for m in r.chat()] == ["hello"]


def test_messages_and_metadata_round_trip() -> None:
    raw = _req(
        prompt=None,
        id="r-1",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        metadata={"feature": "search"},
        priority="batch",
        reply_to="svc.inbox",
    )
    r = parse_request(raw, LIMITS)
    assert r.id == "r-1" and r.feature == "search" and r.priority == "batch" and r.reply_to == "svc.inbox"
    assert parse_request(dumps(r), LIMITS) == r


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "malformed_json"),
        (b"\xc3\x28", "invalid_utf8"),
        (b'"just a string"', "not_an_object"),
        (_req(tenant=None), "missing_field:tenant"),
        (_req(session="  "), "missing_field:session"),
        (_req(tenant=5), "wrong_type:tenant"),
        (_req(prompt=None), "missing_field:prompt"),
        (_req(messages=[{"role": "user", "content": "x"}]), "missing_field:prompt"),  # both given
        (_req(prompt=None, messages=[]), "wrong_type:messages"),
        (_req(prompt=None, messages=[{"role": "wizard", "content": "x"}]), "wrong_type:messages"),
        (_req(max_tokens=0), "wrong_type:max_tokens"),
        (_req(max_tokens=True), "wrong_type:max_tokens"),
        (_req(priority="urgent"), "wrong_type:priority"),
        (_req(metadata=[1]), "wrong_type:metadata"),
        (_req(v=2), "unknown_version"),
        (_req(prompt="x" * 101), "prompt_too_long"),
        (_req(session="s" * 300), "too_long:session"),
        (b'{"pad": "' + b"x" * 3000 + b'"}', "oversized"),
    ],
)
def test_invalid_requests_name_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request(raw, LIMITS)
    assert info.value.reason == reason


def test_rejection_keeps_only_client_supplied_identity() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_request(_req(id="abc", prompt=3, reply_to="svc.inbox"), LIMITS)
    assert info.value.request_id == "abc" and info.value.partial["reply_to"] == "svc.inbox"
    with pytest.raises(InvalidMessage) as info:
        parse_request(_req(prompt=3), LIMITS)
    assert info.value.request_id is None  # a generated id could never be correlated by the requester


def test_job_and_response_round_trip() -> None:
    request = parse_request(_req(id="j1"), LIMITS)
    job = Job(request=request, tier="local", key="k" * 64, route={"tier": "local", "reason": "default"})
    assert parse_job(dumps(job)) == job
    response = Response(id="j1", tenant="acme", session="s1", status="ok", text="hi", usage=Usage(3, 4))
    assert parse_response(dumps(response)) == response
    with pytest.raises(InvalidMessage):
        parse_job(b'{"v": 1, "tier": "local"}')
