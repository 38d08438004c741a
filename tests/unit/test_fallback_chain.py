"""Provider breakers, the fallback chain (provider A -> B -> local) and key redaction, over real loopback HTTP.

Backoff sleeps are injected (recorded, not slept) and the breaker's clock is set by the test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from schemas.records import Message
from streams.policy.provider_breaker import BreakerConfig, BreakerRegistry, BreakerState
from tests.fixtures.cloud import ANTHROPIC_KEY, CHAT, FAST, OPENAI_KEY, FakeClock, Sleeps, closed_port
from tests.fixtures.provider_sim import ProviderSim, Reply
from workers.cloud import (
    AllProvidersFailed,
    AnthropicProvider,
    FallbackChain,
    LocalLink,
    OpenAICompatProvider,
    ProviderError,
    ProviderLink,
    RetryPolicy,
)
from workers.cloud.fallback import Link
from workers.errors import ModelOverloaded
from workers.ports import Completion

pytestmark = pytest.mark.timeout(30)


async def test_breaker_opens_skips_provider_then_half_open_probe(
    sim: ProviderSim, openai: OpenAICompatProvider
) -> None:
    clock = FakeClock()
    breakers = BreakerRegistry(BreakerConfig(consecutive_failures=2, cooldown_s=30), clock=clock)
    local_calls: list[int] = []

    async def local(messages: Sequence[Message], max_tokens: int) -> Completion:
        local_calls.append(max_tokens)
        return Completion("local text", 3, 2, "smollm2")

    once = RetryPolicy(max_attempts=1)
    chain = FallbackChain(
        [ProviderLink(openai, "gpt-4o", retry=once), LocalLink(local)], breakers=breakers, sleep=Sleeps()
    )
    sim.script("openai", Reply(status=500), Reply(status=502))
    for _ in range(2):
        assert (await chain.complete(CHAT, 8)).tier == "local"
    assert breakers.get("openai").state is BreakerState.OPEN
    skipped = await chain.complete(CHAT, 8)
    assert skipped.chain == ["openai:gpt-4o skipped breaker_open", "local:smollm2 ok"]
    assert len(sim.seen("openai")) == 2  # the open breaker kept the third call off the wire

    clock.now += 31  # cooldown over: one probe; it fails and the breaker re-opens
    sim.script("openai", Reply(status=503))
    assert (await chain.complete(CHAT, 8)).chain[0] == "openai:gpt-4o failed 503x1"
    assert breakers.get("openai").state is BreakerState.OPEN and len(sim.seen("openai")) == 3

    clock.now += 31  # next probe succeeds and closes it
    assert breakers.get("openai").state is BreakerState.HALF_OPEN
    result = await chain.complete(CHAT, 8)
    assert result.tier == "cloud" and result.chain == ["openai:gpt-4o ok"]
    assert breakers.get("openai").state is BreakerState.CLOSED
    assert len(local_calls) == 4


async def test_fallback_a_b_local_records_chain(
    sim: ProviderSim, openai: OpenAICompatProvider, anthropic: AnthropicProvider
) -> None:
    sim.script("openai", *[Reply(status=429, retry_after="0")] * 3)
    sim.script("anthropic", Reply(status=500), Reply(status=500))

    async def local(messages: Sequence[Message], max_tokens: int) -> Completion:
        return Completion("from local", 4, 2, "smollm2")

    links: list[Link] = [
        ProviderLink(openai, "gpt-4o"),
        ProviderLink(anthropic, "claude-3-5-haiku", retry=RetryPolicy(max_attempts=2, base_delay_s=0.001)),
        LocalLink(local),
    ]
    chain = FallbackChain(links, retry=FAST, sleep=Sleeps())
    result = await chain.complete(CHAT, 8)
    assert result.chain == ["openai:gpt-4o failed 429x3", "anthropic:claude-3-5-haiku failed 500x2", "local:smollm2 ok"]
    assert result.tier == "local" and result.completion.text == "from local"
    assert result.calls_made == 6
    assert [a.status for a in result.attempts] == [429, 500, None]
    assert all(a.elapsed_ms >= 0 for a in result.attempts)

    sim.script("openai", *[Reply(status=429, retry_after="0")] * 3)
    second = await chain.complete(CHAT, 8)
    assert second.chain == ["openai:gpt-4o failed 429x3", "anthropic:claude-3-5-haiku ok"]
    assert second.tier == "cloud" and second.served_by.provider == "anthropic"


async def test_all_links_failing_raise_with_attempts(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", Reply(status=400, text="bad request"))

    async def local(messages: Sequence[Message], max_tokens: int) -> Completion:
        raise ModelOverloaded("all slots busy")

    breakers = BreakerRegistry(BreakerConfig(consecutive_failures=1))
    chain = FallbackChain([ProviderLink(openai, "gpt-4o"), LocalLink(local)], breakers=breakers, sleep=Sleeps())
    with pytest.raises(AllProvidersFailed) as info:
        await chain.complete(CHAT, 8)
    assert [a.describe() for a in info.value.attempts] == [
        "openai:gpt-4o failed 400x1",
        "local:local failed ModelOverloadedx1",
    ]
    assert info.value.retriable  # the local model was only busy
    assert breakers.get("openai").state is BreakerState.CLOSED  # a 400 says nothing about the provider


async def test_keys_never_leak_into_errors_or_logs(sim: ProviderSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx/httpcore included
    sim.expected_key = "a-different-key"  # so the sim answers 401 and echoes the key we sent
    openai = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    anthropic = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url)
    dead = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=f"http://127.0.0.1:{closed_port()}/v1", name="dead")
    errors: list[BaseException] = []
    try:
        for provider in (openai, anthropic, dead):
            with pytest.raises(ProviderError) as info:
                await provider.complete(CHAT, 8, "m", timeout_s=2)
            errors.append(info.value)
        sim.expected_key = None
        sim.script("openai", Reply(hang=True), *[Reply(status=500, text=f"echo {OPENAI_KEY}")] * 3)
        chain = FallbackChain(
            [ProviderLink(openai, "gpt-4o", timeout_s=0.2), ProviderLink(dead, "x", retry=RetryPolicy(max_attempts=1))],
            retry=RetryPolicy(max_attempts=4, base_delay_s=0.001),
        )
        with pytest.raises(AllProvidersFailed) as chain_info:
            await chain.complete(CHAT, 8)
        errors.append(chain_info.value)
    finally:
        for provider in (openai, anthropic, dead):
            await provider.aclose()
    assert [getattr(e, "status", None) for e in errors[:3]] == [401, 401, None]
    texts = [caplog.text, *(str(e) for e in errors), *(repr(e) for e in errors), repr(openai), repr(anthropic)]
    texts += [repr(r.args) for r in caplog.records]
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert all(key not in t for t in texts), key
    assert "***" in str(errors[0])  # the echoed key was scrubbed, not just absent
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # DEBUG logging really was on
    # The keys travelled only in their own header, never in a body.
    assert all(OPENAI_KEY not in r.raw and ANTHROPIC_KEY not in r.raw for r in sim.requests)


class SlowFailingProvider:
    """Not HTTP: a provider whose one call eats the whole chain deadline (on a fake clock)."""

    name = "slow"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def complete(
        self, messages: Sequence[Message], max_tokens: int, model: str, *, timeout_s: float
    ) -> Completion:
        self.clock.now += 2.0
        raise ProviderError("slow: HTTP 503", provider=self.name, status=503)

    async def aclose(self) -> None:
        return None


async def test_chain_deadline_skips_remaining_providers(sim: ProviderSim, anthropic: AnthropicProvider) -> None:
    clock = FakeClock()

    async def local(messages: Sequence[Message], max_tokens: int) -> Completion:
        return Completion("local", 1, 1, "smollm2")

    links: list[Link] = [
        ProviderLink(SlowFailingProvider(clock), "s"),
        ProviderLink(anthropic, "claude"),
        LocalLink(local),
    ]
    breakers = BreakerRegistry(clock=clock)
    chain = FallbackChain(links, breakers=breakers, retry=FAST, deadline_s=1.5, clock=clock, sleep=Sleeps())
    result = await chain.complete(CHAT, 8)
    assert result.chain == ["slow:s failed 503x1", "anthropic:claude skipped deadline", "local:smollm2 ok"]
    assert sim.seen("anthropic") == []
    assert breakers.get("anthropic").snapshot()["window_calls"] == 0
