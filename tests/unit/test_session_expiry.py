"""Idle sessions leave the admit stage's table (it would otherwise grow with every session ever seen), and only
through their own partition, never while a reservation is open. Quiet sessions (no budget limits, nothing
reserved, a breaker never tripped) go after the longest breaker window instead of the idle TTL, oldest first,
without scanning the table."""

from __future__ import annotations

import orjson

from schemas.records import now_ms
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, is_quiet, session_key
from streams.stages.outgoing import Source
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
HOUR_MS = 3_600_000


class CountingTable(dict):
    """A dict that counts full scans (``items``): the quiet path must not scan."""

    scans = 0

    def items(self):  # type: ignore[override]
        self.scans += 1
        return super().items()


def _stage(ttl_s: float, budget_usd: float = -1.0, breaker: bool = False) -> tuple[AdmitStage, SessionGuard, dict]:
    settings = Settings(
        topic_prefix="sx", session_idle_ttl_s=ttl_s, breaker_enabled=breaker, session_budget_hard_usd=budget_usd
    )
    sessions: dict = CountingTable()
    guard = SessionGuard(settings, sessions, lambda: FRONTIER)
    return AdmitStage(settings, guard=guard), guard, sessions


def _request(rid: str, session: str) -> bytes:
    return orjson.dumps({"id": rid, "tenant": "acme", "session": session, "prompt": f"q {rid}", "max_tokens": 50})


def _usage(rid: str, session: str) -> bytes:
    return orjson.dumps({"id": rid, "session": session, "tenant": "acme", "cost_usd": 0.001})


async def _admit_and_settle(stage: AdmitStage, rid: str, session: str, partition: int) -> None:
    await stage.handle(_request(rid, session), Source("sx.requests", partition, 0))
    await stage.settle(_usage(rid, session), Source("sx.usage", partition, 0))


async def test_idle_sessions_are_forgotten_through_their_own_partition_only() -> None:
    stage, guard, sessions = _stage(ttl_s=3600)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    await _admit_and_settle(stage, "b1", "s-b", partition=1)
    await stage.handle(_request("c1", "s-c"), Source("sx.requests", 0, 1))  # admitted, never settled
    assert {sessions[session_key("acme", s)]["p"] for s in ("s-a", "s-b", "s-c")} == {0, 1}

    later = now_ms() + HOUR_MS + 1
    assert guard.sweep(0, later) == 1  # s-a: idle past the TTL, in partition 0, nothing reserved
    assert session_key("acme", "s-a") not in sessions
    assert session_key("acme", "s-b") in sessions  # partition 1 is swept by its own messages
    assert session_key("acme", "s-c") in sessions  # an open reservation keeps the session
    assert guard.sweep(1, later) == 1 and session_key("acme", "s-b") not in sessions


async def test_recent_sessions_stay_and_sweeps_are_spaced() -> None:
    stage, guard, sessions = _stage(ttl_s=3600, budget_usd=5.0)  # a budget: not quiet, kept for the idle TTL
    await _admit_and_settle(stage, "a1", "s-a", partition=0)  # handling it swept partition 0 (nothing to do)
    now = now_ms()
    first = now + guard.sweep_every_ms + 1
    assert guard.sweep(0, first) == 0  # swept, but s-a is minutes old: kept
    sessions[session_key("acme", "s-a")]["at"] = now - 2 * HOUR_MS  # as if idle for two hours
    assert guard.sweep(0, first + 1000) == 0  # too soon after the last sweep of partition 0
    assert guard.sweep(0, first + guard.sweep_every_ms) == 1


async def test_a_forgotten_session_that_returns_starts_afresh_and_ttl_zero_keeps_everything() -> None:
    stage, guard, sessions = _stage(ttl_s=3600)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    guard.sweep(0, now_ms() + HOUR_MS + 1)
    await _admit_and_settle(stage, "a2", "s-a", partition=0)
    budget = sessions[session_key("acme", "s-a")]["budget"]
    assert budget["spent"] == 0.001  # a2 only: a1's spend went with the forgotten state

    keep, keeper, kept = _stage(ttl_s=0)
    await _admit_and_settle(keep, "k1", "s-k", partition=0)
    assert keeper.sweep(0, now_ms() + 1000 * HOUR_MS) == 0 and session_key("acme", "s-k") in kept


async def test_quiet_sessions_go_after_the_breaker_windows_and_the_others_stay_for_the_ttl() -> None:
    stage, guard, sessions = _stage(ttl_s=3600, breaker=True)
    quiet_ms = guard.quiet_ttl_ms
    assert quiet_ms == 60_000  # the longest default breaker window (cost, 60 s)
    for i in range(100):
        await _admit_and_settle(stage, f"q{i}", f"s-q{i}", partition=0)
    await stage.handle(_request("open1", "s-open"), Source("sx.requests", 0, 1))  # reserved, never settled
    sessions[session_key("acme", "s-tripped")] = {  # a breaker that tripped once: its backoff streak matters
        "breaker": {"state": "closed", "trips": 1},
        "budget": {},
        "at": now_ms(),
        "p": 0,
    }
    assert all(is_quiet(sessions[session_key("acme", f"s-q{i}")]) for i in range(100))
    assert not is_quiet(sessions[session_key("acme", "s-open")])
    scans = sessions.scans
    now = now_ms()
    assert guard.sweep(0, now + quiet_ms // 2) == 0  # younger than the window: kept
    assert guard.sweep(0, now + quiet_ms + 1000) == 100
    assert sessions.scans == scans  # forgotten oldest first from the write order, no scan of the table
    assert set(sessions) == {session_key("acme", "s-open"), session_key("acme", "s-tripped")}
    assert guard.sweep(1, now + 2 * HOUR_MS) == 0  # another partition's sessions are not touched from here

    # The full scan (due once per sweep interval) keeps the non-quiet rows for the idle TTL.
    guard._swept_at.clear()
    assert guard.sweep(0, now + quiet_ms + 2000) == 0 and len(sessions) == 2
    sessions[session_key("acme", "s-tripped")]["at"] = now - 2 * HOUR_MS
    guard._swept_at.clear()
    assert guard.sweep(0, now + quiet_ms + 3000) == 1
    assert set(sessions) == {session_key("acme", "s-open")}  # an open reservation is never forgotten


async def test_a_quiet_session_written_again_stays_and_one_restored_from_the_changelog_goes_by_the_scan() -> None:
    stage, guard, sessions = _stage(ttl_s=3600)
    await _admit_and_settle(stage, "a1", "s-a", partition=0)
    await _admit_and_settle(stage, "b1", "s-b", partition=0)
    later = now_ms() + guard.quiet_ttl_ms + 1000
    sessions[session_key("acme", "s-a")]["at"] = later - 10  # written since (as a settle would)
    assert guard.sweep(0, later) == 1 and session_key("acme", "s-a") in sessions
    # A row this process did not write (restored from the changelog after a restart) goes by the full scan.
    restored = dict(sessions[session_key("acme", "s-a")], at=now_ms() - 2 * guard.quiet_ttl_ms)
    sessions[session_key("acme", "s-r")] = restored
    guard._swept_at.clear()
    assert guard.sweep(0, later) == 1 and session_key("acme", "s-r") not in sessions
    # A usage record for a forgotten session changes nothing (no row comes back).
    await stage.settle(_usage("b1", "s-b"), Source("sx.usage", 0, 9))
    assert session_key("acme", "s-b") not in sessions
