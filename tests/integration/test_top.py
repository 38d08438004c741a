"""``sluice top --once`` on a genuine broker: lag per group, spend per tenant and open breakers in one frame."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import pytest

from schemas.records import now_ms
from streams import top
from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.conftest import settings_env
from tests.integration.kafka_util import produce_raw, read_topic
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


async def test_top_once_shows_lag_tenant_costs_and_open_breakers(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    await create_topics(settings)
    worker = start_worker(settings, tmp_path)
    try:
        async with SluiceClient(settings) as client:
            requests = [
                make_request(f"Name a fruit {i}.", tenant="acme", session=f"s{i}", max_tokens=4) for i in range(3)
            ]
            responses = await asyncio.wait_for(asyncio.gather(*[await client.send(r) for r in requests]), 150)
        assert {r.status for r in responses} == {"ok"}, worker.tail()
        await read_topic(settings, settings.topic("usage"), until=3, timeout_s=60)
    finally:
        worker.stop()
    now = now_ms()
    events = [
        {
            "v": 1,
            "type": "breaker",
            "session": "agent-7",
            "tenant": "acme",
            "state": "open",
            "reason": "rate",
            "at_ms": now,
            "until_ms": now + 600_000,
        },
        {
            "v": 1,
            "type": "breaker",
            "session": "agent-8",
            "tenant": "acme",
            "state": "open",
            "reason": "cost",
            "at_ms": now - 2,
            "until_ms": now + 600_000,
        },
        {
            "v": 1,
            "type": "breaker",
            "session": "agent-8",
            "tenant": "acme",
            "state": "closed",
            "reason": None,
            "at_ms": now - 1,
            "until_ms": None,
        },
    ]
    await produce_raw(
        settings, settings.topic("control"), [(str(e["session"]).encode(), json.dumps(e).encode()) for e in events]
    )

    parser = argparse.ArgumentParser()
    top.register(parser.add_subparsers())
    code = await asyncio.to_thread(top.run, parser.parse_args(["top", "--once", "--interval", "60"]))
    frame = capsys.readouterr().out
    assert code == 0
    prefix = settings.topic_prefix
    for role, topic in (("admit", "requests"), ("cache", "lookup"), ("local", "tier.local"), ("meter", "responses")):
        assert re.search(rf"^{prefix}-{role}\s+{prefix}\.{topic}\s+\d+\s+0:\d+ 1:\d+$", frame, re.M), frame
    assert re.search(r"^acme\s+3\s+\d+\.\d%\s+\d+\.\d{6}\s+\d+\.\d{6}$", frame, re.M), frame
    assert re.search(r"throughput: \d+\.\d\d/s", frame), frame
    assert "open breakers: 1" in frame and re.search(r"session agent-7 .* open \(rate\)", frame), frame
    assert "agent-8" not in frame
