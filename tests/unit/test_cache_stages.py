"""Lookup and complete stages with the real embedder, the embedded Qdrant engine and the shipped verifier.

Only the Faust tables are replaced by dicts (they are plain mutable mappings to the stages); everything
else is the production code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from schemas.records import Job, Message, Request, Response, Result, Usage, dumps
from streams.policy.cache_key import dedup_key
from streams.settings import Settings
from streams.stages.cache_setup import load_policy, open_embedder
from streams.stages.cache_state import CacheState
from streams.stages.complete import CompleteStage
from streams.stages.lookup import LookupStage
from streams.stages.outgoing import Outgoing, Source
from streams.stages.routing import build_router
from tests.integration.tiers_files import write_tiers

SRC = Source("sx.lookup", 0, 0)


class Harness:
    def __init__(self, settings: Settings, lookup: LookupStage, complete: CompleteStage) -> None:
        self.settings, self.lookup, self.complete = settings, lookup, complete
        self.n = 0
        self.decided: dict[str, dict] = {}  # request id -> its latest lookup decision record

    def job(self, prompt: str | list[tuple[str, str]], tenant: str = "acme", **fields: object) -> Job:
        self.n += 1
        messages = [("user", prompt)] if isinstance(prompt, str) else prompt
        request = Request(
            id=f"r{self.n}",
            tenant=tenant,
            session="s",
            messages=tuple(Message(r, c) for r, c in messages),
            max_tokens=16,
            **fields,  # type: ignore[arg-type]
        )
        key = dedup_key(tenant, request.chat(), {"max_tokens": 16})
        return Job(request=request, tier="", key=key)

    async def look(self, job: Job) -> list[Outgoing]:
        """The lookup's messages; its decision records (sluice.decisions) are kept in ``decided``."""
        outs = await self.lookup.handle(dumps(job), SRC)
        for o in outs:
            if o.topic == "sx.decisions":
                record = orjson.loads(o.value)
                assert o.key == record["id"].encode() and record["stage"] == "lookup"
                self.decided[record["id"]] = record
        return [o for o in outs if o.topic != "sx.decisions"]

    def decision(self, job: Job) -> dict:
        return self.decided[job.request.id]

    async def finish(self, job: Job, text: str = "the answer", status: str = "ok") -> list[Outgoing]:
        request = job.request
        response = Response(
            id=request.id,
            tenant=request.tenant,
            session=request.session,
            status=status,
            text=text if status == "ok" else "",
            tier="local",
            model="m",
            usage=Usage(10, 5),
            reason=None if status == "ok" else "local_model_error: boom",
        )
        sent: list[Outgoing] = []

        async def send(outs: list[Outgoing]) -> None:
            sent.extend(outs)

        await self.complete.handle(dumps(Result(job=replace(job, tier="local"), response=response)), SRC, send)
        return sent

    async def cached(self, text: str, answer: str) -> Job:
        """A request missed, answered and so cached: what the test's own requests may hit."""
        job = self.job(text)
        await self.look(job)
        await self.finish(job, answer)
        return job

    async def semantic_hit(self, text: str, source: Job) -> dict:
        """The one response to ``text``, checked to be a semantic cache hit of ``source``."""
        [hit] = responses(await self.look(self.job(text)))
        cache = hit["route"]["cache"]
        assert hit["tier"] == "cache" and cache["kind"] == "semantic" and cache["source_id"] == source.request.id
        return hit


def responses(outs: list[Outgoing]) -> list[dict]:
    return [orjson.loads(o.value) for o in outs if o.topic == "sx.responses"]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    from streams.policy.verifier import Verifier
    from workers.vector_store import open_vector_store

    tiers = write_tiers(tmp_path / "tiers.yaml", knob=0.0)  # the real router, sending misses to the local tier
    settings = Settings(topic_prefix="sx", data_dir=str(tmp_path), tiers_file=str(tiers))
    state = CacheState(exact={}, inflight={})
    policy = load_policy(settings)
    embedder = open_embedder(settings)
    store = open_vector_store("edge", path=tmp_path / "vectors")
    verify = Verifier.load().score
    lookup = LookupStage(settings, state, policy, embedder, store, verify, build_router(settings))
    complete = CompleteStage(settings, state, policy, embedder, store)
    yield Harness(settings, lookup, complete)
    await store.close()
    embedder.close()


