"""Settled ids moved out of budget rows: small rows per id, forgotten per partition after the horizon."""

from __future__ import annotations

import orjson
import pytest

from schemas.records import now_ms
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, session_key
from streams.stages.outgoing import Source
from streams.stages.spilled_ids import SpilledIds, spill_key
from streams.stages.tenant_budget import TenantBudgetStage
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
H = 60_000  # horizon ms
T0 = 1_700_000_000_000


def test_rows_are_forgotten_after_the_horizon_only_in_their_own_partition() -> None:
    table: dict = {}
    store = SpilledIds(table, H)
    view0, view1 = store.view("a", 0, T0), store.view("b", 1, T0)
    view0.add("r1", T0 - 5)
    view1.add("r1", T0 - 5)
    assert "r1" in view0 and "r1" in view1 and "r2" not in view0
    assert table[spill_key("a", "r1")] == [T0, 0]  # stamped when written here
    assert store.view("a", 0, T0 + H - 1) and len(table) == 2  # not yet
    later = store.view("a", 0, T0 + H + 1)  # work on partition 0 forgets partition 0's old rows only
    assert "r1" not in later and spill_key("b", "r1") in table
    assert store.expire(1, T0 + H + 1) == 1 and not table


def test_the_queue_is_rebuilt_from_the_table_after_a_restart() -> None:
    table = {spill_key("a", f"r{i}"): [T0 + i * 1000, 3] for i in range(10)}
    table[spill_key("x", "other")] = [T0, 4]
    table["junk"] = {"not": "a spill row"}
    store = SpilledIds(table, H)  # a new process: the table came back from its changelog
    assert store.expire(3, T0 + H + 4500) == 5  # r0..r4 are older than the horizon
    assert sorted(k for k in table if k.endswith(("r5", "r9"))) == [spill_key("a", "r5"), spill_key("a", "r9")]
    assert spill_key("x", "other") in table and "junk" in table
    assert SpilledIds(table, 0).expire(3, T0 + 10 * H) == 0  # horizon 0: never forget


def test_keys_cannot_collide_across_scopes() -> None:
    assert spill_key("a|b", "c") != spill_key("a", "b|c")
    assert spill_key("ab", "c") != spill_key("a", "bc")


async def test_a_busy_session_writes_a_small_row_and_never_settles_twice() -> None:
    # A budget makes the row durable (a table row, settled ids spilled); without one, see the next test.
    settings = Settings(topic_prefix="sx", breaker_enabled=False, budget_row_ids=16, session_budget_hard_usd=1000.0)
    sessions: dict = {}
    settled: dict = {}
    stage = AdmitStage(settings, guard=SessionGuard(settings, sessions, lambda: FRONTIER, settled))
    src = Source("sx.requests", 2, 0)

    def usage(i: int) -> bytes:
        return orjson.dumps({"id": f"r{i}", "session": "s", "tenant": "acme", "cost_usd": 0.001, "status": "ok"})

    for i in range(300):
        raw = orjson.dumps({"id": f"r{i}", "tenant": "acme", "session": "s", "prompt": f"q {i}", "max_tokens": 8})
        await stage.handle(raw, src)
        await stage.settle(usage(i), Source("sx.usage", 2, i))
    row = sessions[session_key("acme", "s")]
    assert len(orjson.dumps(row)) < 4000 and len(row["budget"]["settled"]["ids"]) == 16
    assert len(settled) == 284 and {v[1] for v in settled.values()} == {2}
    spent = row["budget"]["spent"]
    for i in (0, 150, 299):  # redelivered usage: old, middle, newest
        await stage.settle(usage(i), Source("sx.usage", 2, 999))
    assert sessions[session_key("acme", "s")]["budget"]["spent"] == spent == pytest.approx(0.3)


async def test_a_busy_session_without_limits_keeps_its_newest_ids_in_memory_and_spills_nothing() -> None:
    settings = Settings(topic_prefix="sx", breaker_enabled=False, budget_row_ids=16)
    sessions: dict = {}
    settled: dict = {}
    guard = SessionGuard(settings, sessions, lambda: FRONTIER, settled)
    stage = AdmitStage(settings, guard=guard)

    def usage(i: int) -> bytes:
        return orjson.dumps({"id": f"r{i}", "session": "s", "tenant": "acme", "cost_usd": 0.001, "status": "ok"})

    for i in range(300):
        raw = orjson.dumps({"id": f"r{i}", "tenant": "acme", "session": "s", "prompt": f"q {i}", "max_tokens": 8})
        await stage.handle(raw, Source("sx.requests", 2, i))
        await stage.settle(usage(i), Source("sx.usage", 2, i))
    row = guard.rows.get(session_key("acme", "s")) or {}
    assert sessions == {} and settled == {}  # no changelog write at all: nothing here must survive a restart
    assert len(row["budget"]["settled"]["ids"]) == 16 and row["budget"]["spent"] == pytest.approx(0.3)
    await stage.settle(usage(299), Source("sx.usage", 2, 999))  # a redelivery among the newest: not again
    assert (guard.rows.get(session_key("acme", "s")) or {})["budget"]["spent"] == pytest.approx(0.3)


async def test_a_busy_tenant_row_stays_small(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  acme: {budget_hard_usd: 1000}\n")
    settings = Settings(topic_prefix="sx", tenants_file=str(tenants), breaker_enabled=False, budget_row_ids=8)
    admit = AdmitStage(settings, guard=SessionGuard(settings, {}, lambda: FRONTIER))
    ledgers: dict = {}
    settled: dict = {}
    stage = TenantBudgetStage(settings, ledgers, lambda: admit.tenant_budgets, lambda: FRONTIER, settled)
    src = Source("sx.tenant", 1, 0)
    for i in range(200):
        raw = orjson.dumps({"id": f"r{i}", "tenant": "acme", "session": f"s{i}", "prompt": "hi", "max_tokens": 8})
        [job] = [o for o in await admit.handle(raw, Source("sx.requests", 0, i)) if o.topic == "sx.tenant"]
        await stage.handle(job.value, src)
        usage = {"v": 1, "kind": "usage", "usage": {"id": f"r{i}", "tenant": "acme", "cost_usd": 0.5}}
        await stage.handle(orjson.dumps(usage), src)
        if i == 0:
            await stage.handle(orjson.dumps(usage), src)  # redelivered at once
    await stage.handle(orjson.dumps({"v": 1, "kind": "usage", "usage": {"id": "r3", "tenant": "acme"}}), src)
    assert len(ledgers["acme"]["settled"]["ids"]) == 8 and len(settled) == 192
    assert ledgers["acme"]["spent"] == 100.0 and not ledgers["acme"].get("reserved")


def test_time_is_the_partitions_stream_time_never_ahead_of_the_wall_clock() -> None:
    table: dict = {}
    SpilledIds(table, H).view("a", 0, T0).add("r1", T0)
    restarted = SpilledIds(table, H)  # back after an outage far longer than the horizon (T0 is long past)
    assert "r1" in restarted.view("a", 0, T0 + 10)  # a usage record replayed from before the crash: still known
    assert "r1" not in restarted.view("a", 0, "junk")  # no usable time counts as now: past the horizon, forgotten
    assert spill_key("a", "r1") not in table
    table.clear()
    store = SpilledIds(table, H)
    store.view("a", 0, T0).add("r2", T0)
    store.view("b", 1, 10**15)  # a client's clock far ahead on another partition moves nothing here
    assert "r2" in store.view("a", 0, T0 + 1)
    assert store._clock[1] <= now_ms()  # and it is held to the wall clock
