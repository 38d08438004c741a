"""The OpenAI-compatible ingress on the genuine broker: the official ``openai`` SDK, pointed at ``sluice serve``'s
app by ``base_url``, gets real SmolLM2 text through Kafka, a cache hit on the repeat, 401/400/429 errors in
OpenAI's shape, the tiers' models, and Prometheus metrics fed from ``sluice.usage``. The error mapping for
rejections the pipeline rarely produces (budget, timeout, model failure) runs against a fake client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from schemas.records import Request, Response, Usage
from streams.ingress.keys import KeyMap
from streams.ingress.server import create_app
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.procs import SluiceProcess, start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration

KEY = "sk-acme-test-0001"
KEYS = {"keys": {KEY: {"tenant": "acme"}, "sk-beta-test-0002": "beta"}}
SMOLLM = "SmolLM2-135M-Instruct-Q4_1"


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Run ``app`` on a free loopback port; returns the runner and the base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def sdk(base: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=180.0)


def keys_file(tmp: Path) -> KeyMap:
    path = tmp / "keys.yaml"
    path.write_text(yaml.safe_dump(KEYS))
    return KeyMap(path)


@dataclass
class Stack:
    settings: Settings
    base: str
    worker: SluiceProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """All roles in one ``sluice worker`` subprocess (everything routed to SmolLM2) and the ingress in-process."""
    tmp = tmp_path_factory.mktemp("ingress")
    tiers = write_tiers(tmp / "tiers.yaml", knob=0.0)
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix="t" + uuid.uuid4().hex[:10],
        partitions=2,
        data_dir=str(tmp / "sluice"),
        reply_timeout_s=150.0,
        tiers_file=str(tiers),
    )
    await create_topics(settings)
    worker = start_worker(settings, tmp, env={"SLUICE_TIERS_FILE": str(tiers)})
    runner, base = await serve(create_app(settings, keys_file(tmp), interval_s=0.5))
    try:
        yield Stack(settings, base, worker)
    finally:
        await runner.cleanup()
        worker.stop()


async def test_sdk_gets_model_text_then_a_cache_hit(stack: Stack) -> None:
    client = sdk(stack.base)
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a primary colour."}]
    first = await client.chat.completions.create(
        model="auto", messages=messages, max_tokens=8, user="chat-1", extra_body={"sluice_feature": "colours"}
    )
    assert first.object == "chat.completion" and first.model == SMOLLM
    assert first.choices[0].message.content and first.choices[0].message.content.strip()
    assert first.usage is not None and first.usage.completion_tokens > 0 and first.usage.prompt_tokens > 0
    facts = (first.model_extra or {})["sluice"]
    assert facts["tier"] == "local" and facts["cache"] is None and facts["session"] == "chat-1"
    assert facts["route"]["feature"] == "colours"

    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=8)
    again = raw.parse()
    assert raw.headers["X-Sluice-Tier"] == "cache" and raw.headers["X-Sluice-Cache"] == "exact"
    assert float(raw.headers["X-Sluice-Cost-USD"]) == 0.0
    assert again.choices[0].message.content == first.choices[0].message.content
    assert (again.model_extra or {})["sluice"]["cache"] == "exact"
    assert (again.model_extra or {})["sluice"]["saved_cost_usd"] >= 0.0


async def test_unknown_or_missing_key_is_401(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(stack.base, key="sk-nope").chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.base}/v1/chat/completions", json={"messages": []}) as r:
            body = await r.json()
    assert r.status == 401 and set(body["error"]) == {"message", "type", "param", "code"}


async def test_models_lists_the_tiers_models(stack: Stack) -> None:
    ids = [m.id async for m in sdk(stack.base).models.list()]
    assert {"auto", "local-small", SMOLLM} <= set(ids)


async def test_unsupported_and_invalid_requests_are_400(stack: Stack) -> None:
    client = sdk(stack.base)
    with pytest.raises(openai.BadRequestError, match="only n=1"):  # (stream=True: tests/integration/test_streaming.py)
        await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], n=2)
    wizard: Any = [{"role": "wizard", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="auto", messages=wizard)
    assert caught.value.param == "messages[0].role"


async def test_a_looping_session_gets_429_with_retry_after(stack: Stack) -> None:
    client = sdk(stack.base)
    loop: Any = [{"role": "user", "content": "Try again."}]
    headers = {"X-Sluice-Session": "agent-loop"}
    for _ in range(7):  # the default breaker trips on the 8th identical prompt in a row
        await client.chat.completions.create(model="auto", messages=loop, max_tokens=4, extra_headers=headers)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="auto", messages=loop, max_tokens=4, extra_headers=headers)
    assert caught.value.code == "session_breaker_open"
    assert int(caught.value.response.headers["Retry-After"]) >= 1


async def test_metrics_count_the_traffic(stack: Stack) -> None:
    """Runs after the tests above: their usage records reach /metrics through sluice.usage."""
    deadline, samples = time.monotonic() + 30, {}
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{stack.base}/metrics") as r:
                text = await r.text()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            requests = sum(v for (n, _), v in samples.items() if n == "sluice_requests_total")
            hits = samples.get(("sluice_cache_hits_total", (("kind", "exact"),)), 0)
            if requests >= 10 and hits >= 7 and samples.get(("sluice_breakers_open", ()), 0) >= 1:
                break
            await asyncio.sleep(0.5)
    assert requests >= 10 and hits >= 7, text  # 2 + 8 requests above, 1 + 6 of them cache hits
    assert samples[("sluice_breakers_open", ())] >= 1
    assert samples[("sluice_requests_total", (("status", "rejected"), ("tier", "none")))] >= 1
    assert any(n == "sluice_consumer_lag" for n, _ in samples)
    assert any(n == "sluice_request_latency_seconds_count" and v > 0 for (n, _), v in samples.items())
    assert samples.get(("sluice_savings_usd_total", ()), 0) > 0  # SmolLM2 is free; the frontier is not


class FakeClient:
    """Stands in for SluiceClient: answers every request with ``outcome``."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.seen: list[Request] = []

    async def submit(self, request: Request, timeout: float | None = None) -> Response:
        self.seen.append(request)
        if self.outcome == "timeout":
            raise TimeoutError
        if self.outcome == "ok":
            return Response(request.id, request.tenant, request.session, "ok", "Hi.", "local", SMOLLM, Usage(5, 2))
        status = "error" if self.outcome == "error" else "rejected"
        return Response(request.id, request.tenant, request.session, status, reason=self.outcome)


