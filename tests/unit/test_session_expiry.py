"""Idle sessions leave the admit stage's table (it would otherwise grow with every session ever seen), and only
through their own partition, never while a reservation is open."""

from __future__ import annotations

import orjson

from schemas.records import now_ms
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, session_key
from streams.stages.outgoing import Source
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
HOUR_MS = 3_600_000


def _stage(ttl_s: float) -> tuple[AdmitStage, SessionGuard, dict]:
    settings = Settings(topic_prefix="sx", session_idle_ttl_s=ttl_s, breaker_enabled=False)
    sessions: dict = {}
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
    stage, guard, sessions = _stage(ttl_s=3600)
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
