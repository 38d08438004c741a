"""The client delivers exactly one final response per request id: the first copy; redelivered copies are
suppressed by id and counted (no broker needed: responses are fed to the client's delivery path)."""

from __future__ import annotations

import pytest

from schemas.records import Response, Usage, dumps
from streams import client as client_module
from streams.client import SluiceClient
from streams.settings import Settings


def _response(rid: str, text: str, cost: float) -> bytes:
    return dumps(Response(id=rid, tenant="acme", session="s", status="ok", text=text, usage=Usage(3, 2), cost_usd=cost))


async def test_the_first_copy_is_delivered_and_later_copies_are_suppressed() -> None:
    client = SluiceClient(Settings())
    first = await client.expect("r1")
    other = await client.expect("r2")
    client._deliver(_response("r1", "first", 0.5))
    client._deliver(_response("r1", "redelivered", 0.0))  # e.g. re-answered from the cache after a restart
    client._deliver(_response("r1", "redelivered again", 0.0))
    client._deliver(_response("zz", "someone else's", 1.0))  # not ours: ignored, not counted as a duplicate
    assert first.done() and first.result().text == "first" and first.result().cost_usd == 0.5
    assert not other.done()
    assert client.delivered == 1 and client.duplicates_suppressed == 2
    client._deliver(_response("r2", "second", 0.25))
    assert other.result().text == "second" and client.delivered == 2


async def test_an_id_sent_again_on_purpose_gets_its_next_response() -> None:
    client = SluiceClient(Settings())
    client._deliver(_response("r1", "ignored: nobody waits", 0.0))
    first = await client.expect("r1")
    client._deliver(_response("r1", "one", 0.0))
    again = await client.expect("r1")  # the caller re-sends the same id
    client._deliver(_response("r1", "two", 0.0))
    assert first.result().text == "one" and again.result().text == "two"
    assert client.duplicates_suppressed == 0


async def test_the_dedup_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "ANSWERED_IDS_KEPT", 3)
    client = SluiceClient(Settings())
    for i in range(5):
        fut = await client.expect(f"r{i}")
        client._deliver(_response(f"r{i}", "x", 0.0))
        assert fut.done()
    assert list(client._answered) == ["r2", "r3", "r4"]
    client._deliver(_response("r4", "dup", 0.0))
    assert client.duplicates_suppressed == 1
