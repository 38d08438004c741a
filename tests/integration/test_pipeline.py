"""Request → admit → sluice.tier.local → SmolLM2 (llama.cpp) → sluice.responses, on a genuine broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import TOPICS, create_topics, list_topics, partition_counts
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


async def test_topics_created_explicitly_with_configured_partitions(settings: Settings) -> None:
    created = await create_topics(settings)
    assert sorted(created) == sorted(t.full_name(settings) for t in TOPICS)
    assert await create_topics(settings) == []  # idempotent
    names = [t.full_name(settings) for t in TOPICS]
    assert await partition_counts(settings, names) == dict.fromkeys(names, settings.partitions)
    assert {t.full_name(settings) for t in TOPICS} <= await list_topics(settings)


async def test_prompts_get_real_completions_through_kafka(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    worker = start_worker(settings, tmp_path)
    try:
        async with SluiceClient(settings) as client:
            requests = [
                make_request("What is the capital of France?", tenant="acme", session="s1", max_tokens=16),
                make_request(
                    None,
                    tenant="acme",
                    session="s2",
                    messages=[
                        {"role": "system", "content": "You are terse."},
                        {"role": "user", "content": "Name a colour."},
                    ],
                    max_tokens=8,
                    metadata={"feature": "demo"},
                ),
            ]
            futures = [await client.send(r) for r in requests]
            responses = await asyncio.wait_for(asyncio.gather(*futures), 120)
    finally:
        worker.stop()
    for request, response in zip(requests, responses, strict=True):
        assert response.id == request.id
        assert response.status == "ok", (response.reason, worker.tail())
        assert response.tier == "local"
        assert response.model == "SmolLM2-135M-Instruct-Q4_1"
        assert response.text.strip()
        assert 0 < response.usage.completion_tokens <= request.max_tokens
        assert response.usage.prompt_tokens > 5  # chat template applied around the prompt
        assert response.route["tier"] == "local-small" and response.route["kind"] == "local"
        assert response.latency_ms > 0


async def test_reply_to_topic_receives_the_response(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    from streams.topics import TopicSpec

    inbox = TopicSpec("inbox.svc-a", "request id", "a service's own reply topic")
    await create_topics(settings, (inbox,))
    worker = start_worker(settings, tmp_path)
    try:
        async with SluiceClient(settings) as client:
            request = make_request(
                "Say hi", tenant="acme", session="s3", max_tokens=4, reply_to=settings.topic("inbox.svc-a")
            )
            response = await client.submit(request, timeout=120)
            unknown = make_request("Say hi", tenant="acme", session="s3", max_tokens=4, reply_to="no.such.topic")
            rejected = await client.submit(unknown, timeout=60)
    finally:
        worker.stop()
    assert response.status == "ok"
    delivered = await read_topic(settings, settings.topic("inbox.svc-a"), until=1, timeout_s=20)
    assert [d["id"] for d in delivered] == [request.id]
    assert delivered[0]["text"] == response.text
    assert rejected.status == "rejected" and rejected.reason == "unknown_reply_to"


async def test_cli_creates_topics_and_submit_prints_a_real_reply(settings: Settings, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import settings_env

    env = settings_env(settings)
    cli = [sys.executable, "-m", "streams.cli"]
    created = await asyncio.to_thread(
        subprocess.run, [*cli, "topics", "create"], env=env, capture_output=True, text=True, timeout=60
    )
    assert created.returncode == 0 and settings.topic("requests") in created.stdout
    worker = start_worker(settings, tmp_path)
    try:
        submit = await asyncio.to_thread(
            subprocess.run,
            [*cli, "submit", "Name a fruit.", "--tenant", "acme", "--session", "cli", "--max-tokens", "8", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
    finally:
        worker.stop()
    assert submit.returncode == 0, submit.stderr + worker.tail()
    import orjson

    reply = orjson.loads(submit.stdout.strip().splitlines()[-1])
    assert reply["status"] == "ok" and reply["text"].strip() and reply["tier"] == "local"
