"""Tenant-wide budgets: a second hop keyed by tenant, so one partition owner reserves for the whole tenant.

Requests are keyed by session, so many admit partitions see one tenant's traffic; a tenant ledger there would
have many writers and could overshoot. For tenants with a budget (``SLUICE_TENANTS_FILE``: ``budget_soft_usd``,
``budget_hard_usd``) the admit stage forwards the job to ``sluice.tenant`` (key: tenant) instead of
``sluice.lookup``; this stage reserves against the tenant's ledger and forwards or rejects; usage records are
forwarded here too and settle it. The trade-off: one partition carries all of a hot tenant's budgeted traffic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import replace
from typing import Any

import orjson

from schemas.parse import InvalidMessage, job_from_dict
from schemas.records import Response, dumps, now_ms
from streams.policy.budget import BudgetLedger
from streams.policy.cost import estimate_reservation
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.guard import budget_alert
from streams.stages.outgoing import Outgoing, Source, dead_letter, response_messages
from streams.stages.parsed_rows import ParsedRows
from streams.stages.spilled_ids import SpilledIds

TenantBudgets = Mapping[str, tuple[float | None, float | None]]  # tenant -> (soft, hard) USD


def forward_job(settings: Settings, tenant: str, job: dict[str, Any]) -> Outgoing:
    return Outgoing(settings.topic("tenant"), tenant.encode(), dumps({"v": 1, "kind": "job", "job": job}))


def forward_usage(settings: Settings, tenant: str, usage: dict[str, Any]) -> Outgoing:
    return Outgoing(settings.topic("tenant"), tenant.encode(), dumps({"v": 1, "kind": "usage", "usage": usage}))


class TenantBudgetStage:
    def __init__(
        self,
        settings: Settings,
        ledgers: MutableMapping[str, dict[str, Any]],
        budgets: Callable[[], TenantBudgets],
        worst_price: Callable[[], Any],
        spilled: MutableMapping[str, Any] | None = None,
    ) -> None:
        """``spilled``: the table of settled ids the tenant rows no longer hold (see streams/stages/spilled_ids.py);
        None keeps them all in the rows (tests)."""
        self.settings = settings
        self.ledgers = ledgers
        horizon_ms = int(settings.budget_dedup_horizon_s * 1000)
        self.spilled = None if spilled is None else SpilledIds(spilled, horizon_ms)
        self.budgets = budgets
        self.worst_price = worst_price
        self.counts: Counter[str] = Counter()
        self.trail = DecisionTrail(settings)
        self._parsed: ParsedRows[BudgetLedger] = ParsedRows()  # a hot tenant's ledger is not re-parsed per request

    def _ledger(self, tenant: str, partition: int | None, created_at: Any) -> BudgetLedger:
        saved = self.ledgers.get(tenant)
        ledger = self._parsed.take(tenant, saved)
        if ledger is None:
            ledger = BudgetLedger.from_dict(saved) if saved else BudgetLedger(key=f"tenant:{tenant}")
        soft, hard = self.budgets().get(tenant, (None, None))
        ledger.set_limits(soft, hard)
        if self.spilled is not None:
            ledger.spill_to(self.spilled.view(tenant, partition, created_at), max(1, self.settings.budget_row_ids))
        return ledger

    async def handle(self, raw: bytes, source: Source) -> list[Outgoing]:
        try:
            message = orjson.loads(raw)
            kind = message["kind"]
            if kind == "usage":
                return self._settle(message["usage"], source.partition)
            job = job_from_dict(message["job"])
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidMessage) as exc:
            reason = exc.reason if isinstance(exc, InvalidMessage) else "malformed_tenant_message"
            self.counts[f"deadletter:{reason}"] += 1
            return [dead_letter(self.settings.topic("deadletter"), raw, source, InvalidMessage(reason, str(exc)))]
        request, now = job.request, now_ms()
        ledger = self._ledger(request.tenant, source.partition, request.created_at)
        ledger.expire(now)
        text = " ".join(m.content for m in request.chat())
        amount = estimate_reservation(
            text, request.max_tokens, self.worst_price(), overhead_tokens=self.settings.reservation_overhead_tokens
        )
        verdict = ledger.reserve(request.id, amount, now)
        self._save(request.tenant, ledger)
        out = [self._alert(request.tenant, ledger, now)] if verdict.soft_alert else []
        if not verdict.ok:
            self.counts["rejected:budget"] += 1
            rejected = Response.rejected(request, "budget")
            rejected = replace(rejected, route={**rejected.route, "detail": "tenant"})
            out += self.trail.tenant_budget(request, False, amount)
            return out + response_messages(rejected, self.settings.topic("responses"), request.reply_to)
        self.counts["admitted"] += 1
        out += self.trail.tenant_budget(request, True, amount)
        return [*out, Outgoing(self.settings.topic("lookup"), job.key.encode(), dumps(job))]

    def _settle(self, usage: dict[str, Any], partition: int | None) -> list[Outgoing]:
        tenant, now = str(usage["tenant"]), now_ms()
        ledger = self._ledger(tenant, partition, usage.get("created_at"))
        settlement = ledger.settle(str(usage["id"]), float(usage.get("cost_usd") or 0.0), now)
        self._save(tenant, ledger)
        return [self._alert(tenant, ledger, now)] if settlement.soft_alert else []

    def _save(self, tenant: str, ledger: BudgetLedger) -> None:
        saved = ledger.to_dict()
        self.ledgers[tenant] = saved
        self._parsed.put(tenant, saved, ledger)

    def _alert(self, tenant: str, ledger: BudgetLedger, now: int) -> Outgoing:
        topic = self.settings.topic("control")
        return budget_alert(topic, f"tenant:{tenant}#budget", ledger, now, scope="tenant", tenant=tenant)
