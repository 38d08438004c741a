"""The cache on the genuine broker: exact hits, verified semantic hits, coalescing of identical requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


async def test_exact_semantic_and_coalesced_answers(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    worker = start_worker(settings, tmp_path)
    try:
        async with SluiceClient(settings) as client:
            first = await client.submit(make_request("How do I reset my password?", tenant="acme", session="a"), 180)
            again = await client.submit(make_request("How do I reset my password?", tenant="acme", session="b"), 60)
            paraphrase = await client.submit(
                make_request("How can I reset my password?", tenant="acme", session="c"), 60
            )
            other_tenant = await client.submit(
                make_request("How do I reset my password?", tenant="globex", session="d"), 180
            )
            burst = [make_request("Write a haiku about rivers.", tenant="acme", session=f"h{i}") for i in range(6)]
            futures = [await client.send(r) for r in burst]
            answers = await asyncio.wait_for(asyncio.gather(*futures), 180)
    finally:
        worker.stop()
    assert first.status == "ok" and first.tier == "local", worker.tail()
    assert again.tier == "cache" and again.route["cache"]["kind"] == "exact" and again.text == first.text
    assert again.route["cache"]["source_id"] == first.id and again.cost_usd == 0.0
    # One all-roles worker owns every cache partition, so admit answers the exact hit itself (one hop less).
    assert again.route["cache"].get("via") == "admit"
    assert paraphrase.tier == "cache" and paraphrase.route["cache"]["kind"] == "semantic"
    assert paraphrase.route["cache"]["verifier_score"] >= paraphrase.route["cache"]["threshold"]
    assert other_tenant.tier == "local"  # never another tenant's answer
    assert sorted(a.id for a in answers) == sorted(r.id for r in burst)
    tiers = sorted(a.tier for a in answers)
    assert tiers.count("local") == 1, tiers  # one generation for six identical requests
    kinds = {a.route.get("cache", {}).get("kind") for a in answers if a.tier == "cache"}
    assert kinds <= {"coalesced", "exact"} and len({a.text for a in answers}) == 1


async def test_purge_drops_a_tenants_entries_in_every_cache_process(settings: Settings, tmp_path: Path) -> None:
    from streams.cache_admin import request_purge

    await create_topics(settings)
    worker = start_worker(settings, tmp_path, "admit", "cache", "local", name="purge")
    try:
        async with SluiceClient(settings) as client:

            async def ask(tenant: str, session: str) -> str:
                reply = await client.submit(make_request("What is a haiku?", tenant=tenant, session=session), 180)
                assert reply.status == "ok", worker.tail()
                return reply.tier

            assert [await ask("acme", "p1"), await ask("globex", "p2")] == ["local", "local"]
            assert [await ask("acme", "p3"), await ask("globex", "p4")] == ["cache", "cache"]
            command, partitions = await request_purge(settings, "acme")
            assert command.tenant == "acme" and command.older_than_ms is None
            assert partitions == settings.partitions
            await asyncio.sleep(2.0)  # the command is consumed like any lookup message
            # acme's entry is gone (exact and semantic); globex's is untouched.
            assert [await ask("acme", "p5"), await ask("globex", "p6")] == ["local", "cache"]
    finally:
        worker.stop()