async def test_miss_dispatches_then_exact_hit_needs_no_embedding(h: Harness) -> None:
    first = h.job("What is the capital of France?")
    [out] = await h.look(first)
    assert out.topic == "sx.tier.local" and out.key == first.key.encode()
    missed = h.decision(first)
    assert missed["verdict"] == "miss" and missed["data"]["cache"] == {"kind": "miss", "candidates": []}
    assert missed["data"]["route"]["tier"] == "local-small" and missed["data"]["route"]["kind"] == "local"
    [answer] = responses(await h.finish(first, "Paris"))
    assert answer["id"] == first.request.id and answer["tier"] == "local"
    embedded = h.lookup.embedder.texts
    second = h.job("What is the  capital of France?")  # same key after whitespace normalisation
    [hit] = responses(await h.look(second))
    assert h.lookup.embedder.texts == embedded  # the exact path computed no embedding
    assert (hit["id"], hit["tier"], hit["text"], hit["cost_usd"]) == (second.request.id, "cache", "Paris", 0.0)
    assert hit["route"]["cache"]["kind"] == "exact"
    assert hit["route"]["cache"]["source_id"] == first.request.id
    assert hit["route"]["cache"]["saved_usage"] == {"prompt_tokens": 10, "completion_tokens": 5}
    exact = h.decision(second)["data"]["cache"]
    assert h.decision(second)["verdict"] == "exact" and exact["source_id"] == first.request.id
    assert exact["source_tier"] == "local" and exact["saved"] == [10, 5]


async def test_identical_requests_in_flight_coalesce_and_each_gets_its_own_response(h: Harness) -> None:
    leader, follower, third = (h.job("Summarise the news") for _ in range(3))
    assert len(await h.look(leader)) == 1
    assert await h.look(follower) == [] and await h.look(third) == []
    joined = h.decision(third)
    assert joined["verdict"] == "coalesced" and joined["data"]["cache"]["source_id"] == leader.request.id
    assert await h.look(follower) == []  # a redelivery does not add a second waiter
    outs = responses(await h.finish(leader, "Nothing happened."))
    assert sorted(r["id"] for r in outs) == sorted(j.request.id for j in (leader, follower, third))
    by_id = {r["id"]: r for r in outs}
    assert by_id[follower.request.id]["route"]["cache"]["kind"] == "coalesced"
    assert all(r["text"] == "Nothing happened." for r in outs)
    assert await h.finish(leader, "again") == []  # a redelivered result answers nobody twice


async def test_a_failure_reaches_every_waiter_and_is_not_cached(h: Harness) -> None:
    leader, follower = h.job("Explain relativity"), h.job("Explain relativity")
    await h.look(leader)
    await h.look(follower)
    outs = responses(await h.finish(leader, status="error"))
    assert [r["status"] for r in outs] == ["error", "error"]
    assert all("boom" in r["reason"] for r in outs)
    assert [o.topic for o in await h.look(h.job("Explain relativity"))] == ["sx.tier.local"]


async def test_verified_paraphrase_hits_and_a_flipped_meaning_does_not(h: Harness) -> None:
    stored = await h.cached("How do I reset my password?", "Click 'Forgot password'.")
    hit = await h.semantic_hit("How can I reset my password?", stored)
    cache = hit["route"]["cache"]
    assert 0.8 < cache["similarity"] < 1.0 and cache["verifier_score"] >= cache["threshold"]
    decided = h.decided[hit["id"]]
    semantic = decided["data"]["cache"]
    assert decided["verdict"] == "semantic" and semantic["threshold"] == cache["threshold"]
    cos, score, same_context = semantic["candidates"][0]
    assert same_context == 1 and score == cache["verifier_score"] and cos == cache["similarity"]

    await h.cached("How do I enable 2FA on my account?", "Settings → Security → Enable.")
    flipped = h.job("How do I disable 2FA on my account?")
    outs = await h.look(flipped)
    assert [o.topic for o in outs] == ["sx.tier.local"]
    missed = h.decision(flipped)["data"]["cache"]
    assert missed["kind"] == "miss" and missed["candidates"], missed  # what replay re-decides from
    assert all(score < missed["threshold"] for cos, score, same in missed["candidates"] if same)