@pytest.mark.parametrize(
    ("outcome", "error", "status"),
    [
        ("budget", openai.APIStatusError, 402),
        ("breaker", openai.RateLimitError, 429),
        ("prompt_too_long", openai.BadRequestError, 400),
        ("error", openai.APIStatusError, 502),
        ("timeout", openai.APIStatusError, 504),
    ],
)
async def test_rejections_map_to_http_codes(
    tmp_path: Path, outcome: str, error: type[openai.APIStatusError], status: int
) -> None:
    runner, base = await serve(create_app(Settings(), keys_file(tmp_path), client=FakeClient(outcome), feeds=False))
    try:
        with pytest.raises(error) as caught:
            await sdk(base).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    finally:
        await runner.cleanup()
    assert caught.value.status_code == status
    body: Any = caught.value.body
    assert body["message"] and body["type"]


async def test_request_fields_reach_the_sluice_request(tmp_path: Path) -> None:
    fake = FakeClient("ok")
    runner, base = await serve(create_app(Settings(), keys_file(tmp_path), client=fake, feeds=False))
    try:
        messages: Any = [
            {"role": "developer", "content": "Terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
        reply = await sdk(base).chat.completions.create(
            model="local-small",
            messages=messages,
            max_completion_tokens=2,
            metadata={"team": "x"},
            extra_body={"sluice_feature": "support", "cache": False},
        )
    finally:
        await runner.cleanup()
    sent = fake.seen[0]
    assert (sent.tenant, sent.max_tokens, sent.cache) == ("acme", 2, False)
    assert [m.role for m in sent.messages] == ["system", "user"] and sent.messages[1].content == "hi"
    assert sent.metadata == {"team": "x", "feature": "support", "route": "local-small"}
    assert sent.session.startswith("req-")  # no session named: one per request
    assert reply.choices[0].finish_reason == "length" and reply.usage and reply.usage.total_tokens == 7
