"""The meter's ledger stays within its dedup horizon while running totals stay exact: pruned usage is rolled up
per partition, a restart rebuilds rollups + ledger without counting anything twice (also after a crash between a
rollup and its deletions), late arrivals count once, and the costs snapshot re-publishes only what changed."""

from __future__ import annotations

import orjson

from schemas.records import Response, Usage, dumps
from streams.policy.token_count import count_tokens
from streams.settings import Settings
from streams.stages.meter import MeterStage
from streams.stages.meter_horizon import entry_place
from streams.stages.outgoing import Source
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
T0 = 1_800_000_000_000
SECOND = 1000


async def _ignore(outs: list) -> None:
    del outs


def _stage(ledger: dict, rollups: dict, horizon_s: float = 60.0) -> MeterStage:
    settings = Settings(topic_prefix="sx", meter_dedup_horizon_s=horizon_s)
    return MeterStage(settings, ledger, lambda: FRONTIER, count_tokens, rollups)


def _response(i: int, at: int, session: str = "s") -> Response:
    return Response(
        id=f"r{i}",
        tenant="acme" if i % 3 else "globex",
        session=f"{session}{i % 4}",
        status="ok",
        text="answer",
        tier="cloud",
        model="gpt-4o",
        usage=Usage(100 + i, 10 + i),
        cost_usd=0.001 * (i + 1),
        latency_ms=50.0 + i,
        created_at=at,
    )


async def _meter(stage: MeterStage, responses: list[Response], partition: int = 0) -> None:
    for r in responses:
        await stage.handle(dumps(r), Source("sx.responses", partition, 0), _ignore)


def _totals_of(ids: range) -> tuple[int, float, int]:
    return len(ids), round(sum(0.001 * (i + 1) for i in ids), 9), sum(100 + i for i in ids)


def _totals(stage: MeterStage) -> tuple[int, float, int]:
    overall = stage.aggregates.overall
    return overall.requests, round(overall.cost_usd, 9), overall.prompt_tokens


async def test_the_ledger_keeps_the_horizon_and_totals_stay_exact_across_a_restart() -> None:
    ledger: dict = {}
    rollups: dict = {}
    stage = _stage(ledger, rollups)
    responses = [_response(i, T0 + i * 5 * SECOND) for i in range(200)]  # 1,000 s of traffic, 60 s horizon
    await _meter(stage, responses)
    expected = _totals_of(range(200))
    assert _totals(stage) == expected
    assert len(ledger) < 40  # about 60 s of entries (12), plus what the last prune rolled up
    assert stage.counts["pruned"] > 150 and set(rollups) == {"0"}
    acme = stage.aggregates.running[("tenant", "acme")].requests

    restarted = _stage(ledger, rollups)  # a new process with the recovered tables
    restarted.rebuild()
    assert _totals(restarted) == expected
    assert restarted.aggregates.running[("tenant", "acme")].requests == acme
    await _meter(restarted, responses[-3:])  # redeliveries inside the horizon: counted once
    assert _totals(restarted) == expected


async def test_a_crash_between_a_rollup_and_its_deletions_counts_nothing_twice() -> None:
    ledger: dict = {}
    rollups: dict = {}
    stage = _stage(ledger, rollups)
    await _meter(stage, [_response(i, T0 + i * 5 * SECOND) for i in range(100)])
    before = _totals(stage)
    # The last prune rolled entries up but deletes them only at the next one: the ledger still holds them.
    upto = rollups["0"]["upto"]
    assert any(entry_place(entry)[1] < upto for entry in ledger.values())
    restarted = _stage(ledger, rollups)  # as if the process died right after writing the rollup
    restarted.rebuild()
    assert _totals(restarted) == before
    await _meter(restarted, [_response(i, T0 + i * 5 * SECOND) for i in range(100, 120)])
    assert all(entry_place(entry)[1] >= upto for entry in ledger.values())  # the next prune deleted them
    assert _totals(restarted) == _totals_of(range(120))


async def test_late_arrivals_count_once_and_a_redelivery_past_the_horizon_counts_again() -> None:
    ledger: dict = {}
    rollups: dict = {}
    stage = _stage(ledger, rollups)
    await _meter(stage, [_response(i, T0 + i * 5 * SECOND) for i in range(100)])
    late = _response(500, T0)  # created long before the watermark, metered only now
    await _meter(stage, [late])
    assert _totals(stage)[0] == 101
    restarted = _stage(ledger, rollups)
    restarted.rebuild()
    assert _totals(restarted)[0] == 101
    await _meter(restarted, [_response(0, T0)])  # r0 left the ledger long ago: the documented trade-off
    assert _totals(restarted)[0] == 102


