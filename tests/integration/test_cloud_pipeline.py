"""The cloud tier on the genuine broker, against a real HTTP provider simulator on loopback: priced answers,
retries, and the fallback chain ending at the local model when the provider keeps failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.tiers import PriceTable
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim, Reply
from tests.integration.procs import start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration


async def test_cloud_answers_are_priced_and_failures_fall_back_to_local(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    async with ProviderSim(expected_key="sk-test-123") as sim:
        tiers = write_tiers(tmp_path / "tiers-cloud.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
        env = {"SLUICE_TIERS_FILE": str(tiers), "SLUICE_TEST_OPENAI_KEY": "sk-test-123"}
        worker = start_worker(settings, tmp_path, env=env)
        try:
            async with SluiceClient(settings) as client:
                ok = await client.submit(
                    make_request("Prove that there are infinitely many primes.", tenant="acme", session="c1"), 180
                )
                sim.script("openai", Reply(status=429, retry_after="0"), Reply(status=200, text="retried fine"))
                retried = await client.submit(make_request("Explain quicksort.", tenant="acme", session="c2"), 120)
                sim.script("openai", *[Reply(status=500)] * 3)
                fallback = await client.submit(
                    make_request("Summarise War and Peace.", tenant="acme", session="c3", max_tokens=8), 180
                )
        finally:
            worker.stop()
    assert ok.status == "ok" and ok.tier == "cloud", worker.tail()
    assert ok.text == "hello from the simulator" and ok.model == "gpt-4o"
    assert ok.route["reason"] == "classifier" and ok.route["tier"] == "cloud-frontier"
    expected = PriceTable.load().cost_usd("gpt-4o", ok.usage.prompt_tokens, ok.usage.completion_tokens)
    assert ok.cost_usd == pytest.approx(expected) and ok.cost_usd > 0
    assert retried.text == "retried fine" and retried.route["attempts"] == 2
    assert fallback.status == "ok" and fallback.tier == "local" and fallback.route["fallback"] is True
    assert fallback.route["chain"][0].startswith("openai:gpt-4o failed 500")
    seen = sim.seen("openai")
    assert all(r.headers["authorization"] == "Bearer sk-test-123" for r in seen)
    assert "sk-test-123" not in worker.log.read_text()  # keys never reach the logs


async def test_interactive_requests_spill_to_the_cloud_when_the_local_queue_is_long(
    settings: Settings, tmp_path: Path
) -> None:
    await create_topics(settings)
    async with ProviderSim() as sim:
        tiers = write_tiers(tmp_path / "tiers-spill.yaml", knob=0.0, openai_base_url=sim.openai_base_url)
        env = {"SLUICE_TIERS_FILE": str(tiers), "SLUICE_SPILL_BACKLOG": "3", "SLUICE_BREAKER_ENABLED": "false"}
        worker = start_worker(settings, tmp_path, name="spill", env=env)
        try:
            async with SluiceClient(settings) as client:
                await client.submit(make_request("Warm up.", tenant="acme", session="w", max_tokens=4), 180)
                futures = []
                for i in range(24):  # ~6/s: faster than one CPU instance generates 64 tokens
                    batch = i % 4 == 3
                    request = make_request(
                        f"Write a long story number {i}.",
                        tenant="acme",
                        session=f"s{i}",
                        max_tokens=64,
                        priority="batch" if batch else "interactive",
                    )
                    futures.append((batch, await client.send(request)))
                    await asyncio.sleep(0.15)
                answers = [(batch, await asyncio.wait_for(f, 300)) for batch, f in futures]
        finally:
            worker.stop()
    spilled = [a for batch, a in answers if a.route.get("reason") == "spill"]
    assert spilled, [a.route.get("reason") for _, a in answers]
    assert all(a.tier == "cloud" and a.route["tier"] == "cloud-frontier" for a in spilled)
    assert all(a.tier == "local" for batch, a in answers if batch)  # batch waits for the local tier
    assert all(a.status == "ok" for _, a in answers)
