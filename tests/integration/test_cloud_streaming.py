"""Streamed cloud replies on the genuine broker, against the provider simulator's server-sent events on loopback:
chunks in order through ``SluiceClient.stream``, the same usage and (non-zero) price as a non-streamed call in
``sluice.usage``, and a client that leaves mid-stream making the cloud worker hang up on the provider."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim, Reply
from tests.integration.procs import start_worker
from tests.integration.test_streaming import usage_of
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration

TEXT = "alpha beta gamma delta epsilon zeta"


async def test_cloud_streams_are_metered_like_plain_calls_and_cancel_upstream(
    settings: Settings, tmp_path: Path
) -> None:
    await create_topics(settings)
    async with ProviderSim() as sim:
        tiers = write_tiers(tmp_path / "tiers-cloud.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
        env = {"SLUICE_TIERS_FILE": str(tiers), "SLUICE_TEST_OPENAI_KEY": "sk-test-1"}
        worker = start_worker(settings, tmp_path, "admit", "cache", "cloud", "meter", env=env)
        try:
            async with SluiceClient(settings) as client:
                request = make_request("Prove that there are infinitely many primes.", tenant="acme", session="c1")
                request = replace(request, cache=False)
                sim.script("openai", Reply(text=TEXT, chunk_delay_s=0.02), Reply(text=TEXT))
                streamed = client.stream(request, 180)
                chunks = [c async for c in streamed]
                plain = await client.submit(replace(request, id=request.id + "-plain"), 120)

                words = " ".join(f"w{i}" for i in range(400))
                sim.script("openai", Reply(text=words, chunk_delay_s=0.05))
                leaving = client.stream(make_request("Tell me everything.", tenant="acme", session="c2"), 120)
                async with leaving:
                    async for chunk in leaving:
                        if chunk.seq == 2:
                            break  # leaving the block publishes the cancel
            billed = await usage_of(settings, {request.id, plain.id, leaving.id})
        finally:
            worker.stop()
    s = streamed.response
    assert s is not None and s.status == "ok" and s.tier == "cloud", worker.tail()
    assert [c.seq for c in chunks] == list(range(len(TEXT.split()))) and "".join(c.text for c in chunks) == TEXT
    assert (s.usage, s.cost_usd, s.model) == (plain.usage, plain.cost_usd, plain.model) and s.cost_usd > 0
    fields = ("prompt_tokens", "completion_tokens", "cost_usd", "tier", "model", "status")
    assert {f: billed[request.id][f] for f in fields} == {f: billed[plain.id][f] for f in fields}
    gone = billed[leaving.id]
    assert gone["status"] == "cancelled" and 3 <= gone["completion_tokens"] < 100 and gone["cost_usd"] > 0
    assert sim.streams_abandoned >= 1 and sim.deltas_sent < 150  # the worker hung up on the provider
