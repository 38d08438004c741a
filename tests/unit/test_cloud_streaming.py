"""Streaming cloud forwarders over real loopback HTTP (server-sent events from tests/fixtures/provider_sim): the
same text and usage as the non-streamed call, retries and fallback only before the first chunk, and a cancel
that stops reading (so the provider stops generating)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from schemas.records import Job, Message, Request, dumps
from streams.cancels import CancelRegistry
from streams.settings import Settings
from streams.stages.cloud_tier import CloudTierStage
from streams.stages.outgoing import Outgoing, Source
from streams.stages.streaming import StreamingCloudStage
from tests.fixtures.provider_sim import ProviderSim, Reply
from workers.cloud import (
    AllProvidersFailed,
    AnthropicProvider,
    FallbackChain,
    OpenAICompatProvider,
    ProviderLink,
    RetryPolicy,
)
from workers.cloud.provider import HttpProvider

pytestmark = pytest.mark.timeout(30)

CHAT = [Message("system", "You are terse."), Message("user", "Say hello")]
TEXT = "one two three four five six seven eight"
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01, deadline_s=10.0)


@pytest.fixture
async def providers(sim: ProviderSim) -> AsyncIterator[dict[str, Any]]:
    made: dict[str, HttpProvider] = {
        "openai": OpenAICompatProvider(api_key="sk-o", base_url=sim.openai_base_url),
        "anthropic": AnthropicProvider(api_key="sk-a", base_url=sim.anthropic_base_url),
    }
    yield made
    for p in made.values():
        await p.aclose()


class Pieces:
    def __init__(self) -> None:
        self.items: list[str] = []

    async def __call__(self, text: str) -> None:
        self.items.append(text)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_stream_matches_the_plain_call(sim: ProviderSim, providers: dict[str, Any], api: str) -> None:
    provider: Any = providers[api]
    sim.script(api, Reply(text=TEXT), Reply(text=TEXT))  # type: ignore[arg-type]
    plain = await provider.complete(CHAT, 16, "m-1", timeout_s=5)
    pieces = Pieces()
    streamed = await provider.stream(CHAT, 16, "m-1", timeout_s=5, on_text=pieces)
    assert len(pieces.items) == len(TEXT.split()) and "".join(pieces.items) == TEXT
    assert (streamed.text, streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.text,
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert streamed.prompt_tokens > 0 and streamed.finish_reason == "stop"
    body = sim.seen(api)[-1].body  # type: ignore[arg-type]
    assert body["stream"] is True
    if api == "openai":
        assert body["stream_options"] == {"include_usage": True}


async def test_failures_before_the_first_chunk_are_retried_then_fall_back(
    sim: ProviderSim, providers: dict[str, Any]
) -> None:
    sim.script("openai", Reply(status=500), Reply(status=429, retry_after="0"), Reply(status=500))
    sim.script("anthropic", Reply(text=TEXT))
    chain = FallbackChain(
        [ProviderLink(providers["openai"], "gpt-x"), ProviderLink(providers["anthropic"], "claude-x")], retry=FAST
    )
    pieces = Pieces()
    result = await chain.complete(CHAT, 16, pieces)
    assert result.chain == ["openai:gpt-x failed 500x3", "anthropic:claude-x ok"]
    assert "".join(pieces.items) == TEXT  # only the answering provider's text went out


async def test_a_failure_after_the_first_chunk_is_final(sim: ProviderSim, providers: dict[str, Any]) -> None:
    sim.script("openai", Reply(text=TEXT, break_after=3))
    sim.script("anthropic", Reply(text="never asked"))
    chain = FallbackChain(
        [ProviderLink(providers["openai"], "gpt-x"), ProviderLink(providers["anthropic"], "claude-x")], retry=FAST
    )
    pieces = Pieces()
    with pytest.raises(AllProvidersFailed) as caught:
        await chain.complete(CHAT, 16, pieces)
    assert "".join(pieces.items) == "one two three"
    assert [a.describe() for a in caught.value.attempts] == ["openai:gpt-x failed stream_brokenx1"]
    assert not caught.value.retriable
    assert len(sim.seen("openai")) == 1 and not sim.seen("anthropic")  # no retry, no fallback


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_cancel_stops_reading_the_stream(sim: ProviderSim, providers: dict[str, Any], api: str) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    sim.script(api, Reply(text=words, chunk_delay_s=0.01))  # type: ignore[arg-type]
    pieces = Pieces()
    provider: Any = providers[api]
    done = await provider.stream(CHAT, 500, "m", timeout_s=5, on_text=pieces, cancelled=lambda: len(pieces.items) >= 5)
    assert done.finish_reason == "cancelled" and len(pieces.items) == 5
    assert done.completion_tokens >= 5 and done.prompt_tokens > 0  # metered for what was produced
    await asyncio.sleep(0.3)
    assert sim.deltas_sent < 100  # the provider stopped writing once the connection closed
    assert sim.streams_abandoned == 1


async def test_cloud_stream_stage_relays_chunks_and_prices_the_usage(
    sim: ProviderSim, providers: dict[str, Any]
) -> None:
    settings = Settings(topic_prefix="sx")
    chain = FallbackChain([ProviderLink(providers["openai"], "gpt-x")], retry=FAST)
    stage = CloudTierStage(settings, lambda: chain, lambda m, p, c: (p * 2 + c * 8) / 1e6)
    sent: list[Outgoing] = []

    async def send(messages: list[Outgoing]) -> None:
        sent.extend(messages)

    def job(stream: bool) -> bytes:
        request = Request(id="c1", tenant="t", session="s", messages=tuple(CHAT), max_tokens=16, stream=stream)
        return dumps(Job(request=request, tier="cloud", key="k", route={"tier": "frontier"}))

    sim.script("openai", Reply(text=TEXT), Reply(text=TEXT))
    await StreamingCloudStage(stage, CancelRegistry()).handle(job(True), Source("sx.tier.cloud", 0, 0), send)
    chunks = [orjson.loads(o.value) for o in sent if o.topic == "sx.chunks"]
    [streamed] = [orjson.loads(o.value)["response"] for o in sent if o.topic == "sx.results"]
    assert [c["seq"] for c in chunks] == list(range(len(TEXT.split())))
    assert "".join(c["text"] for c in chunks) == TEXT == streamed["text"]
    [plain] = [
        orjson.loads(o.value)["response"]
        for o in await stage.handle(job(False), Source("x", 0, 1))
        if o.topic == "sx.results"
    ]
    assert streamed["usage"] == plain["usage"] and streamed["cost_usd"] == plain["cost_usd"] > 0
