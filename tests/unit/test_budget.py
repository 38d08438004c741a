"""Budgets by reservation: single-writer ledger, idempotent settle/release, bounded overshoot, JSON state."""

from __future__ import annotations

import json
import random

import pytest

from streams.policy.budget import DAY_MS, BudgetLedger, period_key

T0 = 1_700_000_000_000


def roundtrip(ledger: BudgetLedger) -> BudgetLedger:
    return BudgetLedger.from_dict(json.loads(json.dumps(ledger.to_dict(), allow_nan=False)))


def test_unlimited_ledger_accepts_everything() -> None:
    ledger = BudgetLedger(key="s")
    for i in range(100):
        assert ledger.reserve(f"r{i}", 1e6, T0).ok
    assert ledger.remaining_usd is None
    assert ledger.reserved_usd == pytest.approx(1e8)


def test_reserve_rejects_over_hard_without_changing_state() -> None:
    ledger = BudgetLedger(hard_usd=1.0)
    assert ledger.reserve("a", 0.6, T0).ok
    v = ledger.reserve("b", 0.5, T0)
    assert (v.ok, v.reason) == (False, "budget")
    assert v.remaining_usd == pytest.approx(0.4)
    assert ledger.reserved == {"a": 0.6}
    assert ledger.reserve("c", 0.4, T0).ok  # an exact fit is allowed
    assert ledger.remaining_usd == pytest.approx(0.0)


def test_exact_fit_survives_float_noise() -> None:
    ledger = BudgetLedger(hard_usd=0.3)
    assert ledger.reserve("a", 0.1, T0).ok
    assert ledger.reserve("b", 0.2, T0).ok  # 0.1 + 0.2 > 0.3 in floats


def test_soft_alert_fires_once_per_period() -> None:
    ledger = BudgetLedger(soft_usd=0.5, hard_usd=1.0)
    assert not ledger.reserve("a", 0.3, T0).soft_alert
    assert ledger.reserve("b", 0.3, T0).soft_alert  # committed 0.6 >= 0.5
    assert not ledger.reserve("c", 0.1, T0).soft_alert
    ledger.release("c")
    assert not ledger.settle("a", 0.3, T0).soft_alert


def test_soft_alert_on_settle_when_actual_crosses() -> None:
    ledger = BudgetLedger(soft_usd=0.5)
    ledger.reserve("a", 0.1, T0)
    s = ledger.settle("a", 0.7, T0)
    assert s.soft_alert and s.applied and not s.over_hard
    assert s.overrun_usd == pytest.approx(0.6)


def test_settle_swaps_reservation_for_actual_and_is_idempotent() -> None:
    ledger = BudgetLedger(hard_usd=1.0)
    ledger.reserve("a", 0.5, T0)
    s = ledger.settle("a", 0.2, T0 + 10)
    assert (s.applied, s.cost_usd, s.released_usd, s.overrun_usd) == (True, 0.2, 0.5, 0.0)
    assert ledger.spent == pytest.approx(0.2) and ledger.reserved == {} and ledger.reserved_at == {}
    again = ledger.settle("a", 0.2, T0 + 20)
    assert not again.applied
    assert ledger.spent == pytest.approx(0.2)
    # a redelivered reserve of a settled request is a duplicate, not a new hold
    v = ledger.reserve("a", 0.5, T0 + 30)
    assert v.ok and v.duplicate and ledger.reserved == {}


def test_duplicate_reserve_holds_once() -> None:
    ledger = BudgetLedger(hard_usd=1.0)
    assert ledger.reserve("a", 0.7, T0).ok
    v = ledger.reserve("a", 0.7, T0)
    assert v.ok and v.duplicate and v.reserved_usd == 0.7
    assert ledger.reserved_usd == pytest.approx(0.7)


def test_release_is_idempotent_and_a_later_settle_still_counts() -> None:
    ledger = BudgetLedger(hard_usd=1.0)
    ledger.reserve("a", 0.4, T0)
    assert ledger.release("a") is True
    assert ledger.release("a") is False
    assert ledger.committed_usd == 0.0
    s = ledger.settle("a", 0.1, T0)  # e.g. a retried call that did cost something: count it honestly
    assert s.applied and s.released_usd == 0.0 and s.overrun_usd == pytest.approx(0.1)
    assert ledger.spent == pytest.approx(0.1)


def test_settle_without_reservation_counts_and_flags_over_hard() -> None:
    ledger = BudgetLedger(hard_usd=0.1)
    s = ledger.settle("unknown", 0.25, T0)
    assert s.applied and s.over_hard
    assert not ledger.reserve("next", 0.0001, T0).ok


