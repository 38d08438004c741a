"""Tenant isolation through the real pipeline: no cache hit crosses tenants (identical prompts included), one
tenant spending its budget cannot exhaust another's (even on the same session name), and metering (sluice.usage
and ``sluice report``'s per-tenant figures) counts each tenant's own requests only.

Cloud answers come from the loopback provider simulator, scripted per request so each tenant's answer text is
recognisable: a cache hit that crossed tenants would show the other tenant's text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.records import Response
from streams.client import SluiceClient, make_request
from streams.report import build_report
from streams.settings import Settings
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim, Reply
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker
from tests.integration.tiers_files import write_tiers

pytestmark = pytest.mark.integration

ACME_BUDGET = 0.012  # gpt-4o reserves ~$0.0062 for 600 tokens; each long answer costs ~$0.005
LONG = "word " * 500


async def test_cache_budgets_and_metering_never_cross_tenants(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  acme: {{budget_hard_usd: {ACME_BUDGET}}}\n  globex: {{budget_hard_usd: 1.0}}\n")
    answers: list[Response] = []
    async with ProviderSim() as sim:
        env = {
            "SLUICE_TIERS_FILE": str(
                write_tiers(tmp_path / "tiers.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
            ),
            "SLUICE_TEST_OPENAI_KEY": "sk-isolation",
            "SLUICE_TENANTS_FILE": str(tenants),
            "SLUICE_SESSION_BUDGET_HARD_USD": "0.02",  # per session: both tenants use the session name "shared"
            "SLUICE_BREAKER_ENABLED": "false",
            "SLUICE_BUDGET_ROW_IDS": "1",  # every older settled id goes through the spill tables
        }
        worker = start_worker(settings, tmp_path, "admit", "cache", "cloud", "meter", name="iso", env=env)
        try:
            async with SluiceClient(settings) as client:

                async def ask(tenant: str, prompt: str, *script: Reply, max_tokens: int = 32) -> Response:
                    sim.script("openai", *script)
                    request = make_request(prompt, tenant=tenant, session="shared", max_tokens=max_tokens)
                    answer = await client.submit(request, 120)
                    answers.append(answer)
                    return answer

                question = "What is our internal refund policy for enterprise customers?"
                a1 = await ask("acme", question, Reply(text="acme private answer"))
                b1 = await ask("globex", question, Reply(text="globex own answer"))
                calls_after_first_two = len(sim.seen("openai"))
                a2 = await ask("acme", question)
                b2 = await ask("globex", question)
                paraphrase = "What's our internal refund policy for enterprise customers?"
                a3 = await ask("acme", paraphrase)
                b3 = await ask("globex", paraphrase)
                # Budgets: acme spends its tenant budget on long answers, then globex keeps being served.
                acme_spend = [
                    await ask("acme", f"Budget question {i} from acme?", Reply(text=LONG), max_tokens=600)
                    for i in range(6)
                ]
                globex_spend = [
                    await ask("globex", f"Budget question {i} from globex?", Reply(text=LONG), max_tokens=600)
                    for i in range(3)
                ]
                ids = {a.id for a in answers}
                usage = await read_topic(settings, settings.topic("usage"), until=len(ids), timeout_s=90)
        finally:
            worker.stop()

    # Cache: identical prompts from two tenants are two misses; each repeat hits its own tenant's entry.
    assert (a1.tier, a1.text, b1.tier, b1.text) == ("cloud", "acme private answer", "cloud", "globex own answer")
    assert calls_after_first_two == 2, worker.tail()
    assert (a2.tier, a2.text, a2.route["cache"]["kind"]) == ("cache", "acme private answer", "exact")
    assert (b2.tier, b2.text, b2.route["cache"]["kind"]) == ("cache", "globex own answer", "exact")
    assert a2.route["cache"]["source_id"] == a1.id and b2.route["cache"]["source_id"] == b1.id
    for hit, own in ((a3, "acme private answer"), (b3, "globex own answer")):  # semantic hit or miss, never theirs
        assert hit.text == (own if hit.tier == "cache" else "hello from the simulator"), hit
    # Budgets: acme stops at its own limit; globex, same session name, is never refused.
    acme_ok = [a for a in acme_spend if a.status == "ok"]
    # Which of the six is refused depends on whether the previous answer's usage has settled (until it does, its
    # worst case stays reserved), so a refusal may come early and a later request may fit again; what must hold is
    # that acme is refused for budget and never spends past it.
    refused = [a for a in acme_spend if a.status == "rejected"]
    assert acme_ok and refused and all(a.reason == "budget" for a in refused)
    assert {a.reason for a in acme_spend if a.status == "rejected"} == {"budget"}  # its tenant's or its session's
    assert sum(a.cost_usd for a in acme_ok) <= ACME_BUDGET
    assert [a.status for a in globex_spend] == ["ok"] * 3 and all(a.cost_usd > 0.004 for a in globex_spend)
    # Metering: one usage record per request, each under its own tenant; the report's tenant rows match.
    assert sorted(u["id"] for u in usage) == sorted(ids)
    by_id = {a.id: a for a in answers}
    assert all(u["tenant"] == by_id[u["id"]].tenant and u["cost_usd"] == by_id[u["id"]].cost_usd for u in usage)
    report = build_report(usage)
    assert set(report.by["tenant"]) == {"acme", "globex"}
    for tenant in ("acme", "globex"):
        own = [u for u in usage if u["tenant"] == tenant]
        totals = report.by["tenant"][tenant]
        assert totals.requests == len(own) == sum(1 for a in answers if a.tenant == tenant)
        assert totals.cost_usd == sum(u["cost_usd"] for u in own)  # same order of additions: exact
        assert totals.completion_tokens == sum(a.usage.completion_tokens for a in answers if a.tenant == tenant)
    assert report.by["tenant"]["globex"].cost_usd >= sum(a.cost_usd for a in globex_spend)
