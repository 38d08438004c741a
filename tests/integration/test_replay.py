"""The decision trail and ``sluice replay`` on the genuine broker: requests through the real pipeline (cloud tier
on the loopback provider simulator, real cache), a decision record from every stage per request id, a dry-run
replay under candidate configs that reports the expected differences, and ``--execute`` into a shadow namespace
that leaves every production topic untouched."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.records import now_ms
from streams.client import SluiceClient, make_request
from streams.kafka_clients import stop_consumer
from streams.settings import Settings
from streams.topics import create_topics, list_topics, partition_counts
from tests.conftest import settings_env
from tests.fixtures.provider_sim import ProviderSim
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration
KEY = "sk-test-replay-42"
QUESTIONS = ["Prove that there are infinitely many primes.", "Explain quicksort.", "Name three rivers in Asia."]


async def run_pipeline(settings: Settings, tmp_path: Path, sim: ProviderSim, reply_to: str | None = None) -> dict:
    """Everything to the cloud (knob 1.01): one exact and one semantic hit, three misses for acme in one
    session, one globex request. Returns the responses by id and the time range they were sent in."""
    tiers = write_tiers(tmp_path / "tiers-cloud.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
    env = {"SLUICE_TIERS_FILE": str(tiers), "SLUICE_TEST_OPENAI_KEY": KEY, "SLUICE_BREAKER_ENABLED": "false"}
    worker = start_worker(settings, tmp_path, env=env)
    since = now_ms()
    try:
        async with SluiceClient(settings) as client:

            async def ask(prompt: str, session: str, tenant: str = "acme") -> Any:
                request = make_request(prompt, tenant=tenant, session=session, max_tokens=16)
                if reply_to:
                    request = replace(request, reply_to=reply_to)
                reply = await client.submit(request, 180)
                assert reply.status == "ok", (reply.reason, worker.tail())
                return reply

            replies = [await ask("How do I reset my password?", "p1")]
            replies.append(await ask("How do I reset my password?", "p2"))
            replies.append(await ask("How can I reset my password?", "p3"))
            replies += [await ask(q, "work") for q in QUESTIONS]
            replies.append(await ask("Explain quicksort.", "g1", tenant="globex"))
        await read_topic(settings, settings.topic("usage"), until=len(replies))  # the meter has seen them all
    finally:
        until = now_ms()
        worker.stop()
    return {"replies": {r.id: r for r in replies}, "since": since, "until": until, "env": env, "worker": worker}


async def replay_cli(settings: Settings, env: dict[str, str], *args: str) -> tuple[dict, str]:
    """``sluice replay ... --json`` in a subprocess (asyncio: the simulator keeps serving meanwhile)."""
    full_env = {**settings_env(settings), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        "replay",
        *args,
        "--json",
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 400)
    text = out.decode()
    assert proc.returncode == 0, text
    return orjson.loads(text.strip().splitlines()[-1]), text


def candidate(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


async def test_every_stage_records_its_decision_and_replay_reports_the_differences(
    settings: Settings, tmp_path: Path
) -> None:
    await create_topics(settings)
    async with ProviderSim(expected_key=KEY) as sim:
        run = await run_pipeline(settings, tmp_path, sim)
        replies = run["replies"]
        kinds = [r.route.get("cache", {}).get("kind") or r.tier for r in replies.values()]
        assert kinds == ["cloud", "exact", "semantic", "cloud", "cloud", "cloud", "cloud"], kinds

        raw = await read_topic(settings, settings.topic("decisions"), until=4 * 5 + 3 * 2, timeout_s=60)
        stages: dict[str, set[str]] = {}
        for record in raw:
            stages.setdefault(record["id"], set()).add(record["stage"])
        for rid, reply in replies.items():
            expected = {"admit", "lookup", "meter"} | ({"cloud"} if reply.tier == "cloud" else set())
            assert stages.get(rid) == expected, (rid, stages.get(rid))
        assert KEY not in orjson.dumps(raw).decode()  # the trail never holds the provider key
        final = next(r for r in raw if r["stage"] == "meter" and r["id"] == next(iter(replies)))
        assert final["data"]["cost_usd"] == pytest.approx(next(iter(replies.values())).cost_usd)

        window = ["--since", str(run["since"]), "--until", str(run["until"]), "--tenant", "acme"]
        # 1. Nothing changed: the candidate reproduces what happened.
        same, _ = await replay_cli(settings, run["env"], *window, "--config", candidate(tmp_path, "same.yaml", {}))
        assert same["actual"] == same["candidate"] and same["changed"] == 0
        actual = same["actual"]
        assert actual["requests"] == 6 and actual["tier_shares"] == {"cache": 0.3333, "cloud": 0.6667}
        assert actual["cache_hits"] == {"exact": 1, "semantic": 1}
        acme_cost = sum(r.cost_usd for r in replies.values() if r.tenant == "acme")
        assert actual["cost_usd"] == pytest.approx(acme_cost) and acme_cost > 0

        # 2. Knob 0: every miss stays on the free local tier (tokens from the log, no model called).
        calls = len(sim.seen("openai"))
        local, text = await replay_cli(
            settings, run["env"], *window, "--config", candidate(tmp_path, "knob.yaml", {"router": {"knob": 0.0}})
        )
        assert len(sim.seen("openai")) == calls  # a dry run calls no model
        assert local["candidate"]["tier_shares"] == {"cache": 0.3333, "local": 0.6667}
        assert local["candidate"]["cost_usd"] == 0.0 and local["changed"] == 4
        assert all("route cloud-frontier → local-small" in s["why"][0] for s in local["sample"]), text
        assert "cost per 1,000 requests" in text

        # 3. A stricter verifier threshold loses the semantic hit, which is then priced on the tier it came from.
        strict = {"cache": {"threshold": 1.01}}
        tight, _ = await replay_cli(
            settings, run["env"], *window, "--config", candidate(tmp_path, "strict.yaml", strict)
        )
        assert tight["candidate"]["cache_hits"] == {"exact": 1} and tight["changed"] == 1
        assert tight["candidate"]["tier_shares"] == {"cache": 0.1667, "cloud": 0.8333}
        assert tight["candidate"]["cost_usd"] > actual["cost_usd"]
        [changed] = tight["sample"]
        assert changed["why"][0].startswith("semantic → miss") and "threshold 1.01" in changed["why"][0]

        # 4. A session budget below one worst-case reservation rejects every request.
        broke = {"budgets": {"session_hard_usd": 1e-7}}
        poor, _ = await replay_cli(settings, run["env"], *window, "--config", candidate(tmp_path, "poor.yaml", broke))
        assert poor["candidate"]["rejected_by_reason"] == {"budget": 6} and poor["newly_rejected"] == 6
        assert poor["candidate"]["cost_usd"] == 0.0 and poor["actual"]["rejected"] == 0


async def end_offsets(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        counts = await partition_counts(settings, topics)
        tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        ends = await consumer.end_offsets(tps)
        return {t: [ends[TopicPartition(t, p)] for p in range(counts[t])] for t in topics}
    finally:
        await stop_consumer(consumer)


async def test_execute_runs_a_shadow_that_touches_no_production_state(settings: Settings, tmp_path: Path) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    await create_topics(settings)
    inbox = f"inbox-{settings.topic_prefix}"  # a requester's own reply_to topic
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(inbox, 1, 1)])
    finally:
        await admin.close()
    async with ProviderSim(expected_key=KEY) as sim:
        run = await run_pipeline(settings, tmp_path, sim, reply_to=inbox)
        production = sorted(t for t in await list_topics(settings) if t.startswith(settings.topic_prefix) or t == inbox)
        before = await end_offsets(settings, production)
        vectors = Path(settings.data_dir) / "vectors" / settings.topic_prefix
        vector_files = sorted((p.name, p.stat().st_size) for p in vectors.rglob("*") if p.is_file())
        calls = len(sim.seen("openai"))

        window = ["--since", str(run["since"]), "--until", str(run["until"])]
        cand = candidate(tmp_path, "shadow.yaml", {"cache": {"threshold": 0.99}})
        report, text = await replay_cli(
            settings, run["env"], *window, "--config", cand, "--execute", "--keep-shadow", "--shadow-id", "x1"
        )
    shadow = f"{settings.topic_prefix}-shadow-x1"
    assert report["mode"] == "execute" and report["shadow_prefix"] == shadow, text
    assert "7 of 7 requests answered" in text
    # The shadow really ran: its own cache (no answers from production's), its own provider calls and meter.
    assert len(sim.seen("openai")) > calls
    responses = await read_topic(settings, f"{shadow}.responses", until=7)
    assert sorted(r["id"] for r in responses) == sorted(run["replies"])
    shadow_usage = await read_topic(settings, f"{shadow}.usage", until=7)
    assert len({u["id"] for u in shadow_usage}) == 7
    assert report["candidate"]["requests"] == 7 and report["candidate"]["errors"] == 0
    # Production is untouched: no record on any of its topics (usage, responses, the requester's inbox, ...).
    after = await end_offsets(settings, production)
    assert after == before
    assert inbox in production and sum(before[inbox]) == 7  # the requester heard back once per request, in prod
    assert sorted((p.name, p.stat().st_size) for p in vectors.rglob("*") if p.is_file()) == vector_files
    # Cleaning up a shadow (what a run without --keep-shadow does) removes its topics and nothing else.
    from streams.replay.shadow import remove_shadow_topics

    await remove_shadow_topics(replace(settings, topic_prefix=shadow))
    for _ in range(50):
        remaining = await list_topics(settings)
        if not any(t.startswith(shadow) for t in remaining):
            break
        await asyncio.sleep(0.2)
    assert not any(t.startswith(shadow) for t in remaining)
    assert set(production) <= remaining
