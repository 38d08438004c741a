"""Cloud forwarders and retries over real loopback HTTP (tests/fixtures/provider_sim; fixtures in conftest.py).

Backoff sleeps are injected (recorded, not slept) except where a real timeout is the point of the test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from schemas.records import Message
from tests.fixtures.cloud import ANTHROPIC_KEY, CHAT, FAST, OPENAI_KEY, Sleeps, closed_port
from tests.fixtures.provider_sim import ProviderSim, Reply
from workers.cloud import (
    AnthropicProvider,
    OpenAICompatProvider,
    ProviderError,
    RetryPolicy,
    api_key_from_env,
    parse_retry_after,
    retry_call,
)
from workers.ports import Completion

pytestmark = pytest.mark.timeout(30)


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
