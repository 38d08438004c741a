"""The provider circuit breaker's state machine, driven by a fake clock (no time passes)."""

from __future__ import annotations

import pytest

from streams.policy.provider_breaker import BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: float) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    config = BreakerConfig(**{"consecutive_failures": 3, "cooldown_s": 10, **kwargs})  # type: ignore[arg-type]
    return CircuitBreaker(config, clock=clock, name="p"), clock


def test_opens_after_consecutive_failures() -> None:
    breaker, _ = make()
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.times_opened == 1


def test_success_resets_the_consecutive_count() -> None:
    breaker, _ = make(error_rate=1.0)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_opens_on_error_rate_once_enough_calls() -> None:
    breaker, _ = make(consecutive_failures=100, error_rate=0.5, min_calls=6, window_s=60)
    for _ in range(2):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED  # 50% but only 4 calls
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # 60% of 5 calls: still under min_calls
    breaker.record_success()
    assert breaker.error_rate() == (6, 0.5)
    assert breaker.state is BreakerState.CLOSED  # rate is only checked on a failure
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_window_slides_old_failures_out() -> None:
    breaker, clock = make(consecutive_failures=100, error_rate=0.5, min_calls=4, window_s=30)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    clock.now += 31  # those three calls are now outside the window
    breaker.record_success()
    breaker.record_failure()  # with them it would be 3 failures in 5 calls: open
    assert breaker.error_rate() == (2, 0.5)
    assert breaker.state is BreakerState.CLOSED


def test_cooldown_then_exactly_one_probe() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow() and not breaker.allow()  # the probe is in flight
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(5))


def test_failed_probe_reopens_and_restarts_cooldown() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_probe_without_verdict_frees_the_slot() -> None:
    breaker, clock = make(probe_timeout_s=5)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_ignored()  # e.g. the probe was cancelled
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()
    clock.now += 5  # a probe whose result never came: another may go
    assert breaker.allow()


def test_late_results_while_open_change_nothing() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 1
    clock.now += 10
    breaker.record_success()  # not the probe's result (no probe was let through)
    assert breaker.state is BreakerState.HALF_OPEN


def test_registry_keys_by_provider_with_overrides() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        BreakerConfig(consecutive_failures=2), clock=clock, overrides={"flaky": BreakerConfig(consecutive_failures=1)}
    )
    assert registry.get("openai") is registry["openai"]
    registry.get("flaky").record_failure()
    registry.get("openai").record_failure()
    assert registry.states() == {"flaky": BreakerState.OPEN, "openai": BreakerState.CLOSED}
    snap = {s["name"]: s for s in registry.snapshot()}
    assert snap["openai"]["consecutive_failures"] == 1 and snap["flaky"]["state"] == "open"


@pytest.mark.parametrize(
    "kwargs",
    [{"consecutive_failures": 0}, {"min_calls": 0}, {"error_rate": 0.0}, {"error_rate": 1.5}, {"window_s": 0}],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
