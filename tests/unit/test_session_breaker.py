"""The per-session runaway-loop breaker, driven by explicit timestamps (no time passes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.policy.session_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    SessionState,
    control_allows,
    cosine,
    force_open,
    observe_cost,
    observe_request,
    probe_result,
    prompt_hash,
    tick,
)

T0 = 1_700_000_000_000
CFG = BreakerConfig()
LOOP = prompt_hash("Call the search tool again with the same query.")


def fresh() -> SessionState:
    return SessionState(session="s1", tenant="acme")


def roundtrip(st: SessionState) -> SessionState:
    return SessionState.from_dict(json.loads(json.dumps(st.to_dict(), allow_nan=False)))


def trip_by_loop(st: SessionState, start: int = T0) -> int:
    """Send the looping prompt until the breaker opens; the time of the trip."""
    for i in range(CFG.max_repeats):
        d = observe_request(st, start + i * 200, LOOP)
    assert st.state == OPEN and not d.allow and st.opened_at is not None
    return st.opened_at


def test_defaults() -> None:
    assert (CFG.max_requests, CFG.rate_window_ms, CFG.max_cost_usd, CFG.cost_window_ms) == (30, 10_000, 1.0, 60_000)
    assert (CFG.max_repeats, CFG.cooldown_ms) == (8, 30_000)


def test_looping_agent_trips_within_the_configured_count_and_is_rejected_while_open() -> None:
    st = fresh()
    decisions = [observe_request(st, T0 + i * 200, LOOP, request_id=f"r{i}") for i in range(50)]  # 50 in 10 s
    allowed = [d.allow for d in decisions]
    assert allowed[: CFG.max_repeats - 1] == [True] * (CFG.max_repeats - 1)
    assert not any(allowed[CFG.max_repeats - 1 :])
    trip = decisions[CFG.max_repeats - 1]
    assert trip.reason == "repeat" and trip.transition is not None
    event = trip.transition.to_event()
    at = T0 + (CFG.max_repeats - 1) * 200
    assert event == {
        "session": "s1",
        "tenant": "acme",
        "state": "open",
        "reason": "repeat",
        "at_ms": at,
        "until_ms": at + CFG.cooldown_ms,
    }
    assert all(d.reason == "repeat" and d.transition is None for d in decisions[CFG.max_repeats :])
    assert st.trips == 1


def test_after_cooldown_exactly_one_probe_passes_and_success_closes() -> None:
    st = fresh()
    at = trip_by_loop(st)
    assert not observe_request(st, at + CFG.cooldown_ms - 1, LOOP).allow
    probe = observe_request(st, at + CFG.cooldown_ms, LOOP, request_id="p1")
    assert probe.allow and probe.probe
    assert probe.transition is not None and probe.transition.state == HALF_OPEN
    for k in range(1, 5):
        d = observe_request(st, at + CFG.cooldown_ms + k, prompt_hash(f"other {k}"))
        assert (d.allow, d.reason) == (False, "probing")
    closed = probe_result(st, at + CFG.cooldown_ms + 500, True, request_id="p1")
    assert closed.allow and closed.transition is not None
    assert closed.transition.to_event()["state"] == CLOSED and closed.transition.until_ms is None
    assert st.state == CLOSED
    assert observe_request(st, at + CFG.cooldown_ms + 600, prompt_hash("new work")).allow


def test_failed_probe_reopens_with_backoff() -> None:
    st = fresh()
    at = trip_by_loop(st)
    t = at + CFG.cooldown_ms
    assert observe_request(st, t, LOOP, request_id="p1").probe
    d = probe_result(st, t + 100, False, request_id="p1")
    assert not d.allow and d.reason == "probe_failed"
    assert d.transition is not None and d.transition.until_ms == t + 100 + 2 * CFG.cooldown_ms
    assert st.streak == 2


def test_calm_period_resets_the_backoff() -> None:
    st = fresh()
    at = trip_by_loop(st)
    observe_request(st, at + CFG.cooldown_ms, LOOP, request_id="p")
    probe_result(st, at + CFG.cooldown_ms + 1, True)
    again = trip_by_loop(st, at + CFG.calm_ms + 10_000)
    assert again < at + CFG.calm_ms + 10_000 + (CFG.max_repeats - 1) * 200  # the probe started the new run
    assert st.streak == 1 and st.until_ms == again + CFG.cooldown_ms


def test_probe_timeout_lets_another_probe_through_and_stale_results_are_ignored() -> None:
    st = fresh()
    at = trip_by_loop(st)
    t = at + CFG.cooldown_ms
    assert observe_request(st, t, LOOP, request_id="p1").probe
    assert not observe_request(st, t + CFG.probe_timeout_ms - 1, LOOP).allow
    second = observe_request(st, t + CFG.probe_timeout_ms, LOOP, request_id="p2")
    assert second.allow and second.probe
    ignored = probe_result(st, t + CFG.probe_timeout_ms + 1, True, request_id="p1")
    assert ignored.transition is None and st.state == HALF_OPEN
    assert probe_result(st, t + CFG.probe_timeout_ms + 2, True, request_id="p2").transition is not None
    assert probe_result(st, t + CFG.probe_timeout_ms + 3, False).transition is None  # no probe in flight


def test_rate_trip_on_distinct_prompts() -> None:
    st = fresh()
    for i in range(CFG.max_requests):
        assert observe_request(st, T0 + i * 100, prompt_hash(f"q{i}")).allow
    d = observe_request(st, T0 + CFG.max_requests * 100, prompt_hash("one more"))
    assert (d.allow, d.reason) == (False, "rate")


def test_steady_traffic_below_the_rate_never_trips() -> None:
    st = fresh()
    step = CFG.rate_window_ms // CFG.max_requests + 1
    for i in range(500):
        assert observe_request(st, T0 + i * step, prompt_hash(f"q{i % 3}")).allow
    assert len(st.req_times) <= CFG.max_requests + 1


def test_cost_trip_within_the_window_only() -> None:
    st = fresh()
    for i in range(9):
        assert observe_cost(st, T0 + i * 1000, 0.1).allow
    assert observe_cost(st, T0 + 61_000, 0.1).allow  # the first second's spend has left the window
    d = observe_cost(st, T0 + 61_500, 0.25)
    assert (d.allow, d.reason, st.state) == (False, "cost", OPEN)
    assert not observe_request(st, T0 + 62_000, prompt_hash("x")).allow
    assert len(st.cost_buckets) == 0  # windows restart at a trip


def test_cost_trip_during_half_open() -> None:
    st = fresh()
    at = trip_by_loop(st)
    observe_request(st, at + CFG.cooldown_ms, LOOP)
    d = observe_cost(st, at + CFG.cooldown_ms + 10, 5.0)
    assert d.reason == "cost" and st.state == OPEN


def test_semantic_repeats_trip_on_close_vectors() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=64)
    st = fresh()
    decisions = []
    for i in range(CFG.max_repeats):
        vec = base + rng.normal(scale=0.01, size=64)  # cosine ~0.9999, different wording each time
        decisions.append(observe_request(st, T0 + i * 500, prompt_hash(f"variant {i}"), vec))
    assert decisions[-1].reason == "repeat" and all(d.allow for d in decisions[:-1])


def test_dissimilar_vectors_do_not_trip() -> None:
    rng = np.random.default_rng(1)
    st = fresh()
    for i in range(20):
        assert observe_request(st, T0 + i * 1000, prompt_hash(f"p{i}"), rng.normal(size=32)).allow


def test_vectors_ignored_when_disabled() -> None:
    cfg = BreakerConfig(keep_vectors=False)
    st = fresh()
    v = [1.0, 0.0, 0.0]
    for i in range(20):
        assert observe_request(st, T0 + i * 1000, prompt_hash(f"p{i}"), v, config=cfg).allow
    assert st.last_vector is None


def test_prompt_hash_normalises_case_and_whitespace() -> None:
    assert prompt_hash("  Hello\n\tWORLD ") == prompt_hash("hello world")
    assert prompt_hash("hello world") != prompt_hash("hello worlds")
    assert len(prompt_hash("x")) == 32


def test_cosine_edge_cases() -> None:
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine([0, 0], [1, 0]) == 0.0
    assert cosine([1, 0], [1, 0, 0]) == 0.0


def test_none_hash_never_counts_as_repeat() -> None:
    st = fresh()
    for i in range(20):
        assert observe_request(st, T0 + i * 1000, None).allow


def test_state_survives_json_round_trips_mid_run() -> None:
    st = fresh()
    for i in range(CFG.max_repeats - 1):
        observe_request(st, T0 + i * 100, LOOP, [0.5, 0.5])
        observe_cost(st, T0 + i * 100, 0.01)
        st = roundtrip(st)
    d = observe_request(st, T0 + 1000, LOOP)
    assert d.reason == "repeat"
    st = roundtrip(st)
    assert st.state == OPEN and st.to_dict() == roundtrip(st).to_dict()


def test_a_row_leaves_out_fields_at_their_default() -> None:
    """A fresh session writes only its names; a tripped one writes what it changed, and reads back the same."""
    st = fresh()
    assert set(st.to_dict()) == {"session", "tenant"}
    observe_cost(st, T0, 0.0)  # a free answer leaves no bucket behind
    assert st.cost_buckets == [] and "cost_buckets" not in st.to_dict()
    for i in range(3):
        observe_request(st, T0 + i * 100, LOOP, [0.5, 0.5])
    observe_cost(st, T0 + 300, 0.01)
    assert roundtrip(st) == st and {"req_times", "cost_buckets", "last_hash", "repeats"} <= set(st.to_dict())
    for i in range(3, CFG.max_repeats):
        observe_request(st, T0 + i * 100, LOOP, [0.5, 0.5])
    assert st.state == OPEN  # a trip empties the windows
    assert roundtrip(st) == st and {"state", "reason", "until_ms", "trips", "streak"} <= set(st.to_dict())


def test_tick_publishes_half_open() -> None:
    st = fresh()
    at = trip_by_loop(st)
    assert tick(st, at + 1) is None
    t = tick(st, at + CFG.cooldown_ms)
    assert t is not None and t.to_event()["state"] == HALF_OPEN and t.until_ms is None
    assert tick(st, at + CFG.cooldown_ms + 1) is None


def test_force_open_and_control_reader() -> None:
    st = fresh()
    t = force_open(st, T0, "operator", until_ms=T0 + 5_000)
    event = t.to_event()
    assert event["reason"] == "operator" and event["until_ms"] == T0 + 5_000
    assert not control_allows(event, T0 + 4_999)
    assert control_allows(event, T0 + 5_000)
    assert control_allows(None, T0)
    assert control_allows({"state": HALF_OPEN}, T0)
    assert not control_allows({"state": OPEN, "until_ms": None}, T0)


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_requests=0),
        dict(max_repeats=1),
        dict(rate_window_ms=0),
        dict(similarity=0.0),
        dict(backoff=0.5),
        dict(cooldown_ms=10, max_cooldown_ms=5),
        dict(max_cost_usd=-1.0),
    ],
)
def test_config_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)  # type: ignore[arg-type]
