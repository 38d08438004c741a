"""The local tier stage with real SmolLM2 inference (llama.cpp), and with an injected model failure."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

import orjson
import pytest

from schemas.records import Job, Message, Request, dumps
from streams.settings import Settings
from streams.stages.local_tier import LocalTierStage
from streams.stages.outgoing import Source
from workers.errors import ModelCrashed, ModelError
from workers.local.factory import build_pool
from workers.local.pool import ModelPool
from workers.ports import Completion

SETTINGS = Settings(topic_prefix="sx", local_threads=1, local_concurrency=1)  # one instance
SRC = Source("sx.tier.local", 0, 7)


def _job(prompt: str, max_tokens: int = 8, reply_to: str | None = None) -> bytes:
    request = Request(id="r1", tenant="acme", session="s", prompt=prompt, max_tokens=max_tokens, reply_to=reply_to)
    return dumps(Job(request=request, tier="local", key="k", route={"tier": "local", "reason": "default"}))


@pytest.fixture(scope="module")
def smollm_pool() -> ModelPool:
    return build_pool(SETTINGS)


async def test_real_completion_from_smollm2(smollm_pool: ModelPool) -> None:
    stage = LocalTierStage(SETTINGS, smollm_pool)
    outs = await stage.handle(_job("What is the capital of France?", reply_to="svc.inbox"), SRC)
    assert [o.topic for o in outs] == ["sx.results", "sx.decisions"]
    assert outs[0].key == b"k" and outs[1].key == b"r1"
    result = orjson.loads(outs[0].value)
    decided = orjson.loads(outs[1].value)
    assert (decided["stage"], decided["verdict"], decided["data"]["served"]) == ("local", "ok", "local")
    assert decided["data"]["usage"] == [
        result["response"]["usage"]["prompt_tokens"],
        result["response"]["usage"]["completion_tokens"],
    ]
    assert result["job"]["request"]["reply_to"] == "svc.inbox"
    response = result["response"]
    assert response["status"] == "ok" and response["tier"] == "local"
    assert response["model"] == "SmolLM2-135M-Instruct-Q4_1"
    assert response["text"].strip()
    assert 1 <= response["usage"]["completion_tokens"] <= 8
    assert response["route"]["generation_ms"] > 0


async def test_generation_runs_off_the_event_loop(smollm_pool: ModelPool) -> None:
    """A ticker keeps ticking while the model generates: inference never blocks the loop."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await smollm_pool.generate([Message("user", "Write a long story about a dragon.")], 48)
    elapsed = time.monotonic() - started
    task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert elapsed > 0.05
    assert len(ticks) >= 3 and max(gaps) < max(0.25, elapsed / 2)


class FailingModel:
    """Fault injection: a model that crashes ``crashes`` times, then fails for good or answers."""

    name = "failing"

    def __init__(self, crashes: int, then_error: bool) -> None:
        self.crashes, self.then_error, self.calls = crashes, then_error, 0

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion:
        self.calls += 1
        if self.calls <= self.crashes:
            raise ModelCrashed("child died")
        if self.then_error:
            raise ModelError("context window exceeded")
        return Completion("recovered", 3, 1, self.name)

    def close(self) -> None:
        pass


async def test_model_failure_becomes_an_error_response() -> None:
    stage = LocalTierStage(SETTINGS, ModelPool(lambda: FailingModel(0, then_error=True)))
    [out, decided] = await stage.handle(_job("hi"), SRC)
    response = orjson.loads(out.value)["response"]
    assert response["status"] == "error" and "context window exceeded" in response["reason"]
    record = orjson.loads(decided.value)
    assert record["verdict"] == "error" and "context window exceeded" in record["reason"]
    assert stage.counts["error"] == 1


async def test_a_crashed_model_is_retried_once() -> None:
    model = FailingModel(1, then_error=False)
    stage = LocalTierStage(SETTINGS, ModelPool(lambda: model))
    [out, _] = await stage.handle(_job("hi"), SRC)
    assert orjson.loads(out.value)["response"]["text"] == "recovered" and model.calls == 2


async def test_malformed_job_is_dead_lettered() -> None:
    stage = LocalTierStage(SETTINGS, ModelPool(lambda: FailingModel(0, then_error=False)))
    [out] = await stage.handle(b'{"v": 1}', SRC)
    assert out.topic == "sx.deadletter"
    assert orjson.loads(out.value)["source_topic"] == "sx.tier.local"


async def test_interactive_calls_overtake_a_batch_backlog(smollm_pool: ModelPool) -> None:
    """Six batch generations are queued on one instance; an interactive call arriving after them waits for the
    generation in progress only."""
    order: list[str] = []

    async def call(name: str, priority: str) -> None:
        await smollm_pool.generate([Message("user", f"Write a line about {name}.")], 12, priority=priority)
        order.append(name)

    batch = [asyncio.create_task(call(f"batch{i}", "batch")) for i in range(6)]
    await asyncio.sleep(0.05)  # the first batch call is generating, five are queued
    await call("interactive", "interactive")
    await asyncio.gather(*batch)
    assert order.index("interactive") <= 1, order
    assert len(order) == 7
