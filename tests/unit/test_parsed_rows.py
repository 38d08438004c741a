"""Parsed table rows are reused only while the table still holds the very value this process wrote."""

from __future__ import annotations

import orjson

from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, session_key
from streams.stages.outgoing import Source
from streams.stages.parsed_rows import ParsedRows
from streams.tiers import load_tiers

SRC = Source("sx.requests", 0, 0)
FRONTIER = load_tiers().frontier


def test_take_returns_the_objects_only_for_the_same_row_and_only_once() -> None:
    rows: ParsedRows[list[int]] = ParsedRows(max_rows=2)
    row, parsed = {"n": 1}, [1]
    rows.put("a", row, parsed)
    assert rows.take("a", {"n": 1}) is None  # an equal but different row (e.g. recovered from the changelog)
    rows.put("a", row, parsed)
    assert rows.take("a", row) is parsed
    assert rows.take("a", row) is None  # taken: a caller that never puts back leaves nothing behind
    for key in ("a", "b", "c"):
        rows.put(key, row, parsed)
    assert rows.take("a", row) is None and rows.take("c", row) is parsed  # least recently used evicted


async def test_the_guard_reparses_a_row_it_did_not_write_and_keeps_its_own() -> None:
    settings = Settings(topic_prefix="sx", session_budget_hard_usd=1.0, breaker_enabled=False)
    sessions: dict = {}
    stage = AdmitStage(settings, guard=SessionGuard(settings, sessions, lambda: FRONTIER))

    async def ask(rid: str) -> None:
        await stage.handle(orjson.dumps({"id": rid, "tenant": "t", "session": "s", "prompt": "hi"}), SRC)

    async def pay(rid: str, cost: float) -> None:
        usage = {"id": rid, "tenant": "t", "session": "s", "cost_usd": cost, "status": "ok"}
        await stage.settle(orjson.dumps(usage), SRC)

    key = session_key("t", "s")
    await ask("r1")
    await pay("r1", 0.25)
    await pay("r1", 0.25)  # a duplicate: the reused objects must not count it twice
    assert sessions[key]["budget"]["spent"] == 0.25
    # Another writer (a restart recovering the changelog, say) replaces the row: its content wins.
    sessions[key] = orjson.loads(orjson.dumps({**sessions[key], "budget": {**sessions[key]["budget"], "spent": 0.9}}))
    await ask("r2")
    await pay("r2", 0.05)
    assert abs(sessions[key]["budget"]["spent"] - 0.95) < 1e-9