def test_fifty_concurrent_reservations_at_a_nearly_spent_budget() -> None:
    hard, per_request = 1.0, 0.004
    ledger = BudgetLedger(hard_usd=hard)
    ledger.reserve("old", 0.99, T0)
    ledger.settle("old", 0.99, T0)
    verdicts = [ledger.reserve(f"r{i}", per_request, T0 + i) for i in range(50)]  # all in flight at once
    accepted = [f"r{i}" for i, v in enumerate(verdicts) if v.ok]
    assert len(accepted) == 2  # 0.99 + 2 * 0.004 <= 1.0 < 0.99 + 3 * 0.004
    assert all(v.reason == "budget" for v in verdicts if not v.ok)
    for rid in accepted:  # actual within the reservation: no overshoot at all
        ledger.settle(rid, per_request * 0.9, T0 + 100)
    assert ledger.spent <= hard


def test_overshoot_is_bounded_by_one_requests_overrun() -> None:
    hard, per_request = 1.0, 0.004
    ledger = BudgetLedger(hard_usd=hard)
    ledger.settle("old", 0.99, T0)
    accepted = [f"r{i}" for i in range(50) if ledger.reserve(f"r{i}", per_request, T0).ok]
    # one estimate was low: that request cost twice its reservation
    ledger.settle(accepted[0], per_request * 2, T0)
    for rid in accepted[1:]:
        ledger.settle(rid, per_request, T0)
    assert ledger.spent - hard <= per_request + 1e-12
    # a naive "spent < hard" check would have let all 50 through: 0.99 + 50 * 0.004 = 1.19


@pytest.mark.parametrize("seed", range(20))
def test_random_interleavings_keep_the_invariant(seed: int) -> None:
    rng = random.Random(seed)
    hard = 1.0
    ledger = BudgetLedger(hard_usd=hard, soft_usd=0.8)
    in_flight: dict[str, float] = {}
    overruns = 0.0
    alerts = 0
    for step in range(400):
        now = T0 + step
        op = rng.random()
        if op < 0.5:
            rid, amount = f"r{step}", rng.uniform(0.0, 0.05)
            v = ledger.reserve(rid, amount, now)
            alerts += v.soft_alert
            if v.ok:
                in_flight[rid] = amount
                assert ledger.committed_usd <= hard + 1e-9  # an accepted hold never passes the limit
        elif in_flight and op < 0.85:
            rid = rng.choice(sorted(in_flight))
            held = in_flight.pop(rid)
            actual = held * rng.uniform(0.0, 1.3)
            s = ledger.settle(rid, actual, now)
            alerts += s.soft_alert
            overruns += s.overrun_usd
            assert not ledger.settle(rid, actual, now).applied
        elif in_flight:
            rid = rng.choice(sorted(in_flight))
            del in_flight[rid]
            assert ledger.release(rid)
        if rng.random() < 0.05:
            ledger = roundtrip(ledger)
    assert ledger.spent <= hard + overruns + 1e-9
    assert alerts <= 1


def test_expired_reservations_are_dropped() -> None:
    ledger = BudgetLedger(hard_usd=1.0, reservation_ttl_ms=1000)
    ledger.reserve("lost", 0.9, T0)
    assert not ledger.reserve("b", 0.2, T0 + 500).ok
    assert ledger.reserve("c", 0.2, T0 + 1001).ok  # "lost" expired on the way
    assert "lost" not in ledger.reserved
    assert ledger.expire(T0 + 5000) == ["c"]