async def test_a_greeting_and_thanks_around_a_cached_request_still_hit(h: Harness) -> None:
    stored = await h.cached("How do I reset my password?", "Click 'Forgot password'.")
    hit = await h.semantic_hit("Hi! How do I reset my password? Thanks!", stored)
    assert hit["route"]["cache"]["similarity"] > 0.999  # the same text was compared: greeting and thanks left out
    [out] = await h.look(h.job("Hi! How do I reset my router?"))  # the request still has to match
    assert out.topic == "sx.tier.local"


async def test_no_hit_crosses_tenants_or_conversation_contexts(h: Harness) -> None:
    stored = h.job("How can I reset my password?", tenant="acme")
    await h.look(stored)
    await h.finish(stored, "acme's secret procedure")
    assert [o.topic for o in await h.look(h.job("How can I reset my password?", tenant="globex"))] == ["sx.tier.local"]
    other_context = h.job([("user", "I use a Mac."), ("assistant", "OK."), ("user", "How can I reset my password?")])
    assert [o.topic for o in await h.look(other_context)] == ["sx.tier.local"]
    assert [c[2] for c in h.decision(other_context)["data"]["cache"]["candidates"]] == [0]  # another context


async def test_opt_out_and_refresh(h: Harness) -> None:
    opted_out = h.job("Tell me a joke", cache=False)
    assert [o.topic for o in await h.look(opted_out)] == ["sx.tier.local"]
    assert h.decision(opted_out)["verdict"] == "skip"
    assert [o.topic for o in await h.look(h.job("Tell me a joke", cache=False))] == ["sx.tier.local"]  # no coalescing
    [answer] = responses(await h.finish(opted_out, "A joke."))
    assert answer["tier"] == "local"
    assert [o.topic for o in await h.look(h.job("Tell me a joke"))] == ["sx.tier.local"]  # nothing was stored

    first = h.job("Tell me a fact")
    await h.look(first)
    await h.finish(first, "old fact")
    refresh = h.job("Tell me a fact", cache_refresh=True)
    assert [o.topic for o in await h.look(refresh)] == ["sx.tier.local"]
    assert h.decision(refresh)["verdict"] == "refresh"
    await h.finish(refresh, "new fact")
    [hit] = responses(await h.look(h.job("Tell me a fact")))
    assert hit["text"] == "new fact"


async def test_expired_entries_are_not_served(h: Harness) -> None:
    import asyncio

    h.lookup.policy = replace(h.lookup.policy, ttl_s=0.2)
    first = h.job("What time zone is Tokyo in?")
    await h.look(first)
    await h.finish(first, "JST")
    assert responses(await h.look(h.job("What time zone is Tokyo in?")))[0]["text"] == "JST"
    await asyncio.sleep(0.3)
    # Both the exact entry and the vector (TTL filter in the store query) are past their time.
    assert [o.topic for o in await h.look(h.job("What time zone is Tokyo in?"))] == ["sx.tier.local"]
    assert [o.topic for o in await h.look(h.job("What time zone is Tokyo in, please?"))] == ["sx.tier.local"]


async def test_crash_windows_lose_nothing(h: Harness) -> None:
    """A redelivered leader is dispatched again (its job may never have left), and a request that arrives while
    the leader's answer is being sent is answered from the completed key."""
    leader = h.job("Define entropy")
    await h.look(leader)
    assert [o.topic for o in await h.look(leader)] == ["sx.tier.local"]
    late = h.job("Define entropy")
    late_outs: list[Outgoing] = []

    async def send_and_race(outs: list[Outgoing]) -> None:
        late_outs.extend(await h.look(late))  # joins while the responses are in flight

    request = leader.request
    response = Response(id=request.id, tenant="acme", session="s", status="ok", text="disorder", tier="local")
    await h.complete.handle(dumps(Result(job=replace(leader, tier="local"), response=response)), SRC, send_and_race)
    [answer] = responses(late_outs)
    assert answer["id"] == late.request.id and answer["text"] == "disorder"
    assert answer["route"]["cache"]["kind"] == "coalesced"
    assert h.lookup.state.inflight == {}  # the claim is dropped once everything was sent