async def test_sessions_idle_past_the_horizon_leave_the_running_totals_but_tenants_keep_theirs() -> None:
    stage = _stage({}, {})
    await _meter(stage, [_response(i, T0 + i * SECOND, session="old") for i in range(8)])
    await _meter(stage, [_response(i, T0 + 200 * SECOND + i * 20 * SECOND, session="new") for i in range(8, 16)])
    sessions = {value for dim, value in stage.aggregates.running if dim == "session"}
    assert sessions and all(s.startswith("new") for s in sessions)
    tenants = stage.aggregates.running
    assert tenants[("tenant", "acme")].requests + tenants[("tenant", "globex")].requests == 16


async def test_horizon_zero_keeps_every_entry() -> None:
    ledger: dict = {}
    stage = _stage(ledger, {}, horizon_s=0)
    await _meter(stage, [_response(i, T0 + i * 60 * SECOND) for i in range(50)])
    assert len(ledger) == 50 and stage.counts["pruned"] == 0


async def test_costs_snapshot_republishes_only_changed_running_totals() -> None:
    stage = _stage({}, {})
    await _meter(stage, [_response(i, T0 + i) for i in range(6)])
    first = [orjson.loads(o.value) for o in stage.snapshot(T0 + 10 * SECOND)]
    running = {(c["dim"], c["value"]) for c in first if c["window_start"] is None}
    assert ("tenant", "acme") in running and ("session", "s0") in running
    await _meter(stage, [_response(7, T0 + 20 * SECOND)])  # acme, session s3, tier cloud, model gpt-4o
    second = [orjson.loads(o.value) for o in stage.snapshot(T0 + 30 * SECOND)]
    again = {(c["dim"], c["value"]) for c in second if c["window_start"] is None}
    assert again == {("all", "all"), ("tenant", "acme"), ("session", "s3"), ("tier", "cloud"), ("model", "gpt-4o")}


async def test_windows_keep_the_last_two_minutes_and_the_snapshot_sends_only_changed_ones() -> None:
    """Thousands of sessions must not make each record rebuild the window map (a flat-out bench spent 43% of the
    worker's CPU there) nor add a window each; a snapshot re-sends only totals and windows that changed."""
    stage = _stage({}, {}, horizon_s=0)
    minute = 60 * SECOND
    await _meter(stage, [_response(i, T0 + i, session=f"x{i}-") for i in range(5000)])  # 5,000 sessions
    assert len({k[2] for k in stage.aggregates.windows}) == 1  # one minute...
    assert not any(k[0] == "session" for k in stage.aggregates.windows)  # ...and no window per session
    first = [orjson.loads(o.value) for o in stage.snapshot(T0 + 10 * SECOND)]
    assert sum(1 for c in first if c["dim"] == "session") == 5000  # each session's running totals, once
    assert {(c["dim"], c["value"]) for c in first if c["window_start"] is not None} == {
        ("tenant", "acme"),
        ("tenant", "globex"),
        ("tier", "cloud"),
        ("model", "gpt-4o"),
    }
    assert [orjson.loads(o.value)["dim"] for o in stage.snapshot(T0 + 20 * SECOND)] == ["all"]  # none changed

    await _meter(stage, [_response(6000, T0 + minute)])  # the next minute (globex)
    await _meter(stage, [_response(6001, T0 + 2 * minute)])  # and the one after (acme)
    start = T0 - T0 % minute
    assert {k[2] for k in stage.aggregates.windows} == {start + minute, start + 2 * minute}  # the oldest is gone
    changed = [orjson.loads(o.value) for o in stage.snapshot(T0 + 2 * minute + SECOND)]
    assert {(c["value"], c["window_start"]) for c in changed if c["dim"] == "tenant" and c["window_start"]} == {
        ("globex", start + minute),
        ("acme", start + 2 * minute),
    }


async def test_compact_entries_survive_the_changelog_and_old_dict_entries_still_count() -> None:
    ledger: dict = {}
    rollups: dict = {}
    stage = _stage(ledger, rollups)
    responses = [_response(i, T0 + i * 5 * SECOND) for i in range(100)]
    await _meter(stage, responses)
    entry = next(iter(ledger.values()))
    usage = stage.usage_of(responses[-1])
    assert isinstance(entry, list) and len(orjson.dumps(entry)) * 2 < len(orjson.dumps(usage))
    # As recovered from the changelog (JSON), plus one entry in the earlier layout (the whole usage record).
    recovered = {k: orjson.loads(orjson.dumps(v)) for k, v in ledger.items()}
    old = _response(100, T0 + 100 * 5 * SECOND)
    recovered[old.id] = {**stage.usage_of(old), "_p": 0, "_t": old.created_at}
    restarted = _stage(recovered, orjson.loads(orjson.dumps(rollups)))
    restarted.rebuild()
    assert _totals(restarted) == _totals_of(range(101))
    await _meter(restarted, [old, *responses[-3:]])  # redeliveries of both layouts: counted once
    await _meter(restarted, [_response(i, T0 + i * 5 * SECOND) for i in range(101, 130)])  # prunes both layouts
    assert _totals(restarted) == _totals_of(range(130)) and old.id not in recovered
