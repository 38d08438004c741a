"""The ingress's server-sent events against the ``openai`` SDK on loopback, with a stand-in Sluice client (the
pipeline itself streams in tests/integration/test_streaming.py): the chunk shapes, usage only when asked for,
rejections before any text as ordinary HTTP errors, and a cancel when the HTTP client goes away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web

from schemas.records import Request, Response, Usage
from schemas.streaming import Chunk
from streams.ingress.keys import KeyMap
from streams.ingress.server import create_app
from streams.settings import Settings

KEY = "sk-acme-test-0001"


class FakeStream:
    """Stands in for streams.streaming_client.ReplyStream: ``pieces`` ``gap_s`` apart, then ``final``."""

    def __init__(self, owner: FakeStreamClient, request: Request) -> None:
        self.owner, self.request = owner, request
        self.response: Response | None = None
        self.left = list(owner.pieces)
        self.seq = 0

    async def open(self) -> None:
        self.owner.seen.append(self.request)

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Chunk:
        await asyncio.sleep(self.owner.gap_s)
        if self.left:
            self.seq += 1
            return Chunk(self.request.id, self.seq - 1, self.left.pop(0))
        self.response = self.owner.final(self.request)
        raise StopAsyncIteration

    async def aclose(self) -> None:  # idempotent, like ReplyStream.aclose
        if self.response is None and self.request.id not in self.owner.cancelled:
            self.owner.cancelled.append(self.request.id)


class FakeStreamClient:
    def __init__(self, pieces: list[str], status: str = "ok", gap_s: float = 0.0) -> None:
        self.pieces, self.status, self.gap_s = pieces, status, gap_s
        self.seen: list[Request] = []
        self.cancelled: list[str] = []

    def final(self, r: Request) -> Response:
        if self.status != "ok":
            return Response(r.id, r.tenant, r.session, self.status, reason="budget")
        return Response(r.id, r.tenant, r.session, "ok", "".join(self.pieces), "local", "m", Usage(7, 3), 0.25)

    def stream(self, request: Request, timeout: float | None = None) -> FakeStream:
        return FakeStream(self, request)

    async def submit(self, request: Request, timeout: float | None = None) -> Response:
        raise AssertionError("a streamed request must not be submitted whole")


async def _serve(tmp: Path, client: FakeStreamClient) -> tuple[web.AppRunner, str]:
    path = tmp / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": {KEY: {"tenant": "acme"}}}))
    app = create_app(Settings(), KeyMap(path), client=client, feeds=False)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _sdk(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=30.0)


@pytest.mark.parametrize("usage", [True, False])
async def test_chunks_in_openai_shape(tmp_path: Path, usage: bool) -> None:
    fake = FakeStreamClient(["Hel", "lo", "!"])
    runner, base = await _serve(tmp_path, fake)
    try:
        options: Any = {"stream_options": {"include_usage": True}} if usage else {}
        stream = await _sdk(base).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, **options
        )
        events = [e async for e in stream]
    finally:
        await runner.cleanup()
    assert fake.seen[0].stream is True and fake.seen[0].max_tokens == 3
    assert {e.id for e in events} == {f"chatcmpl-{fake.seen[0].id}"}
    assert events[0].choices[0].delta.role == "assistant"
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == "Hello!"
    [finish] = [e for e in events if e.choices and e.choices[0].finish_reason]
    assert finish.choices[0].finish_reason == "length"  # 3 tokens of max_tokens=3
    assert (finish.model_extra or {})["sluice"]["cost_usd"] == 0.25
    usages = [e.usage for e in events if e.usage is not None]
    if usage:
        assert events[-1].choices == [] and usages[0].total_tokens == 10 and usages[0].completion_tokens == 3
    else:
        assert usages == []


async def test_a_rejection_before_any_text_is_an_http_error(tmp_path: Path) -> None:
    runner, base = await _serve(tmp_path, FakeStreamClient([], status="rejected"))
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            stream = await _sdk(base).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            [e async for e in stream]
    finally:
        await runner.cleanup()
    assert caught.value.status_code == 402


async def test_a_client_that_goes_away_is_cancelled(tmp_path: Path) -> None:
    fake = FakeStreamClient([f"w{i} " for i in range(1000)], gap_s=0.02)
    runner, base = await _serve(tmp_path, fake)
    try:
        async with aiohttp.ClientSession() as http:
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
            resp = await http.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
            async for line in resp.content:
                if b"w2 " in line:
                    break
            resp.close()
        for _ in range(100):
            if fake.cancelled:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert fake.cancelled == [fake.seen[0].id]
