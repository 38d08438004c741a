"""``sluice backfill`` on a genuine broker: every good line answered, bad lines reported, reruns publish nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from streams import backfill
from streams.kafka_clients import assign_all, stop_consumer
from streams.settings import Settings
from streams.topics import create_topics
from tests.conftest import settings_env
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


async def end_offset_sum(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = await assign_all(consumer, settings, topic)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await stop_consumer(consumer)


def args_for(source: Path, out: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    backfill.register(parser.add_subparsers())
    flags = "--tenant acme --rate 20 --max-in-flight 4 --max-tokens 4 --timeout 150".split()
    return parser.parse_args(["backfill", str(source), "--out", str(out), *flags])


async def test_backfill_answers_every_line_and_a_rerun_publishes_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    await create_topics(settings)
    lines = [json.dumps({"prompt": f"Name a colour, number {i}."}) for i in range(9)]
    lines.insert(3, '{"prompt": "not closed"')  # malformed, line 4
    lines.append(json.dumps({"id": "chat-1", "messages": [{"role": "user", "content": "Say hi."}], "session": "s9"}))
    lines.append(json.dumps({"prompt": "Count to three.", "tenant": "globex", "metadata": {"feature": "bf"}}))
    assert len(lines) == 12
    source, out = tmp_path / "in.jsonl", tmp_path / "results.jsonl"
    source.write_text("\n".join(lines) + "\n")
    worker = start_worker(settings, tmp_path)
    try:
        code = await asyncio.to_thread(backfill.run, args_for(source, out))
    finally:
        worker.stop()
    first = capsys.readouterr()
    assert code == 0, (first.err, worker.tail())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 11 and {r["status"] for r in records} == {"ok"}, (records, worker.tail())
    assert len({r["id"] for r in records}) == 11 and "chat-1" in {r["id"] for r in records}
    assert {r["tenant"] for r in records} == {"acme", "globex"}
    assert "in.jsonl:4: skipped" in first.err
    assert "answers 11: ok 11, rejected 0, error 0; no answer 0" in first.out
    assert "malformed 1" in first.out and "cost $" in first.out and "wall " in first.out

    published = await end_offset_sum(settings, settings.topic("requests"))
    assert published == 11
    code = await asyncio.to_thread(backfill.run, args_for(source, out))  # no worker needed: nothing to send
    second = capsys.readouterr()
    assert code == 0
    assert "skipping 11 requests already answered" in second.err
    assert "sent 0, skipped 11 (already answered), malformed 1" in second.out
    assert await end_offset_sum(settings, settings.topic("requests")) == published
    assert len(out.read_text().splitlines()) == 11
