"""Budgets and the runaway-loop breaker as the admit stage applies them (single writer per session)."""

from __future__ import annotations

import asyncio

import orjson

from schemas.records import dumps
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard, session_key
from streams.stages.outgoing import Outgoing, Source
from streams.tiers import load_tiers

SRC = Source("sx.requests", 0, 0)
FRONTIER = load_tiers().frontier


def _stage(**overrides: object) -> tuple[AdmitStage, dict]:
    settings = Settings(topic_prefix="sx", **overrides)  # type: ignore[arg-type]
    sessions: dict = {}
    return AdmitStage(settings, guard=SessionGuard(settings, sessions, lambda: FRONTIER)), sessions


def _raw(i: int, prompt: str = "hi there", session: str = "s1") -> bytes:
    return orjson.dumps({"id": f"r{i}", "tenant": "acme", "session": session, "prompt": prompt, "max_tokens": 100})


def _by_topic(outs: list[Outgoing], topic: str) -> list[dict]:
    return [orjson.loads(o.value) for o in outs if o.topic == topic]


async def test_fifty_concurrent_requests_at_a_nearly_spent_budget_overshoot_at_most_one_reservation() -> None:
    stage, sessions = _stage(session_budget_hard_usd=0.02, breaker_enabled=False)
    # Spend most of the budget: one admitted request settled at a high actual cost.
    await stage.handle(_raw(0), SRC)
    await stage.settle(orjson.dumps({"id": "r0", "session": "s1", "tenant": "acme", "cost_usd": 0.0165}))
    outs = await asyncio.gather(*(stage.handle(_raw(i, f"question {i}"), SRC) for i in range(1, 51)))
    admitted = [o for o in outs if _by_topic(o, "sx.lookup")]
    rejected = [r for o in outs for r in _by_topic(o, "sx.responses")]
    assert admitted and rejected and len(admitted) + len(rejected) == 50
    assert {r["reason"] for r in rejected} == {"budget"} and {r["status"] for r in rejected} == {"rejected"}
    ledger = sessions[session_key("acme", "s1")]["budget"]
    decided = {d["id"]: d for o in outs for d in _by_topic(o, "sx.decisions")}
    assert len(decided) == 50
    assert {decided[r["id"]]["data"]["budget"] for r in rejected} == {"rejected"}
    for out in admitted:  # the decision records the reservation the ledger holds
        rid = _by_topic(out, "sx.lookup")[0]["request"]["id"]
        assert decided[rid]["data"]["budget"] == round(ledger["reserved"][rid], 8)
    reserved = sum(ledger["reserved"].values())
    one_reservation = max(ledger["reserved"].values())
    assert ledger["spent"] + reserved <= 0.02 + 1e-12  # accepted reservations never exceed the hard limit
    # Every admitted request then costs its full reservation: spend ends within one reservation of the limit.
    for i, out in enumerate(admitted):
        job = _by_topic(out, "sx.lookup")[0]
        rid = job["request"]["id"]
        cost = ledger["reserved"][rid]
        await stage.settle(orjson.dumps({"id": rid, "session": "s1", "tenant": "acme", "cost_usd": cost}))
        del i
    spent = sessions[session_key("acme", "s1")]["budget"]["spent"]
    assert spent <= 0.02 + one_reservation
    # Settling the same usage again changes nothing (redelivery is counted once).
    await stage.settle(orjson.dumps({"id": "r0", "session": "s1", "tenant": "acme", "cost_usd": 0.0165}))
    assert sessions[session_key("acme", "s1")]["budget"]["spent"] == spent


