"""Streaming from the local pool with real SmolLM2 inference (llama.cpp): tokens reach the event loop while the
model generates, usage matches the non-streamed call exactly, and a cancel stops generation between tokens."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import orjson
import pytest

from schemas.parse import parse_chunk
from schemas.records import Job, Message, Request, dumps
from streams.cancels import CancelRegistry
from streams.settings import Settings
from streams.stages.local_tier import LocalTierStage
from streams.stages.outgoing import Outgoing, Source
from streams.stages.streaming import StreamingLocalStage
from workers.local.factory import build_pool
from workers.local.pool import ModelPool
from workers.ports import Completion

SETTINGS = Settings(topic_prefix="sx", local_threads=1, local_concurrency=1)  # one instance
SRC = Source("sx.tier.local", 0, 1)
PROMPTS = [
    ([Message("user", "What is the capital of France?")], 40),  # SmolLM2 stops on its own (finish: stop)
    ([Message("system", "Be verbose."), Message("user", "Write a long story about a dragon.")], 12),  # length
]


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return build_pool(SETTINGS)


@pytest.mark.parametrize(("messages", "max_tokens"), PROMPTS)
async def test_streamed_text_and_usage_equal_the_plain_call(
    pool: ModelPool, messages: list[Message], max_tokens: int
) -> None:
    await pool.generate(messages, max_tokens)  # warm: llama.cpp's first run of a prompt (no KV prefix reuse)
    plain = await pool.generate(messages, max_tokens)  # can differ numerically from later runs, streamed or not
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    streamed = await pool.stream(messages, max_tokens, on_text)
    assert "".join(pieces) == streamed.text == plain.text
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (plain.prompt_tokens, plain.completion_tokens)
    assert streamed.prompt_tokens > 0 and streamed.completion_tokens > 0
    assert streamed.finish_reason == plain.finish_reason


async def test_tokens_are_handed_over_while_generating(pool: ModelPool) -> None:
    """Pieces that pile up while the consumer is busy are sent together; if text only came after the model
    finished there would be a single call. Several calls, each while the instance is still busy, show the
    tokens crossed from the executor thread during generation."""
    calls: list[tuple[str, int]] = []

    async def on_text(text: str) -> None:
        calls.append((text, pool.in_use))

    done = await pool.stream([Message("user", "Write a long story about a dragon.")], 24, on_text)
    assert len(calls) >= 3, calls
    assert all(busy == 1 for _, busy in calls)
    assert done.completion_tokens >= len(calls)


async def test_a_cancel_stops_generation_within_a_token(pool: ModelPool) -> None:
    cancel = threading.Event()
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.set()

    done = await pool.stream([Message("user", "Write a long story about a dragon.")], 200, on_text, cancel=cancel)
    assert done.finish_reason == "cancelled"
    # The flag is read between tokens; pieces queued while on_text ran may add a few more.
    assert 3 <= done.completion_tokens <= 12, done
    assert done.prompt_tokens > 0


async def test_stream_stage_sends_chunks_then_a_priced_result(pool: ModelPool) -> None:
    stage = LocalTierStage(SETTINGS, pool, price=lambda p, c: (p + 2 * c) / 1e6)
    streaming = StreamingLocalStage(stage, CancelRegistry())
    sent: list[list[Outgoing]] = []

    async def send(messages: list[Outgoing]) -> None:
        sent.append(messages)

    def job(stream: bool) -> bytes:
        request = Request(
            id="r1", tenant="acme", session="s", prompt="Name three colours.", max_tokens=16, stream=stream
        )
        return dumps(Job(request=request, tier="local", key="k", route={"tier": "local"}))

    await stage.handle(job(False), SRC)  # warm (see test_streamed_text_and_usage_equal_the_plain_call)
    sent.clear()
    await streaming.handle(job(True), SRC, send)
    chunk_batches = [b for b in sent if all(o.topic == "sx.chunks" for o in b)]
    chunks = [parse_chunk(o.value) for b in chunk_batches for o in b]
    assert len(chunks) >= 2 and [c.seq for c in chunks] == list(range(len(chunks)))
    [result] = [o for o in sent[-1] if o.topic == "sx.results"]
    streamed = orjson.loads(result.value)["response"]
    assert streamed["status"] == "ok" and "".join(c.text for c in chunks) == streamed["text"]

    plain_out = await stage.handle(job(False), SRC)
    [plain] = [orjson.loads(o.value)["response"] for o in plain_out if o.topic == "sx.results"]
    assert streamed["usage"] == plain["usage"] and streamed["cost_usd"] == plain["cost_usd"] > 0
    assert streamed["text"] == plain["text"]


async def test_a_cancel_that_arrived_first_stops_the_job_at_once(pool: ModelPool) -> None:
    registry = CancelRegistry()
    registry.cancel("r9")  # the consumer left before a worker picked the job up
    stage = LocalTierStage(SETTINGS, pool)
    sent: list[Outgoing] = []

    async def send(messages: list[Outgoing]) -> None:
        sent.extend(messages)

    request = Request(id="r9", tenant="acme", session="s", prompt="Write a long story.", max_tokens=200, stream=True)
    await StreamingLocalStage(stage, registry).handle(dumps(Job(request=request, tier="local", key="k9")), SRC, send)
    [response] = [orjson.loads(o.value)["response"] for o in sent if o.topic == "sx.results"]
    assert response["status"] == "cancelled" and response["reason"] == "cancelled"
    assert response["usage"]["completion_tokens"] <= 2


class OneShotModel:
    """A backend without ``stream`` (e.g. a third-party adapter): its whole answer becomes one chunk."""

    name = "oneshot"

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion:
        return Completion("all at once", 4, 3, self.name)

    def close(self) -> None:
        pass


async def test_a_backend_that_cannot_stream_sends_one_piece() -> None:
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    done = await ModelPool(OneShotModel).stream([Message("user", "hi")], 8, on_text)
    assert pieces == ["all at once"] and done.completion_tokens == 3
