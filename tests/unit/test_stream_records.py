"""Streamed-reply records: ``stream`` on requests, chunk and cancel records, cached answers as chunks, and the
cancel registry the workers poll."""

from __future__ import annotations

import orjson
import pytest

from schemas.parse import InvalidMessage, parse_cancel, parse_chunk, parse_request
from schemas.records import Request, Response, dumps
from schemas.streaming import Cancel, Chunk
from streams.cancels import CancelRegistry
from streams.stages.cache_state import answer_messages, waiter_of
from streams.stages.chunks import split_text


def test_stream_is_omitted_unless_set_and_round_trips() -> None:
    plain = Request(id="r", tenant="t", session="s", prompt="hi")
    assert "stream" not in plain.to_dict()
    streamed = Request(id="r", tenant="t", session="s", prompt="hi", stream=True)
    assert streamed.to_dict()["stream"] is True
    assert parse_request(dumps(streamed)).stream is True
    assert parse_request(dumps(plain)).stream is False


@pytest.mark.parametrize("value", ["yes", 1, None, {}])
def test_a_stream_that_is_not_a_boolean_is_rejected(value: object) -> None:
    raw = orjson.dumps({"id": "r", "tenant": "t", "session": "s", "prompt": "hi", "stream": value})
    with pytest.raises(InvalidMessage) as caught:  # null included: only a boolean is accepted
        parse_request(raw)
    assert caught.value.reason == "wrong_type:stream" and caught.value.request_id == "r"


def test_chunk_and_cancel_records_parse_back() -> None:
    chunk = Chunk(id="r", seq=3, text=" Paris", tenant="t", session="s")
    assert parse_chunk(dumps(chunk.to_dict())) == chunk
    cancel = Cancel(id="r", reason="client_disconnected", at=5)
    assert parse_cancel(dumps(cancel.to_dict())) == cancel
    with pytest.raises(InvalidMessage):
        parse_chunk(dumps(Response(id="r", tenant="t", session="s", status="ok")))  # a response is no chunk
    with pytest.raises(InvalidMessage):
        parse_chunk(orjson.dumps({"v": 1, "type": "chunk", "id": "r", "seq": -1, "text": "x"}))
    with pytest.raises(InvalidMessage):
        parse_cancel(orjson.dumps({"v": 1, "type": "cancel"}))


def test_a_chunk_is_not_mistaken_for_a_response() -> None:
    """Consumers of reply_to that only know responses skip chunks (no ``status``) instead of misreading them."""
    from schemas.parse import parse_response

    with pytest.raises(InvalidMessage):
        parse_response(dumps(Chunk(id="r", seq=0, text="x").to_dict()))


@pytest.mark.parametrize("text", ["", "short", "word " * 150, "x" * 450, "a b " * 99 + "end"])
def test_split_text_joins_back_exactly(text: str) -> None:
    pieces = split_text(text, size=50)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= 50 for p in pieces)


def test_a_streamed_cache_hit_gets_chunks_then_the_response() -> None:
    request = Request(id="r2", tenant="t", session="s", prompt="q", stream=True, reply_to="svc.inbox")
    entry = {"text": "The answer is 4. " * 30, "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    outs = answer_messages(waiter_of(request), entry, {"kind": "exact"}, "p.responses", chunks_topic="p.chunks")
    topics = [o.topic for o in outs]
    assert topics[-2:] == ["p.responses", "svc.inbox"]
    chunk_outs = [o for o in outs if o.topic == "p.chunks"]
    chunks = [parse_chunk(o.value) for o in chunk_outs]
    assert len(chunks) >= 2 and [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == entry["text"]
    assert all(o.key == b"r2" for o in outs)
    assert topics.count("svc.inbox") == len(chunks) + 1  # reply_to gets the chunks and the response
    plain = Request(id="r3", tenant="t", session="s", prompt="q")
    outs = answer_messages(waiter_of(plain), entry, {"kind": "exact"}, "p.responses", chunks_topic="p.chunks")
    assert [o.topic for o in outs] == ["p.responses"]


def test_cancel_registry_flags_running_and_later_jobs() -> None:
    registry = CancelRegistry()
    flag = registry.watch("a")
    assert not flag.is_set()
    assert registry.cancel("a") and flag.is_set()
    assert not registry.cancel("b")  # not running here; remembered
    assert registry.watch("b").is_set()  # a job starting after its cancel stops at once
    registry.done("a")
    assert not registry.watch("c").is_set()
