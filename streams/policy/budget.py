"""Race-free budgets by reservation, for a single writer per key (the partition owner of a session or tenant).

Why reservations: requests are admitted before their cost is known. Checking only ``spent`` would let every
request in flight pass at a nearly spent budget (50 concurrent requests → 50× overshoot). Instead admission
*reserves* the worst case (``cost.estimate_reservation``) and the meter later *settles* the actual cost.

Guarantee (single writer, operations applied one at a time): every accepted ``reserve`` keeps
``spent + reserved <= hard``. ``settle`` swaps a reservation for the actual cost, so ``spent`` can pass ``hard``
only by the sum of *overruns* (actual − reserved, when positive) plus any cost settled without a reservation.
With worst-case reservations (actual ≤ reserved) the hard limit is never exceeded; if one estimate is low, the
overshoot is at most that request's overrun — not one request per concurrent caller.

API (``now`` is epoch ms everywhere; nothing reads a clock)
- ``BudgetLedger(key="", soft_usd=None, hard_usd=None, period_ms=None, ...)``; None limit = unlimited
- ``.reserve(request_id, amount_usd, now) -> Verdict``: ok, or rejected with reason ``"budget"``; sets
  ``soft_alert`` once per period when ``spent + reserved`` first reaches ``soft_usd``; idempotent per request id
- ``.settle(request_id, actual_usd, now) -> Settlement``: release the reservation, add the actual cost;
  a second settle of the same id is a no-op (``applied=False``); a settle with no reservation still counts
- ``.release(request_id) -> bool``: the request failed before costing anything; drop its reservation (idempotent)
- ``.expire(now) -> list[str]``: drop reservations older than ``reservation_ttl_ms`` (a lost settle/release)
- ``.set_limits(soft_usd, hard_usd)``, ``.committed_usd``, ``.remaining_usd``
- ``.to_dict()`` / ``BudgetLedger.from_dict(d)``: JSON-able state for a changelog-backed table
- ``period_key(key, now, period_ms) -> str``: ``"key@<period start>"`` for agents that prefer one table row per
  period to the ledger's own roll-over (``period_ms`` set: ``spent`` and the soft alert reset at each period start;
  reservations carry over and their cost lands in the period that settles them)

Bounds: settled ids are kept in a :class:`~streams.policy.seen_ids.SeenIds` of at most ``max_settled`` ids
(default 10,000) no older than ``settled_ttl_ms`` (default 24 h): a duplicate settle arriving beyond that horizon
would be counted again. Reservations live at most ``reservation_ttl_ms`` (default 15 min).

A ledger that lives in a table row is rewritten whole on every reserve and settle, so a busy key (a hot tenant)
would write all its settled ids each time (10,000 ids: ~450 kB per write). ``spill_to(spill, keep)`` keeps only
the newest ``keep`` ids in the row and hands older ones to ``spill`` (an :class:`IdSpill`: one small row per id,
forgotten by its owner after its own horizon); duplicates are looked up in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from streams.policy.aggregates import window_start
from streams.policy.seen_ids import SeenIds

EPS: Final = 1e-9  # USD: float noise must not reject an exact fit
DAY_MS: Final = 86_400_000
RESERVATION_TTL_MS: Final = 15 * 60_000  # an unsettled reservation is released after this


@dataclass(frozen=True)
class Verdict:
    """Outcome of ``reserve``. ``remaining_usd`` is hard − spent − reserved afterwards (None: no hard limit)."""

    ok: bool
    reason: str | None = None  # "budget" when rejected
    soft_alert: bool = False  # this call took the ledger to its soft limit (once per period)
    duplicate: bool = False  # id already reserved or settled: nothing changed, nothing charged twice
    reserved_usd: float = 0.0
    remaining_usd: float | None = None


@dataclass(frozen=True)
class Settlement:
    """Outcome of ``settle``: ``applied`` False means a duplicate (already settled), nothing changed."""

    applied: bool
    cost_usd: float = 0.0
    released_usd: float = 0.0  # the reservation this settle replaced (0: there was none)
    overrun_usd: float = 0.0  # max(0, cost − reservation): the only way spend passes the hard limit
    soft_alert: bool = False
    over_hard: bool = False  # spent now exceeds hard_usd


class IdSpill(Protocol):
    """Where a ledger's older settled ids go when its row keeps only the newest."""

    def __contains__(self, request_id: object) -> bool: ...

    def add(self, request_id: str, at: int) -> None: ...


