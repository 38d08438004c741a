"""Streamed requests answered by the cache stages (real embedder, embedded Qdrant, shipped verifier): exact and
semantic hits and coalesced waiters that asked for ``stream`` get the known text as chunks, then their response;
those that did not ask get only the response."""

from __future__ import annotations

from schemas.parse import parse_chunk
from streams.stages.outgoing import Outgoing
from tests.unit.test_cache_stages import Harness, h, responses

__all__ = ["h"]  # the harness fixture, shared with test_cache_stages

LONG = "Click 'Forgot password' on the sign-in page, then follow the link we email you. " * 5


def chunks_for(outs: list[Outgoing], request_id: str) -> str:
    mine = [parse_chunk(o.value) for o in outs if o.topic == "sx.chunks" and o.key == request_id.encode()]
    assert [c.seq for c in mine] == list(range(len(mine)))
    return "".join(c.text for c in mine)


async def test_streamed_hits_and_waiters_get_chunks_then_the_response(h: Harness) -> None:
    leader = h.job("How do I reset my password?")
    follower = h.job("How do I reset my password?", stream=True)  # coalesces onto the (non-streamed) leader
    plain_follower = h.job("How do I reset my password?")
    await h.look(leader)
    assert await h.look(follower) == [] and await h.look(plain_follower) == []
    outs = await h.finish(leader, LONG)
    assert chunks_for(outs, follower.request.id) == LONG  # the coalesced streamed waiter
    assert chunks_for(outs, plain_follower.request.id) == "" and chunks_for(outs, leader.request.id) == ""
    topics = [o.topic for o in outs if o.key == follower.request.id.encode()]
    assert topics[-1] == "sx.responses" and topics.count("sx.chunks") >= 2  # chunks first, then the response

    exact = h.job("How do I reset my password?", stream=True)
    outs = await h.look(exact)
    [hit] = responses(outs)
    assert hit["route"]["cache"]["kind"] == "exact" and chunks_for(outs, exact.request.id) == LONG == hit["text"]

    semantic = h.job("How can I reset my password?", stream=True)
    outs = await h.look(semantic)
    [hit] = responses(outs)
    assert hit["route"]["cache"]["kind"] == "semantic" and chunks_for(outs, semantic.request.id) == LONG
    assert hit["usage"]["completion_tokens"] == 0 and hit["cost_usd"] == 0.0  # a hit is never billed again
