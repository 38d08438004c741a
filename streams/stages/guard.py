"""Per-session guard in the admit stage: runaway-loop breaker and budget reservation, settled from usage.

The admit role consumes ``sluice.requests`` and ``sluice.usage``, both keyed by session with the same
partition count, so one process is the single writer of each session's breaker and budget state (a row per
session: in a Faust table when it must survive a restart, else in memory, see session_rows.py): 50 concurrent
requests against a nearly spent budget are decided one after another.
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
from streams.stages.parsed_rows import ParsedRows
from streams.stages.session_rows import SessionRows
from streams.stages.spilled_ids import SpilledIds


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
        self,
        settings: Settings,
        sessions: MutableMapping[str, dict[str, Any]],
        worst_price: Callable[[], Any],
        spilled: MutableMapping[str, Any] | None = None,
    ) -> None:
        """``sessions``: the changelog-backed table of the rows that must survive a restart (see
        streams/stages/session_rows.py). ``spilled``: the table of settled ids the session rows no longer hold (see
        streams/stages/spilled_ids.py); None keeps them all in the rows (tests)."""
        self.settings = settings
        horizon_ms = int(settings.budget_dedup_horizon_s * 1000)
        self.spilled = None if spilled is None else SpilledIds(spilled, horizon_ms)
        self.worst_price = worst_price
        self.config = breaker_config(settings)
        self.control = settings.topic("control")
        self.rows = SessionRows(settings, sessions)  # durable rows in the table, the rest in memory
        self._parsed: ParsedRows[tuple[breaker.SessionState, BudgetLedger]] = ParsedRows()

    def _load(
        self,
        request_or_session: Request | str,
        tenant: str = "",
        partition: int | None = None,
        created_at: Any = None,
    ) -> tuple[breaker.SessionState, BudgetLedger]:
        """``partition`` and ``created_at``: where the message being handled came from and when it was made (the
        spilled settled ids' stream time)."""
        session = request_or_session.session if isinstance(request_or_session, Request) else request_or_session
        if isinstance(request_or_session, Request):
            tenant = request_or_session.tenant
        key = session_key(tenant, session)
        saved = self.rows.get(key) or {}
        live = self._parsed.take(key, saved)
        if live is not None:
            state, ledger = live
        else:
            restored = breaker.SessionState.from_dict(saved["breaker"]) if "breaker" in saved else None
            state = restored or breaker.SessionState(session=session, tenant=tenant)
            ledger = BudgetLedger.from_dict(saved["budget"]) if "budget" in saved else BudgetLedger(key=session)
            soft, hard = self.settings.session_budget_soft_usd, self.settings.session_budget_hard_usd
            ledger.set_limits(_limit(soft), _limit(hard))
        if self.spilled is not None:
            keep = max(1, self.settings.budget_row_ids)
            if ledger.soft_usd is None and ledger.hard_usd is None:
                # No limits: the settled ids guard only the breaker's cost window against a redelivery, and the
                # row lives in memory (session_rows.py). The newest ids in the row are enough; none are spilled.
                ledger.spill_to(None, keep)
            else:
                ledger.spill_to(self.spilled.view(key, partition, created_at), keep)
        return state, ledger

    def _save(self, state: breaker.SessionState, ledger: BudgetLedger, now: int, partition: int | None) -> None:
        """``at`` and ``p`` (the partition whose changelog holds the key) let :meth:`sweep` forget idle sessions."""
        key = session_key(state.tenant, state.session)
        saved = {"breaker": state.to_dict(), "budget": ledger.to_dict(), "at": now, "p": partition}
        self.rows.put(key, saved, partition)
        self._parsed.put(key, saved, (state, ledger))

    def sweep(self, partition: int, now: int) -> int:
        """Forget idle sessions of ``partition`` (see streams/stages/session_rows.py); how many."""
        return self.rows.sweep(partition, now)

    def admit(
        self, request: Request, partition: int | None = None, settle_usd: float | None = None
    ) -> tuple[GuardVerdict, list[Outgoing]]:
        """Breaker first (a looping agent is stopped even with budget left), then the budget reservation.
        ``partition``: the one the request came from (see :meth:`sweep`). ``settle_usd``: the request is answered
        right here (an exact cache hit) at this cost, so it is settled at once, in the same state write, and
        the usage record that follows finds nothing left to settle."""
        now = now_ms()
        if partition is not None:
            self.sweep(partition, now)
        state, ledger = self._load(request, partition=partition, created_at=request.created_at)
        out: list[Outgoing] = []
        if self.settings.breaker_enabled:
            decision = breaker.observe_request(
                state, now, breaker.prompt_hash(query_text(request.chat())), request_id=request.id, config=self.config
            )
            if decision.transition is not None:
                out.append(self._event(decision.transition.to_event()))
            if not decision.allow:
                self._save(state, ledger, now, partition)
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
        if verdict.ok and settle_usd is not None:
            out += self._settled(state, ledger, request.id, settle_usd, True, now) or []
        self._save(state, ledger, now, partition)
        if not verdict.ok:
            return GuardVerdict(False, "budget", verdict.reason), out
        return GuardVerdict(True, reserved_usd=amount), out

    def settle(self, usage: dict[str, Any], partition: int | None = None) -> list[Outgoing]:
        """A usage record for this session: settle the reservation, feed the cost and probe outcome to the breaker.
        ``partition``: the one the record came from (usage and requests are both keyed by session)."""
        now = now_ms()
        if partition is not None:
            self.sweep(partition, now)
        session, tenant = str(usage["session"]), str(usage.get("tenant", ""))
        if session_key(tenant, session) not in self.rows:
            return []
        state, ledger = self._load(session, tenant, partition, usage.get("created_at"))
        cost = float(usage.get("cost_usd") or 0.0)
        out = self._settled(state, ledger, str(usage["id"]), cost, usage.get("status") == "ok", now)
        if out is None:  # settled before: nothing changed, the row stays as it is
            key = session_key(tenant, session)
            self._parsed.put(key, self.rows.get(key), (state, ledger))
            return []
        self._save(state, ledger, now, partition)
        return out

    def _settled(
        self, state: breaker.SessionState, ledger: BudgetLedger, request_id: str, cost: float, ok: bool, now: int
    ) -> list[Outgoing] | None:
        """Settle one request's reservation and feed its cost and probe outcome to the breaker: the events to
        send, or None when the id was settled before (nothing changed, so nothing needs writing)."""
        settlement = ledger.settle(request_id, cost, now)
        if not settlement.applied:
            return None
        out: list[Outgoing] = []
        if settlement.soft_alert:
            out.append(self._budget_alert(state.session, state.tenant, ledger, now))
        if self.settings.breaker_enabled:
            for decision in (
                breaker.probe_result(state, now, ok, request_id=request_id, config=self.config),
                breaker.observe_cost(state, now, cost, config=self.config),
            ):
                if decision.transition is not None:
                    out.append(self._event(decision.transition.to_event()))
        return out

    def release(self, request: Request, partition: int | None = None) -> None:
        """The request will never reach a tier (rejected later in admission): free its reservation."""
        state, ledger = self._load(request, partition=partition, created_at=request.created_at)
        if ledger.release(request.id):
            self._save(state, ledger, now_ms(), partition)

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