async def test_looping_agent_trips_the_breaker_then_recovers_after_one_probe() -> None:
    stage, _ = _stage(breaker_max_repeats=5, breaker_cooldown_s=0.3)
    verdicts = []
    control: list[dict] = []
    for i in range(50):
        outs = await stage.handle(_raw(i, "same prompt again"), SRC)
        control += _by_topic(outs, "sx.control")
        verdicts.append("ok" if _by_topic(outs, "sx.lookup") else _by_topic(outs, "sx.responses")[0]["reason"])
    assert verdicts[:4] == ["ok"] * 4
    assert verdicts[4:] == ["breaker"] * 46  # tripped on the 5th identical prompt in a row
    [tripped] = _by_topic(outs, "sx.decisions")
    assert (tripped["verdict"], tripped["reason"], tripped["data"]["breaker"]) == ("rejected", "breaker", "repeat")
    assert control[0]["state"] == "open" and control[0]["session"] == "s1" and control[0]["reason"] == "repeat"
    await asyncio.sleep(0.35)
    probe = await stage.handle(_raw(100, "a different question"), SRC)
    assert _by_topic(probe, "sx.lookup"), "after the cooldown one probe is let through"
    blocked = await stage.handle(_raw(101, "another one"), SRC)
    assert _by_topic(blocked, "sx.responses")[0]["reason"] == "breaker"  # only one probe at a time
    settled = await stage.settle(
        dumps({"id": "r100", "session": "s1", "tenant": "acme", "cost_usd": 0.0, "status": "ok"})
    )
    assert [e["state"] for e in _by_topic(settled, "sx.control")] == ["closed"]
    assert _by_topic(await stage.handle(_raw(102, "back to work"), SRC), "sx.lookup")


async def test_sessions_are_independent() -> None:
    stage, _ = _stage(breaker_max_repeats=3)
    for i in range(5):
        await stage.handle(_raw(i, "loop", session="looping"), SRC)
    assert _by_topic(await stage.handle(_raw(9, "loop", session="healthy"), SRC), "sx.lookup")


async def test_tenant_budget_has_one_writer_across_sessions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from streams.stages.tenant_budget import TenantBudgetStage

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  acme: {budget_soft_usd: 0.004, budget_hard_usd: 0.01}\n")
    settings = Settings(topic_prefix="sx", tenants_file=str(tenants), breaker_enabled=False)
    admit = AdmitStage(settings, guard=SessionGuard(settings, {}, lambda: FRONTIER))
    ledgers: dict = {}
    tenant_stage = TenantBudgetStage(settings, ledgers, lambda: admit.tenant_budgets, lambda: FRONTIER)
    emitted = [o for i in range(50) for o in await admit.handle(_raw(i, f"q{i}", session=f"s{i}"), SRC)]
    forwarded = [o for o in emitted if o.topic != "sx.decisions"]
    assert {o.topic for o in forwarded} == {"sx.tenant"} and {o.key for o in forwarded} == {b"acme"}
    assert all(d["data"]["tenant_budget"] is True for d in _by_topic(emitted, "sx.decisions"))
    outs = [o for f in forwarded for o in await tenant_stage.handle(f.value, Source("sx.tenant", 0, 0))]
    tenant_decisions = _by_topic(outs, "sx.decisions")
    assert {d["stage"] for d in tenant_decisions} == {"tenant_budget"} and len(tenant_decisions) == 50
    admitted = _by_topic(outs, "sx.lookup")
    rejected = _by_topic(outs, "sx.responses")
    assert admitted and len(admitted) + len(rejected) == 50
    assert {r["reason"] for r in rejected} == {"budget"} and rejected[0]["route"]["detail"] == "tenant"
    alerts = [e for e in _by_topic(outs, "sx.control") if e["type"] == "budget_alert"]
    assert len(alerts) == 1 and alerts[0]["scope"] == "tenant"
    ledger = ledgers["acme"]
    assert ledger["spent"] + sum(ledger["reserved"].values()) <= 0.01 + 1e-12
    # Usage for an admitted request is forwarded by the settle path and releases the tenant's reservation.
    first = admitted[0]["request"]
    usage = {"id": first["id"], "session": first["session"], "tenant": "acme", "cost_usd": 0.0001}
    [forward] = [o for o in await admit.settle(orjson.dumps(usage)) if o.topic == "sx.tenant"]
    await tenant_stage.handle(forward.value, Source("sx.tenant", 0, 1))
    assert first["id"] not in ledgers["acme"]["reserved"] and ledgers["acme"]["spent"] == 0.0001
