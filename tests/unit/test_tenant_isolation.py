"""Tenant isolation in the admit stage's guards, without a broker: one tenant's spending or looping never uses up,
trips or settles another tenant's session or tenant budget, even when both pick the same session name.

(Cache isolation is proven in test_cache_stages.py::test_no_hit_crosses_tenants_or_conversation_contexts,
test_vector_store.py::test_tenant_isolation_regardless_of_distance and test_cache_key.py; the pipeline-level
proofs for cache, budgets and metering are in tests/integration/test_isolation.py.)
"""

from __future__ import annotations

import orjson

from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard
from streams.stages.outgoing import Outgoing, Source
from streams.stages.tenant_budget import TenantBudgetStage
from streams.tiers import load_tiers

SRC = Source("sx.requests", 0, 0)
FRONTIER = load_tiers().frontier


def _raw(rid: str, tenant: str, session: str = "shared", prompt: str = "hello there") -> bytes:
    return orjson.dumps({"id": rid, "tenant": tenant, "session": session, "prompt": prompt, "max_tokens": 100})


def _topics(outs: list[Outgoing]) -> set[str]:
    return {o.topic for o in outs if o.topic != "sx.decisions"}


def _reason(outs: list[Outgoing]) -> str | None:
    replies = [orjson.loads(o.value) for o in outs if o.topic == "sx.responses"]
    return replies[0]["reason"] if replies else None


def _stage(**overrides: object) -> AdmitStage:
    settings = Settings(topic_prefix="sx", **overrides)  # type: ignore[arg-type]
    return AdmitStage(settings, guard=SessionGuard(settings, {}, lambda: FRONTIER))


async def test_a_session_budget_is_per_tenant_even_with_the_same_session_name() -> None:
    stage = _stage(session_budget_hard_usd=0.005, breaker_enabled=False)
    spent = [await stage.handle(_raw(f"e{i}", "evil"), SRC) for i in range(20)]
    assert _reason(spent[-1]) == "budget"  # evil's "shared" session is exhausted
    assert _topics(await stage.handle(_raw("a1", "acme"), SRC)) == {"sx.lookup"}  # acme's "shared" is not
    # A usage record naming acme's request under the other tenant settles nothing of acme's.
    await stage.settle(orjson.dumps({"id": "a1", "session": "shared", "tenant": "evil", "cost_usd": 0.0}))
    acme = [await stage.handle(_raw(f"a{i}", "acme"), SRC) for i in range(2, 20)]
    assert _reason(acme[-1]) == "budget"  # acme spends its own budget only (its a1 reservation still counts)
    admitted = sum(1 for outs in [spent[0], *acme] if "sx.lookup" in _topics(outs))
    assert admitted >= 2


async def test_a_looping_tenant_trips_only_its_own_session_breaker() -> None:
    stage = _stage(breaker_max_repeats=3)
    for i in range(6):
        outs = await stage.handle(_raw(f"e{i}", "evil", prompt="loop"), SRC)
    assert _reason(outs) == "breaker"
    assert _topics(await stage.handle(_raw("a1", "acme", prompt="loop"), SRC)) == {"sx.lookup"}


async def test_one_tenants_budget_never_spends_another_tenants(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  acme: {budget_hard_usd: 0.004}\n  globex: {budget_hard_usd: 0.004}\n")
    settings = Settings(topic_prefix="sx", tenants_file=str(tenants), breaker_enabled=False)
    admit = AdmitStage(settings, guard=SessionGuard(settings, {}, lambda: FRONTIER))
    ledgers: dict = {}
    stage = TenantBudgetStage(settings, ledgers, lambda: admit.tenant_budgets, lambda: FRONTIER)

    async def ask(rid: str, tenant: str) -> list[Outgoing]:
        [forward] = [o for o in await admit.handle(_raw(rid, tenant, session=rid), SRC) if o.topic == "sx.tenant"]
        return await stage.handle(forward.value, Source("sx.tenant", 0, 0))

    acme = [await ask(f"a{i}", "acme") for i in range(12)]
    assert _reason(acme[-1]) == "budget" and any("sx.lookup" in _topics(o) for o in acme)
    acme_committed = ledgers["acme"]["spent"] + sum(ledgers["acme"]["reserved"].values())
    assert _topics(await ask("g1", "globex")) == {"sx.lookup"}
    assert "globex" in ledgers and "g1" in ledgers["globex"]["reserved"]
    assert not set(ledgers["acme"]["reserved"]) & set(ledgers["globex"]["reserved"])
    assert ledgers["acme"]["spent"] + sum(ledgers["acme"]["reserved"].values()) == acme_committed
