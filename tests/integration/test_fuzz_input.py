"""1,000+ hostile messages through a running pipeline: each one dead-lettered exactly once with its reason, each
readable id rejected on sluice.responses, and good requests interleaved with them keep being answered.

The messages come from Hypothesis strategies (tests/fixtures/hostile.py), drawn derandomized so every run
publishes the same list. Good requests go to the cloud tier, answered by the loopback provider simulator (no
model load), and repeat so some are exact-cache hits. Dead letters are matched to what was published by
(partition, offset): the count is exact, not "at least".
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.parse import InvalidMessage, parse_request
from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.fixtures.hostile import FUZZ_LIMITS, INJECTIONS, collect, hostile_messages
from tests.fixtures.provider_sim import ProviderSim
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration

N_DRAWN = 1300
BATCH = 100  # a good request after every BATCH bad ones


def _internal_reply_to(settings: Settings) -> list[tuple[bytes | None, bytes]]:
    """Bad requests naming Sluice's own topics as reply_to: the rejection must not be copied there."""
    out = []
    for i, topic in enumerate(("requests", "usage", "lookup")):
        bad = {"id": f"fz-internal-{i}", "tenant": "t", "session": "s", "prompt": 1, "reply_to": settings.topic(topic)}
        out.append((b"s", orjson.dumps(bad)))
    return out


async def _read_exactly(settings: Settings, name: str, n: int) -> list[dict]:
    """All of a topic once ``n`` records are there, then a short quiet period: any extra record fails."""
    records = await read_topic(settings, settings.topic(name), until=n, timeout_s=90)
    assert len(records) == n, f"{name}: {len(records)} records, expected {n}"
    again = await read_topic(settings, settings.topic(name), until=n + 1, timeout_s=5)
    assert len(again) == n, f"{name}: {len(again)} records, expected exactly {n}"
    return records


def _expected(raw: bytes) -> InvalidMessage:
    try:
        parse_request(raw, FUZZ_LIMITS)
    except InvalidMessage as exc:
        return exc
    raise AssertionError(f"the strategy produced a valid request: {raw[:200]!r}")


async def test_every_hostile_message_is_dead_lettered_and_good_requests_keep_flowing(
    settings: Settings, tmp_path: Path
) -> None:
    await create_topics(settings)
    async with ProviderSim() as sim:
        tiers = write_tiers(tmp_path / "tiers-fuzz.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
        env = {
            "SLUICE_TIERS_FILE": str(tiers),
            "SLUICE_TEST_OPENAI_KEY": "sk-fuzz",
            "SLUICE_MAX_MESSAGE_BYTES": str(FUZZ_LIMITS.max_message_bytes),
            "SLUICE_MAX_PROMPT_CHARS": str(FUZZ_LIMITS.max_prompt_chars),
            "SLUICE_DEFAULT_MAX_TOKENS": str(FUZZ_LIMITS.default_max_tokens),
            "SLUICE_BREAKER_ENABLED": "false",
        }
        worker = start_worker(settings, tmp_path, "admit", "cache", "cloud", name="fuzz", env=env)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
        try:
            # Drawn while the worker starts (a thread: the event loop keeps serving the simulator).
            bad = await asyncio.to_thread(collect, hostile_messages, N_DRAWN)
            bad += _internal_reply_to(settings)
            assert len(bad) >= 1000, len(bad)
            expected = [_expected(raw) for _, raw in bad]
            async with SluiceClient(settings) as client:
                warm = await client.submit(make_request("warm up", tenant="t", session="w", max_tokens=4), 120)
                await producer.start()
                sends, goods = [], []
                for start in range(0, len(bad), BATCH):
                    for key, raw in bad[start : start + BATCH]:
                        sends.append(await producer.send(settings.topic("requests"), key=key, value=raw))
                    n = start // BATCH
                    hostile_text = INJECTIONS[n % len(INJECTIONS)]  # valid requests may carry hostile text too
                    request = make_request(
                        f"good question {n % 5}",  # repeats: exact-cache hits among them
                        tenant="t" if n % 2 else hostile_text,
                        session=f"g{n}",
                        max_tokens=4,
                        metadata={"note": hostile_text},
                    )
                    goods.append(await client.send(request))
                placed = [(m.partition, m.offset) for m in await asyncio.gather(*sends)]
                answers = await asyncio.wait_for(asyncio.gather(*goods), 120)
            # Read while the worker runs: bad messages published after the last good one may still be in flight.
            letters = await _read_exactly(settings, "deadletter", len(bad))
            want = Counter((exc.request_id, exc.reason) for exc in expected if exc.request_id)
            responses = await _read_exactly(settings, "responses", sum(want.values()) + len(goods) + 1)  # + warm-up
        finally:
            await producer.stop()
            worker.stop()
    assert warm.status == "ok", worker.tail()
    assert [a.status for a in answers] == ["ok"] * len(answers), worker.tail()
    assert any(a.tier == "cache" for a in answers) and any(a.tier == "cloud" for a in answers)

    by_place = {(d["partition"], d["offset"]): d for d in letters if d["source_topic"] == settings.topic("requests")}
    assert len(letters) == len(bad) == len(by_place), "one dead letter per bad message, no more, no fewer"
    assert set(by_place) == set(placed)
    for place, raw_bad, exc in zip(placed, bad, expected, strict=True):
        letter = by_place[place]
        assert letter["reason"] == exc.reason and letter["error"]
        assert letter["original_bytes"] == len(raw_bad[1]) and letter["request_id"] == exc.request_id
        assert letter["tenant"] == exc.partial.get("tenant")  # hostile tenant strings are carried verbatim

    got = Counter((r["id"], r["reason"]) for r in responses if r["status"] == "rejected")
    assert got == want
    # No rejection was copied into Sluice's own topics (internal reply_to names are refused).
    usage_like = await read_topic(settings, settings.topic("usage"), until=1, timeout_s=3)
    assert usage_like == []
