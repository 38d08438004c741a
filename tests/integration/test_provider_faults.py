"""A cloud provider failing with 500s, 429s (Retry-After) and timeouts, through the real pipeline: calls are
retried, the provider's breaker opens, the fallback provider answers, no request is lost or answered twice,
and sluice.usage totals equal the sums over the delivered responses exactly (cost, tokens and paid calls).

Both providers are the loopback simulator (tests/fixtures/provider_sim.py): real HTTP, scripted faults.
Requests go one at a time while the script matters (the breaker opens after 5 consecutive failed links), then
a concurrent burst runs while it is open.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from schemas.records import Response
from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.tiers import PriceTable
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim, Reply
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration

FALLBACK_MODEL = "claude-3-haiku-20240307"
BURST = 24


def _tiers(path: Path, sim: ProviderSim) -> Path:
    write_tiers(path, knob=1.01, openai_base_url=sim.openai_base_url)  # everything to the cloud tier
    doc = yaml.safe_load(path.read_text())
    doc["providers"]["anthropic"] = {
        "kind": "anthropic",
        "base_url": sim.anthropic_base_url,
        "api_key_env": "SLUICE_TEST_ANTHROPIC_KEY",
    }
    doc["fallback"] = [{"provider": "openai", "model": "gpt-4o"}, {"provider": "anthropic", "model": FALLBACK_MODEL}]
    doc["retry"] = {"timeout_s": 1.0, "max_attempts": 3}
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_provider_faults_retry_open_the_breaker_fall_back_and_meter_exactly(
    settings: Settings, tmp_path: Path
) -> None:
    await create_topics(settings)
    answers: list[Response] = []
    async with ProviderSim() as sim:
        env = {
            "SLUICE_TIERS_FILE": str(_tiers(tmp_path / "tiers-faults.yaml", sim)),
            "SLUICE_TEST_OPENAI_KEY": "sk-openai-faults",
            "SLUICE_TEST_ANTHROPIC_KEY": "sk-anthropic-faults",
            "SLUICE_BREAKER_ENABLED": "false",  # the session breaker is not under test here
        }
        worker = start_worker(settings, tmp_path, "admit", "cache", "cloud", "meter", name="faults", env=env)
        try:
            async with SluiceClient(settings) as client:
                n = 0

                async def ask(*script: Reply) -> Response:
                    nonlocal n
                    n += 1
                    sim.script("openai", *script)
                    request = make_request(f"Fault question {n}?", tenant="acme", session=f"f{n}", max_tokens=16)
                    answer = await client.submit(request, 120)
                    answers.append(answer)
                    return answer

                # Retries that end well on the primary: 429 (Retry-After: 0) then 500 then OK; a timeout then OK.
                retried = await ask(Reply(status=429, retry_after="0"), Reply(status=500), Reply())
                timed_out_once = await ask(Reply(hang=True), Reply())
                # Five requests whose primary fails for good: each falls back; the fifth opens the breaker.
                failures = [
                    [Reply(status=500)] * 3,
                    [Reply(status=429, retry_after="0")] * 3,
                    [Reply(hang=True), Reply(status=500), Reply(status=503)],
                    [Reply(status=500)] * 3,
                    [Reply(status=502), Reply(status=429, retry_after="0"), Reply(status=500)],
                ]
                fell_back = [await ask(*script) for script in failures]
                primary_calls = len(sim.seen("openai"))
                skipped = await ask()  # breaker open: the primary is not even called
                calls_after_open = len(sim.seen("openai"))
                burst = [
                    await client.send(make_request(f"Burst {i}?", tenant="acme", session=f"b{i}", max_tokens=16))
                    for i in range(BURST)
                ]
                answers += await asyncio.wait_for(asyncio.gather(*burst), 120)
                ids = {a.id for a in answers}
                usage = await _read_exactly(settings, "usage", len(ids))
                responses = await _read_exactly(settings, "responses", len(ids))
        finally:
            worker.stop()
        upstream_calls = len(sim.requests)

    assert retried.status == "ok" and retried.tier == "cloud" and retried.model == "gpt-4o", worker.tail()
    assert retried.route["attempts"] == 3 and retried.route["chain"] == ["openai:gpt-4o ok x3"]
    assert timed_out_once.status == "ok" and timed_out_once.route["attempts"] == 2
    for answer, code in zip(fell_back, ("500", "429", "503", "500", "500"), strict=True):  # the last error
        assert answer.status == "ok" and answer.route["fallback"] is True, answer.route
        assert answer.route["chain"][0].startswith(f"openai:gpt-4o failed {code}x3"), answer.route["chain"]
        assert answer.route["chain"][1] == f"anthropic:{FALLBACK_MODEL} ok" and answer.model == FALLBACK_MODEL
        assert answer.route["attempts"] == 4  # three paid attempts at the primary, one at the fallback
    assert skipped.route["chain"] == ["openai:gpt-4o skipped breaker_open", f"anthropic:{FALLBACK_MODEL} ok"]
    assert calls_after_open == primary_calls == 3 + 2 + 5 * 3  # nothing reached the primary once it opened
    assert all(a.status == "ok" and a.model == FALLBACK_MODEL for a in answers[-BURST:])

    # Nothing lost, nothing twice: one final response and one usage record per request id.
    assert Counter(r["id"] for r in responses) == Counter(ids) and len(ids) == len(answers)
    assert Counter(u["id"] for u in usage) == Counter(ids)
    by_id = {a.id: a for a in answers}
    prices = PriceTable.load()
    for u in usage:
        a = by_id[u["id"]]
        assert (u["cost_usd"], u["prompt_tokens"], u["completion_tokens"]) == (
            a.cost_usd,
            a.usage.prompt_tokens,
            a.usage.completion_tokens,
        )
        assert u["attempts"] == a.route["attempts"] and u["model"] == a.model
        assert a.cost_usd == pytest.approx(prices.cost_usd(a.model, a.usage.prompt_tokens, a.usage.completion_tokens))
    assert math.fsum(u["cost_usd"] for u in usage) == math.fsum(a.cost_usd for a in answers) > 0
    assert sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage) == sum(a.usage.total_tokens for a in answers)
    # Paid calls are metered honestly: every HTTP call the providers saw is one counted attempt.
    assert sum(u["attempts"] for u in usage) == upstream_calls


async def _read_exactly(settings: Settings, name: str, n: int) -> list[dict]:
    records = await read_topic(settings, settings.topic(name), until=n, timeout_s=90)
    assert len(records) == n, f"{name}: {len(records)} records, expected {n}"
    again = await read_topic(settings, settings.topic(name), until=n + 1, timeout_s=5)
    assert len(again) == n, f"{name}: {len(again)} records, expected exactly {n}"
    return records
