"""Bad input lands in the dead-letter topic with a reason; good requests keep flowing around it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


def _bad_messages(settings: Settings) -> list[tuple[bytes, str, str | None]]:
    """(raw bytes, expected reason, request id that should get a rejection or None)."""
    big_prompt = "x" * (settings.max_prompt_chars + 1)
    return [
        (b"{not json", "malformed_json", None),
        (b"\xff\xfe\xfa invalid utf-8", "invalid_utf8", None),
        (b"[1, 2, 3]", "not_an_object", None),
        (orjson.dumps({"id": "bad-1", "session": "s", "prompt": "hi"}), "missing_field:tenant", "bad-1"),
        (orjson.dumps({"id": "bad-2", "tenant": "t", "session": "s", "prompt": 42}), "wrong_type:prompt", "bad-2"),
        (
            orjson.dumps({"id": "bad-3", "tenant": "t", "session": "s", "prompt": "hi", "max_tokens": "9"}),
            "wrong_type:max_tokens",
            "bad-3",
        ),
        (
            orjson.dumps({"id": "bad-4", "v": 99, "tenant": "t", "session": "s", "prompt": "hi"}),
            "unknown_version",
            "bad-4",
        ),
        (
            orjson.dumps({"id": "bad-5", "tenant": "t", "session": "s", "prompt": big_prompt}),
            "prompt_too_long",
            "bad-5",
        ),
        (b"{" + b'"pad": "' + b"y" * (settings.max_message_bytes + 10) + b'"}', "oversized", None),
    ]


async def test_malformed_messages_are_dead_lettered_while_good_ones_flow(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    bad = _bad_messages(settings)
    worker = start_worker(settings, tmp_path)
    try:
        async with SluiceClient(settings) as client:
            good_before = await client.send(make_request("Say yes", tenant="t", session="s", max_tokens=4))
            rejections = {rid: await client.expect(rid) for _, _, rid in bad if rid}
            for raw, _, _ in bad:
                await client.publish_raw(raw, key=b"s")
            good_after = await client.send(make_request("Say no", tenant="t", session="s", max_tokens=4))
            answers = await asyncio.wait_for(asyncio.gather(good_before, good_after), 120)
            rejected = await asyncio.wait_for(asyncio.gather(*rejections.values()), 60)
    finally:
        worker.stop()
    assert [a.status for a in answers] == ["ok", "ok"], worker.tail()
    by_id = {r.id: r for r in rejected}
    for _, reason, rid in bad:
        if rid:
            assert by_id[rid].status == "rejected"
            assert by_id[rid].reason == reason
    letters = await read_topic(settings, settings.topic("deadletter"), until=len(bad), timeout_s=30)
    assert sorted(d["reason"] for d in letters) == sorted(reason for _, reason, _ in bad)
    for letter in letters:
        assert letter["source_topic"] == settings.topic("requests")
        assert letter["offset"] >= 0 and letter["error"]
        assert letter["original_bytes"] > 0 and letter["original"]
    oversized = next(d for d in letters if d["reason"] == "oversized")
    assert oversized["truncated"] is True and len(oversized["original"]) <= 16 * 1024
