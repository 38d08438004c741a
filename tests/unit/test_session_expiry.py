"""Session rows in the admit stage: durable ones (budget limits, a tripped breaker) in the changelog-backed
table, the rest in memory; idle sessions are forgotten (the table would otherwise grow with every session ever
seen), only through their own partition, never while a reservation is open; quiet ones after the longest breaker
window instead of the idle TTL, oldest first, without scanning the table."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.records import now_ms
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, session_key
from streams.stages.outgoing import Source
from streams.stages.session_rows import is_quiet
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
HOUR_MS = 3_600_000


class CountingTable(dict):
    """A dict that counts full scans (``items``) and writes: quiet sessions must cost neither."""

    scans = 0
    writes = 0

    def items(self):  # type: ignore[override]
        self.scans += 1
        return super().items()

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def _stage(ttl_s: float, budget_usd: float = -1.0, breaker: bool = False) -> tuple[AdmitStage, SessionGuard, dict]:
    settings = Settings(
        topic_prefix="sx", session_idle_ttl_s=ttl_s, breaker_enabled=breaker, session_budget_hard_usd=budget_usd
    )
    table: dict = CountingTable()
    guard = SessionGuard(settings, table, lambda: FRONTIER)
    return AdmitStage(settings, guard=guard), guard, table


def _row(guard: SessionGuard, session: str) -> dict | None:
    return guard.rows.get(session_key("acme", session))


def _request(rid: str, session: str, prompt: str | None = None) -> bytes:
    body = {"id": rid, "tenant": "acme", "session": session, "prompt": prompt or f"q {rid}", "max_tokens": 50}
    return orjson.dumps(body)


def _usage(rid: str, session: str) -> bytes:
    return orjson.dumps({"id": rid, "session": session, "tenant": "acme", "cost_usd": 0.001})


async def _admit_and_settle(stage: AdmitStage, rid: str, session: str, partition: int) -> None:
    await stage.handle(_request(rid, session), Source("sx.requests", partition, 0))
    await stage.settle(_usage(rid, session), Source("sx.usage", partition, 0))


async def test_durable_idle_sessions_are_forgotten_through_their_own_partition_only() -> None:
    stage, guard, table = _stage(ttl_s=3600, budget_usd=5.0)  # a budget: every row is durable, in the table
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    await _admit_and_settle(stage, "b1", "s-b", partition=1)
    await stage.handle(_request("c1", "s-c"), Source("sx.requests", 0, 1))  # admitted, never settled
    assert {table[session_key("acme", s)]["p"] for s in ("s-a", "s-b", "s-c")} == {0, 1} and not guard.rows.memory

    later = now_ms() + HOUR_MS + 1
    assert guard.sweep(0, later) == 1  # s-a: idle past the TTL, in partition 0, nothing reserved
    assert session_key("acme", "s-a") not in table
    assert session_key("acme", "s-b") in table  # partition 1 is swept by its own messages
    assert session_key("acme", "s-c") in table  # an open reservation keeps the session
    assert guard.sweep(1, later) == 1 and session_key("acme", "s-b") not in table


async def test_recent_sessions_stay_and_table_scans_are_spaced() -> None:
    stage, guard, table = _stage(ttl_s=3600, budget_usd=5.0)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)  # handling it swept partition 0 (nothing to do)
    now = now_ms()
    first = now + guard.rows.sweep_every_ms + 1
    assert guard.sweep(0, first) == 0  # swept, but s-a is minutes old: kept
    table[session_key("acme", "s-a")]["at"] = now - 2 * HOUR_MS  # as if idle for two hours
    assert guard.sweep(0, first + 1000) == 0  # too soon after the last scan of partition 0
    assert guard.sweep(0, first + guard.rows.sweep_every_ms) == 1


async def test_a_forgotten_session_that_returns_starts_afresh_and_ttl_zero_keeps_everything() -> None:
    stage, guard, _ = _stage(ttl_s=3600, budget_usd=5.0)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    guard.sweep(0, now_ms() + HOUR_MS + 1)
    await _admit_and_settle(stage, "a2", "s-a", partition=0)
    assert (_row(guard, "s-a") or {})["budget"]["spent"] == 0.001  # a2 only: a1's spend went with the state

    keep, keeper, _ = _stage(ttl_s=0)
    await _admit_and_settle(keep, "k1", "s-k", partition=0)
    assert keeper.sweep(0, now_ms() + 1000 * HOUR_MS) == 0 and _row(keeper, "s-k") is not None


async def test_quiet_sessions_live_in_memory_and_go_after_the_breaker_windows_without_a_scan() -> None:
    stage, guard, table = _stage(ttl_s=3600, breaker=True)
    quiet_ms = guard.rows.quiet_ttl_ms
    assert quiet_ms == 60_000  # the longest default breaker window (cost, 60 s)
    for i in range(100):
        await _admit_and_settle(stage, f"q{i}", f"s-q{i}", partition=0)
    await stage.handle(_request("open1", "s-open"), Source("sx.requests", 0, 1))  # reserved, never settled
    assert table.writes == 0 and len(guard.rows.memory) == 101  # no changelog write for any of them
    assert all(is_quiet(_row(guard, f"s-q{i}") or {}) for i in range(100))
    assert not is_quiet(_row(guard, "s-open") or {})
    scans, now = table.scans, now_ms()
    assert guard.sweep(0, now + quiet_ms // 2) == 0  # younger than the window: kept
    assert guard.sweep(0, now + quiet_ms + 1000) == 100
    assert table.scans == scans  # forgotten oldest first from the write order, no scan of the table
    assert set(guard.rows.memory) == {session_key("acme", "s-open")}  # an open reservation is kept
    assert guard.sweep(0, now + 2 * quiet_ms + 2000) == 0 and _row(guard, "s-open") is not None
    assert guard.sweep(0, now + HOUR_MS + 1) == 1 and _row(guard, "s-open") is None  # idle past the TTL
    # A usage record for a forgotten session changes nothing (no row comes back).
    await stage.settle(_usage("q1", "s-q1"), Source("sx.usage", 0, 9))
    assert _row(guard, "s-q1") is None


async def test_a_tripped_breaker_moves_its_session_to_the_table_for_the_idle_ttl() -> None:
    stage, guard, table = _stage(ttl_s=3600, breaker=True)
    for i in range(10):  # the same prompt again and again: the repeat breaker trips (max_repeats 8)
        await stage.handle(_request(f"r{i}", "s-loop", prompt="same"), Source("sx.requests", 0, i))
    key = session_key("acme", "s-loop")
    assert key in table and key not in guard.rows.memory and table[key]["breaker"]["trips"] == 1
    assert guard.sweep(0, now_ms() + 2 * guard.rows.quiet_ttl_ms) == 0 and key in table
    # A quiet row in the table (restored from a changelog written before quiet rows lived in memory) goes by
    # the scan, at the quiet TTL.
    table[session_key("acme", "s-old")] = {"breaker": {}, "budget": {}, "at": now_ms() - 120_000, "p": 0}
    guard.rows._swept_at.clear()
    assert guard.sweep(0, now_ms()) == 1 and session_key("acme", "s-old") not in table and key in table


async def test_a_quiet_session_written_again_stays() -> None:
    stage, guard, _ = _stage(ttl_s=3600)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    await _admit_and_settle(stage, "b1", "s-b", partition=0)
    later = now_ms() + guard.rows.quiet_ttl_ms + 1000
    guard.rows.put(session_key("acme", "s-a"), dict(_row(guard, "s-a") or {}, at=later - 10), 0)  # written since
    assert guard.sweep(0, later) == 1 and _row(guard, "s-a") is not None and _row(guard, "s-b") is None


async def test_rows_of_partitions_moved_away_are_forgotten_at_the_next_assignment() -> None:
    stage, guard, table = _stage(ttl_s=3600, breaker=True)
    for i in range(3):
        await _admit_and_settle(stage, f"m{i}", f"s-m{i}", partition=i)
    for i in range(10):  # a tripped breaker: a durable row in the table, partition 2
        await stage.handle(_request(f"r{i}", "s-loop", prompt="same"), Source("sx.requests", 2, 10 + i))
    assert {session_key("acme", f"s-m{i}") for i in range(3)} <= set(guard.rows.memory)
    assert guard.rows.keep_partitions({0, 2}) == 1  # partition 1 went to another worker
    assert _row(guard, "s-m1") is None and _row(guard, "s-m0") is not None and _row(guard, "s-m2") is not None
    assert session_key("acme", "s-loop") in table  # durable rows follow the table's own partitions
    assert guard.rows.keep_partitions({0, 2}) == 0
    # A partition that comes back starts afresh, and is tracked again for the quiet-session sweep.
    await _admit_and_settle(stage, "m1b", "s-m1", partition=1)
    assert guard.sweep(1, now_ms() + guard.rows.quiet_ttl_ms + 1000) == 1 and _row(guard, "s-m1") is None
    # With no idle TTL (keep every session), a moved partition's rows still go: they are the new owner's now.
    keep, keeper, _ = _stage(ttl_s=0)
    await _admit_and_settle(keep, "k1", "s-k", partition=3)
    assert keeper.rows.keep_partitions({0}) == 1 and _row(keeper, "s-k") is None