def period_key(key: str, now: int, period_ms: int) -> str:
    return f"{key}@{window_start(now, period_ms)}"


def _check_amount(amount: float) -> float:
    amount = float(amount)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"amount must be a finite, non-negative USD value, not {amount!r}")
    return amount


@dataclass
class BudgetLedger:
    """Spend and reservations of one key. Mutable; not thread-safe by design (one writer per key)."""

    key: str = ""
    soft_usd: float | None = None
    hard_usd: float | None = None
    period_ms: int | None = None
    period_start: int = 0
    spent: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)  # request id -> USD held
    reserved_at: dict[str, int] = field(default_factory=dict)  # request id -> epoch ms reserved
    soft_alerted: bool = False
    reservation_ttl_ms: int = RESERVATION_TTL_MS
    max_settled: int = 10_000
    settled_ttl_ms: int = DAY_MS
    settled: SeenIds = field(init=False)
    spill: IdSpill | None = field(default=None, repr=False, compare=False)  # not part of the row: see spill_to

    def __post_init__(self) -> None:
        if self.period_ms is not None and self.period_ms <= 0:
            raise ValueError("period_ms must be positive")
        self.set_limits(self.soft_usd, self.hard_usd)
        self.settled = SeenIds(self.max_settled, self.settled_ttl_ms)

    def set_limits(self, soft_usd: float | None, hard_usd: float | None) -> None:
        for v in (soft_usd, hard_usd):
            if v is not None:
                _check_amount(v)
        self.soft_usd, self.hard_usd = soft_usd, hard_usd

    def spill_to(self, spill: IdSpill | None, keep: int) -> None:
        """Keep only the newest ``keep`` settled ids in this ledger (its row); older ones go to ``spill`` (None:
        they are forgotten, for a ledger whose spend decides nothing).

        Ids over the limit (a row written before, with a larger limit) move at the next settle."""
        if keep < 1:
            raise ValueError("keep must be positive")
        self.spill, self.max_settled, self.settled.max_size = spill, keep, keep

    def _seen(self, request_id: str) -> bool:
        return request_id in self.settled or (self.spill is not None and request_id in self.spill)

    @property
    def reserved_usd(self) -> float:
        return sum(self.reserved.values())

    @property
    def committed_usd(self) -> float:
        """Spent plus held: what the hard limit is checked against."""
        return self.spent + self.reserved_usd

    @property
    def remaining_usd(self) -> float | None:
        return None if self.hard_usd is None else self.hard_usd - self.committed_usd

    def _roll(self, now: int) -> None:
        if self.period_ms is None:
            return
        start = window_start(now, self.period_ms)
        if start > self.period_start:
            self.period_start, self.spent, self.soft_alerted = start, 0.0, False

    def _soft_crossed(self, level: float) -> bool:
        if self.soft_usd is None or self.soft_alerted or level + EPS < self.soft_usd:
            return False
        self.soft_alerted = True
        return True

    def expire(self, now: int) -> list[str]:
        """Drop reservations older than ``reservation_ttl_ms``: their settle or release was lost."""
        horizon = now - self.reservation_ttl_ms
        stale = [rid for rid, at in self.reserved_at.items() if at < horizon]
        for rid in stale:
            self.release(rid)
        return stale

    def reserve(self, request_id: str, amount_usd: float, now: int) -> Verdict:
        """Hold ``amount_usd`` for ``request_id`` if ``spent + reserved + amount <= hard``."""
        amount = _check_amount(amount_usd)
        self._roll(now)
        self.expire(now)
        if request_id in self.reserved or self._seen(request_id):
            held = self.reserved.get(request_id, 0.0)
            return Verdict(True, duplicate=True, reserved_usd=held, remaining_usd=self.remaining_usd)
        after = self.committed_usd + amount
        if self.hard_usd is not None and after > self.hard_usd + EPS:
            return Verdict(False, reason="budget", remaining_usd=self.remaining_usd)
        self.reserved[request_id] = amount
        self.reserved_at[request_id] = int(now)
        alert = self._soft_crossed(after)
        return Verdict(True, soft_alert=alert, reserved_usd=amount, remaining_usd=self.remaining_usd)

    def settle(self, request_id: str, actual_usd: float, now: int) -> Settlement:
        """Replace the reservation by the actual cost; a repeated settle of the same id changes nothing."""
        actual = _check_amount(actual_usd)
        self._roll(now)
        if self.spill is not None and request_id in self.spill:
            return Settlement(False)
        if not self.settled.add(request_id, now, None if self.spill is None else self.spill.add):
            return Settlement(False)
        held = self.reserved.pop(request_id, 0.0)
        self.reserved_at.pop(request_id, None)
        self.spent += actual
        over_hard = self.hard_usd is not None and self.spent > self.hard_usd + EPS
        return Settlement(
            True,
            cost_usd=actual,
            released_usd=held,
            overrun_usd=max(0.0, actual - held),
            soft_alert=self._soft_crossed(self.spent),
            over_hard=over_hard,
        )

    def release(self, request_id: str) -> bool:
        """Drop the reservation of a request that failed without cost; True if there was one."""
        self.reserved_at.pop(request_id, None)
        return self.reserved.pop(request_id, None) is not None

    def to_dict(self) -> dict[str, Any]:
        """The row; fields at their default (no limit, nothing reserved) are left out, as from_dict reads them: most
        session rows have no limits and nothing open, and the admit stage holds one per live session."""
        d: dict[str, Any] = {"key": self.key, "spent": self.spent, "settled": self.settled.to_dict()}
        if self.soft_usd is not None:
            d["soft_usd"] = self.soft_usd
        if self.hard_usd is not None:
            d["hard_usd"] = self.hard_usd
        if self.period_ms is not None:
            d["period_ms"] = self.period_ms
        if self.period_start:
            d["period_start"] = self.period_start
        if self.reserved:
            d["reserved"] = dict(self.reserved)
        if self.reserved_at:
            d["reserved_at"] = dict(self.reserved_at)
        if self.soft_alerted:
            d["soft_alerted"] = True
        if self.reservation_ttl_ms != RESERVATION_TTL_MS:
            d["reservation_ttl_ms"] = self.reservation_ttl_ms
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetLedger:
        def opt(v: Any) -> float | None:
            return None if v is None else float(v)

        ledger = cls(
            key=str(d.get("key", "")),
            soft_usd=opt(d.get("soft_usd")),
            hard_usd=opt(d.get("hard_usd")),
            period_ms=None if d.get("period_ms") is None else int(d["period_ms"]),
            period_start=int(d.get("period_start", 0)),
            spent=float(d.get("spent", 0.0)),
            reserved={str(k): float(v) for k, v in (d.get("reserved") or {}).items()},
            reserved_at={str(k): int(v) for k, v in (d.get("reserved_at") or {}).items()},
            soft_alerted=bool(d.get("soft_alerted", False)),
            reservation_ttl_ms=int(d.get("reservation_ttl_ms", RESERVATION_TTL_MS)),
        )
        if d.get("settled"):
            ledger.settled = SeenIds.from_dict(d["settled"])
            ledger.max_settled = ledger.settled.max_size
            ledger.settled_ttl_ms = ledger.settled.ttl_ms or DAY_MS
        return ledger