def test_daily_period_resets_spend_and_soft_alert() -> None:
    day0 = (T0 // DAY_MS) * DAY_MS
    late = day0 + DAY_MS - 1000  # one second before midnight
    ledger = BudgetLedger(key="tenant", soft_usd=0.5, hard_usd=1.0, period_ms=DAY_MS)
    assert ledger.settle("a", 0.9, late).soft_alert
    assert not ledger.reserve("b", 0.05, late).soft_alert  # once per period
    assert not ledger.reserve("c", 0.2, late).ok
    nxt = day0 + DAY_MS + 5
    v = ledger.reserve("c", 0.2, nxt)
    assert v.ok and ledger.period_start == day0 + DAY_MS
    assert ledger.spent == 0.0 and "b" in ledger.reserved  # reservations carry over
    assert ledger.reserve("d", 0.3, nxt).soft_alert  # 0.05 + 0.2 + 0.3 reaches soft again
    assert ledger.settle("b", 0.05, nxt).applied and ledger.spent == pytest.approx(0.05)  # lands in the new day
    assert period_key("tenant", nxt, DAY_MS) == f"tenant@{day0 + DAY_MS}"


def test_state_round_trips_through_json() -> None:
    ledger = BudgetLedger(key="s", soft_usd=0.5, hard_usd=2.0, period_ms=3_600_000, max_settled=50)
    ledger.reserve("a", 0.4, T0)
    ledger.reserve("b", 0.6, T0)
    ledger.settle("a", 0.3, T0)
    copy = roundtrip(ledger)
    assert copy.to_dict() == ledger.to_dict()
    assert not copy.settle("a", 0.3, T0 + 1).applied  # dedup survives a restart
    assert copy.settle("b", 0.5, T0 + 1).released_usd == 0.6
    assert BudgetLedger.from_dict({"hard_usd": 1}).hard_usd == 1.0


def test_a_row_leaves_out_fields_at_their_default_and_reads_back_the_same() -> None:
    """Most session rows have no limits and nothing open: those fields are not written (a quarter of a row)."""
    quiet = BudgetLedger(key="s")
    quiet.reserve("a", 0.2, T0)
    quiet.settle("a", 0.1, T0)
    assert set(quiet.to_dict()) == {"key", "spent", "settled"}
    full = BudgetLedger(key="t", soft_usd=0.5, hard_usd=2.0, period_ms=3_600_000, reservation_ttl_ms=60_000)
    full.reserve("b", 0.4, T0 + 3_600_000)
    full.reserve("c", 1.3, T0 + 3_600_000)
    assert full.soft_alerted and full.period_start
    for ledger in (quiet, full):
        copy = roundtrip(ledger)
        assert copy.to_dict() == ledger.to_dict()
        fields = ("soft_usd", "hard_usd", "period_ms", "period_start", "spent", "reserved", "reserved_at")
        assert all(getattr(copy, f) == getattr(ledger, f) for f in fields)
        assert (copy.soft_alerted, copy.reservation_ttl_ms) == (ledger.soft_alerted, ledger.reservation_ttl_ms)


def test_settled_ids_are_bounded() -> None:
    ledger = BudgetLedger(max_settled=10, settled_ttl_ms=60_000)
    for i in range(25):
        ledger.settle(f"r{i}", 0.01, T0 + i)
    assert len(ledger.settled) == 10
    assert not ledger.settle("r24", 0.01, T0 + 30).applied
    assert ledger.settle("r0", 0.01, T0 + 30).applied  # beyond the documented horizon: counted again
    ledger.settle("late", 0.0, T0 + 120_000)
    assert len(ledger.settled) == 1  # the ttl pruned the rest


@pytest.mark.parametrize("amount", [-0.01, float("nan"), float("inf")])
def test_bad_amounts_raise(amount: float) -> None:
    ledger = BudgetLedger(hard_usd=1.0)
    with pytest.raises(ValueError):
        ledger.reserve("a", amount, T0)
    with pytest.raises(ValueError):
        ledger.settle("a", amount, T0)
    with pytest.raises(ValueError):
        BudgetLedger(hard_usd=amount)
    with pytest.raises(ValueError):
        BudgetLedger(period_ms=0)


class _Spill(dict):  # type: ignore[type-arg]
    """An ``IdSpill`` over a plain dict (what a table-backed spill does, minus the table)."""

    def add(self, request_id: str, at: int) -> None:
        self[request_id] = at


def test_a_spilling_ledger_keeps_its_row_small_and_still_settles_each_id_once() -> None:
    spill = _Spill()
    ledger = BudgetLedger(key="hot", hard_usd=1000.0)
    ledger.spill_to(spill, keep=8)
    for i in range(500):
        assert ledger.reserve(f"r{i}", 0.02, T0 + i).ok
        assert ledger.settle(f"r{i}", 0.01, T0 + i).applied
    row = roundtrip(ledger).to_dict()
    assert len(row["settled"]["ids"]) == 8 and len(spill) == 492  # the row keeps the newest 8
    assert set(spill) | set(row["settled"]["ids"]) == {f"r{i}" for i in range(500)}
    assert spill["r0"] == T0  # settled at
    spent = ledger.spent
    for rid in ("r0", "r250", "r499"):  # spilled long ago, spilled recently, still in the row
        assert not ledger.settle(rid, 0.01, T0 + 600).applied
        assert ledger.reserve(rid, 0.02, T0 + 600).duplicate  # a redelivered request holds nothing again
    assert ledger.spent == spent and not ledger.reserved
    assert ledger.spent == pytest.approx(5.0)


def test_a_row_written_with_more_ids_moves_the_excess_at_the_next_settle() -> None:
    big = BudgetLedger(key="old")
    for i in range(100):
        big.settle(f"r{i}", 0.0, T0 + i)
    ledger, spill = roundtrip(big), _Spill()
    ledger.spill_to(spill, keep=10)
    assert not ledger.settle("r5", 0.0, T0 + 200).applied  # still known before anything moved
    assert ledger.settle("new", 0.0, T0 + 200).applied
    assert len(ledger.settled) == 10 and len(spill) == 91
    assert not ledger.settle("r5", 0.0, T0 + 201).applied  # now found in the spill
    with pytest.raises(ValueError):
        ledger.spill_to(spill, keep=0)
