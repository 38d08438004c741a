"""SLUICE_SINGLE_GROUP: one Faust app (one consumer group) for all the roles of a worker process.

The mode must work end to end (tiers, cache, metering), keep the per-role changelog topics (state survives a
switch of mode), and refuse to run beside a worker of the other mode, which would read the same requests."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.one_group import live_groups
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration

SINGLE = {"SLUICE_SINGLE_GROUP": "true"}


async def test_single_group_worker_answers_meters_and_refuses_mixed_modes(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    # A session budget makes the admit stage's rows durable (in its table; otherwise they live in memory).
    worker = start_worker(settings, tmp_path, env={**SINGLE, "SLUICE_SESSION_BUDGET_HARD_USD": "100"}, name="single")
    try:
        async with SluiceClient(settings) as client:
            prompts = [f"Name a fruit, number {i}" for i in range(3)]
            first = [make_request(p, tenant="acme", session=f"a{i}", max_tokens=4) for i, p in enumerate(prompts)]
            answered = await asyncio.wait_for(asyncio.gather(*[client.submit(r) for r in first]), 240)
            assert [r.status for r in answered] == ["ok"] * 3, worker.tail()
            assert {r.tier for r in answered} == {"local"}
            again = [make_request(p, tenant="acme", session=f"b{i}", max_tokens=4) for i, p in enumerate(prompts)]
            hits = await asyncio.wait_for(asyncio.gather(*[client.submit(r) for r in again]), 120)
            assert [(r.status, r.tier) for r in hits] == [("ok", "cache")] * 3, worker.tail()
            assert [r.text for r in hits] == [r.text for r in answered]

        ids = {r.id for r in first + again}
        usage = await read_topic(settings, settings.topic("usage"), until=6, timeout_s=60, distinct_ids=True)
        assert {u["id"] for u in usage} == ids
        # Tables write to the changelogs their per-role apps use (streams/topics.py creates only those).
        sessions = await read_topic(settings, f"{settings.topic_prefix}-admit-sessions-changelog", until=6)
        assert len(sessions) >= 6
        exact = await read_topic(settings, f"{settings.topic_prefix}-cache-exact-changelog", until=3)
        assert len(exact) >= 3
        # One group for every role, and no per-role group.
        single = replace(settings, single_group=True)
        assert await live_groups(single, [single.group("admit")]) == [f"{settings.topic_prefix}-worker"]
        assert await live_groups(settings, [settings.group(role) for role in ("admit", "meter")]) == []

        # A per-role worker on the same topics would process every request a second time: it must not start.
        mixed = start_worker(settings, tmp_path, "admit", name="per-role")
        try:
            code = await asyncio.to_thread(mixed.proc.wait, 120)
        finally:
            mixed.stop()
        assert code != 0
        assert "SLUICE_SINGLE_GROUP" in mixed.tail(80) and f"{settings.topic_prefix}-worker" in mixed.tail(80)
    finally:
        worker.stop()
