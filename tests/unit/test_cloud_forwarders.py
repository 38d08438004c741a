"""Cloud forwarders, retries, breakers and the fallback chain, over real loopback HTTP (tests/fixtures/provider_sim).

Backoff sleeps are injected (recorded, not slept) except where a real timeout is the point of the test.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from schemas.records import Message
from streams.policy.provider_breaker import BreakerConfig, BreakerRegistry, BreakerState
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
    api_key_from_env,
    parse_retry_after,
    retry_call,
)
from workers.cloud.fallback import Link
from workers.errors import ModelOverloaded
from workers.ports import Completion

pytestmark = pytest.mark.timeout(30)

OPENAI_KEY = "sk-test-OPENAI-5f1d2c9a7b"
ANTHROPIC_KEY = "sk-ant-test-ANTHROPIC-83be41"
CHAT = [Message("system", "You are terse."), Message("user", "Say hello")]
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01, retry_after_cap_s=5.0, deadline_s=10.0)


class Sleeps:
    """Records requested backoff delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSim]:
    async with ProviderSim() as s:
        yield s


@pytest.fixture
async def openai(sim: ProviderSim) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic(sim: ProviderSim) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url)
    yield provider
    await provider.aclose()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_openai_happy_path_with_usage(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", Reply(text="Hello there friend"))
    completion = await openai.complete(CHAT, 16, "gpt-4o-mini", timeout_s=5)
    assert completion == Completion("Hello there friend", 5, 3, "gpt-4o-mini", "stop")
    [seen] = sim.seen("openai")
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.body["max_tokens"] == 16 and seen.body["model"] == "gpt-4o-mini"
    assert seen.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]


async def test_anthropic_happy_path_system_field_and_usage(sim: ProviderSim, anthropic: AnthropicProvider) -> None:
    sim.script("anthropic", Reply(text="Hi!"))
    chat = [*CHAT, Message("assistant", "Hi"), Message("user", "again"), Message("user", "please")]
    completion = await anthropic.complete(chat, 32, "claude-3-5-haiku-latest", timeout_s=5)
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("Hi!", 8, 1)
    assert completion.finish_reason == "stop" and completion.model == "claude-3-5-haiku-latest"
    [seen] = sim.seen("anthropic")
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.body["system"] == "You are terse."
    assert seen.body["max_tokens"] == 32
    assert seen.body["messages"] == [
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "again\n\nplease"},
    ]


async def test_429_retry_after_is_honoured_then_success(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", Reply(status=429, retry_after="2", text="slow down"), Reply(text="ok now"))
    sleeps = Sleeps()
    result = await retry_call(
        lambda t: openai.complete(CHAT, 8, "gpt-4o", timeout_s=t), FAST, timeout_s=5, sleep=sleeps, label="openai"
    )
    assert result.attempts == 2 and result.completion.text == "ok now"
    assert sleeps.delays == [2.0]  # the server's Retry-After, not the (millisecond) backoff
    assert len(sim.seen("openai")) == 2


async def test_retry_after_http_date_and_cap(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3600), usegmt=True)
    sim.script("openai", Reply(status=503, retry_after=when), Reply())
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=2, retry_after_cap_s=4.0, deadline_s=None)
    result = await retry_call(lambda t: openai.complete(CHAT, 8, "m", timeout_s=t), policy, timeout_s=5, sleep=sleeps)
    assert result.attempts == 2 and sleeps.delays == [4.0]


async def test_retry_after_beyond_deadline_fails_fast(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", Reply(status=429, retry_after="30"))
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=5, retry_after_cap_s=60, deadline_s=5)
    with pytest.raises(ProviderError) as info:
        await retry_call(lambda t: openai.complete(CHAT, 8, "m", timeout_s=t), policy, timeout_s=5, sleep=sleeps)
    assert info.value.status == 429 and info.value.retry_after_s == 30.0 and info.value.attempts == 1
    assert sleeps.delays == []


async def test_500s_exhausted_raise_retriable_error(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", *[Reply(status=500, text="boom")] * 3)
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as info:
        await retry_call(lambda t: openai.complete(CHAT, 8, "m", timeout_s=t), FAST, timeout_s=5, sleep=sleeps)
    err = info.value
    assert (err.status, err.retriable, err.attempts, err.code) == (500, True, 3, "500")
    assert "boom" in str(err)
    assert len(sim.seen("openai")) == 3 and len(sleeps.delays) == 2
    assert all(0 <= d <= FAST.max_delay_s for d in sleeps.delays)


async def test_401_is_not_retried(sim: ProviderSim) -> None:
    sim.expected_key = "the-right-key"
    provider = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    try:
        with pytest.raises(ProviderError) as info:
            await retry_call(lambda t: provider.complete(CHAT, 8, "m", timeout_s=t), FAST, timeout_s=5, sleep=Sleeps())
    finally:
        await provider.aclose()
    assert (info.value.status, info.value.retriable, info.value.attempts) == (401, False, 1)
    assert len(sim.seen("openai")) == 1
    assert OPENAI_KEY not in str(info.value)  # the sim's 401 body echoed it: scrubbed


async def test_timeout_is_retried(sim: ProviderSim, anthropic: AnthropicProvider) -> None:
    sim.script("anthropic", Reply(hang=True), Reply(text="late but fine"))
    result = await retry_call(
        lambda t: anthropic.complete(CHAT, 8, "claude", timeout_s=t), FAST, timeout_s=0.3, sleep=Sleeps()
    )
    assert result.attempts == 2 and result.completion.text == "late but fine"


async def test_connect_error_is_retriable() -> None:
    provider = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=f"http://127.0.0.1:{closed_port()}/v1")
    try:
        with pytest.raises(ProviderError) as info:
            await retry_call(lambda t: provider.complete(CHAT, 8, "m", timeout_s=t), FAST, timeout_s=2, sleep=Sleeps())
    finally:
        await provider.aclose()
    assert (info.value.kind, info.value.retriable, info.value.attempts, info.value.status) == ("connect", True, 3, None)


async def test_malformed_reply_is_a_bad_response(sim: ProviderSim, openai: OpenAICompatProvider) -> None:
    sim.script("openai", Reply(raw_body="<html>gateway</html>"), Reply(raw_body='{"choices": []}'))
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            await openai.complete(CHAT, 8, "m", timeout_s=5)
        assert info.value.kind == "bad_response" and info.value.retriable


def test_status_classification() -> None:
    for status in (408, 429, 500, 502, 503, 529):
        assert ProviderError("x", provider="p", status=status).retriable, status
    for status in (400, 401, 403, 404, 422):
        assert not ProviderError("x", provider="p", status=status).retriable, status
    assert ProviderError("x", provider="p", kind="timeout").retriable


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    date = format_datetime(datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC), usegmt=True)
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(date, now=now) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_KEY", "  abc  ")
    monkeypatch.setenv("SLUICE_EMPTY_KEY", "")
    assert api_key_from_env("SLUICE_TEST_KEY") == "abc"
    assert api_key_from_env("SLUICE_EMPTY_KEY") is None
    assert api_key_from_env("SLUICE_NO_SUCH_VAR_XYZ") is None
    assert api_key_from_env("") is None


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
