"""Per-session guard in the admit stage: runaway-loop breaker and budget reservation, settled from usage.

The admit role consumes ``sluice.requests`` and ``sluice.usage``, both keyed by session with the same
partition count, so one process is the single writer of each session's breaker and budget state (a Faust
table keyed by session): 50 concurrent requests against a nearly spent budget are decided one after another.
Reservations use the priciest model tier's price (the worst case, since routing happens later) and are settled
with the actual cost when the usage record arrives; an error settles what was actually spent.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from schemas.records import Request, dumps, now_ms
from streams.policy import session_breaker as breaker
from streams.policy.budget import BudgetLedger
from streams.policy.cache_policy import query_text
from streams.policy.cost import estimate_reservation
from streams.settings import Settings
from streams.stages.outgoing import Outgoing


@dataclass(frozen=True)
class GuardVerdict:
    allow: bool
    reason: str | None = None  # "breaker" | "budget"
    detail: str | None = None
    reserved_usd: float = 0.0


def breaker_config(settings: Settings) -> breaker.BreakerConfig:
    return breaker.BreakerConfig(
        max_requests=settings.breaker_max_requests,
        rate_window_ms=int(settings.breaker_rate_window_s * 1000),
        max_cost_usd=settings.breaker_max_cost_usd,
        cost_window_ms=int(settings.breaker_cost_window_s * 1000),
        max_repeats=settings.breaker_max_repeats,
        cooldown_ms=int(settings.breaker_cooldown_s * 1000),
    )


def session_key(tenant: str, session: str) -> str:
    """The state key of one tenant's session: session names are the client's choice, so two tenants may pick
    the same one, and must never share (or exhaust, or trip) each other's budget and breaker."""
    return f"{len(tenant)}:{tenant}/{session}"


def _limit(value: float) -> float | None:
    return None if value < 0 else value


class SessionGuard:
    def __init__(
        self, settings: Settings, sessions: MutableMapping[str, dict[str, Any]], worst_price: Callable[[], Any]
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.worst_price = worst_price
        self.config = breaker_config(settings)
        self.control = settings.topic("control")

    def _load(self, request_or_session: Request | str, tenant: str = "") -> tuple[breaker.SessionState, BudgetLedger]:
        session = request_or_session.session if isinstance(request_or_session, Request) else request_or_session
        if isinstance(request_or_session, Request):
            tenant = request_or_session.tenant
        saved = self.sessions.get(session_key(tenant, session)) or {}
        state = breaker.SessionState.from_dict(saved["breaker"]) if "breaker" in saved else None
        state = state or breaker.SessionState(session=session, tenant=tenant)
        ledger = BudgetLedger.from_dict(saved["budget"]) if "budget" in saved else BudgetLedger(key=session)
        ledger.set_limits(_limit(self.settings.session_budget_soft_usd), _limit(self.settings.session_budget_hard_usd))
        return state, ledger

    def _save(self, state: breaker.SessionState, ledger: BudgetLedger) -> None:
        key = session_key(state.tenant, state.session)
        self.sessions[key] = {"breaker": state.to_dict(), "budget": ledger.to_dict()}

    def admit(self, request: Request) -> tuple[GuardVerdict, list[Outgoing]]:
        """Breaker first (a looping agent is stopped even with budget left), then the budget reservation."""
        now = now_ms()
        state, ledger = self._load(request)
        out: list[Outgoing] = []
        if self.settings.breaker_enabled:
            decision = breaker.observe_request(
                state, now, breaker.prompt_hash(query_text(request.chat())), request_id=request.id, config=self.config
            )
            if decision.transition is not None:
                out.append(self._event(decision.transition.to_event()))
            if not decision.allow:
                self._save(state, ledger)
                return GuardVerdict(False, "breaker", decision.reason), out
        ledger.expire(now)
        amount = estimate_reservation(
            query_text(request.chat()) if len(request.chat()) == 1 else " ".join(m.content for m in request.chat()),
            request.max_tokens,
            self.worst_price(),
            overhead_tokens=self.settings.reservation_overhead_tokens,
        )
        verdict = ledger.reserve(request.id, amount, now)
        if verdict.soft_alert:
            out.append(self._budget_alert(request.session, request.tenant, ledger, now))
        self._save(state, ledger)
        if not verdict.ok:
            return GuardVerdict(False, "budget", verdict.reason), out
        return GuardVerdict(True, reserved_usd=amount), out

    def settle(self, usage: dict[str, Any]) -> list[Outgoing]:
        """A usage record for this session: settle the reservation, feed the cost and probe outcome to the breaker."""
        now = now_ms()
        session, tenant = str(usage["session"]), str(usage.get("tenant", ""))
        if session_key(tenant, session) not in self.sessions:
            return []
        state, ledger = self._load(session, tenant)
        cost = float(usage.get("cost_usd") or 0.0)
        out: list[Outgoing] = []
        settlement = ledger.settle(str(usage["id"]), cost, now)
        if settlement.soft_alert:
            out.append(self._budget_alert(session, tenant, ledger, now))
        if settlement.applied and self.settings.breaker_enabled:
            for decision in (
                breaker.probe_result(
                    state, now, usage.get("status") == "ok", request_id=str(usage["id"]), config=self.config
                ),
                breaker.observe_cost(state, now, cost, config=self.config),
            ):
                if decision.transition is not None:
                    out.append(self._event(decision.transition.to_event()))
        self._save(state, ledger)
        return out

    def release(self, request: Request) -> None:
        """The request will never reach a tier (rejected later in admission): free its reservation."""
        state, ledger = self._load(request)
        if ledger.release(request.id):
            self._save(state, ledger)

    def _event(self, event: dict[str, Any]) -> Outgoing:
        return Outgoing(self.control, str(event["session"]).encode(), dumps({"v": 1, "type": "breaker", **event}))

    def _budget_alert(self, session: str, tenant: str, ledger: BudgetLedger, now: int) -> Outgoing:
        return budget_alert(
            self.control, f"{session}#budget", ledger, now, scope="session", tenant=tenant, session=session
        )


def budget_alert(topic: str, key: str, ledger: BudgetLedger, now: int, **who: str) -> Outgoing:
    """A soft-limit alert on ``sluice.control``: ``who`` names the scope, tenant and (for sessions) session."""
    event = {
        "v": 1,
        "type": "budget_alert",
        **who,
        "spent_usd": round(ledger.spent, 6),
        "committed_usd": round(ledger.committed_usd, 6),
        "soft_usd": ledger.soft_usd,
        "hard_usd": ledger.hard_usd,
        "at_ms": now,
    }
    return Outgoing(topic, key.encode(), dumps(event))
