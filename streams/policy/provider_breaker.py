"""Circuit breakers for cloud providers: stop sending traffic to a provider that is failing, probe it later.

Pure (stdlib only, injectable clock) so the state machine is tested without time passing. Not thread-safe:
one event loop owns a registry.

CLOSED --(N consecutive failures, or error rate >= X over the window with >= M calls)--> OPEN
OPEN --(cooldown elapsed)--> HALF_OPEN: exactly one probe call is let through
HALF_OPEN --probe succeeds--> CLOSED;  --probe fails--> OPEN (cooldown restarts)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """``probe_timeout_s``: a probe whose result never comes (caller cancelled) frees the slot after this."""

    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_s: float = 60.0
    min_calls: int = 10
    cooldown_s: float = 30.0
    probe_timeout_s: float = 60.0
    max_window_entries: int = 10_000

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_calls < 1:
            raise ValueError("consecutive_failures and min_calls must be at least 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if self.window_s <= 0 or self.cooldown_s < 0 or self.probe_timeout_s <= 0:
            raise ValueError("window_s and probe_timeout_s must be positive, cooldown_s not negative")


class CircuitBreaker:
    """One provider's breaker. Call ``allow()`` before a call, then exactly one ``record_*`` after it."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Clock = time.monotonic, name: str = "") -> None:
        self.config = config or BreakerConfig()
        self.name = name
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque(maxlen=self.config.max_window_entries)
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._probe_started = None
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to this provider now (in HALF_OPEN, True for the single probe only)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._probe_started is not None and now - self._probe_started < self.config.probe_timeout_s:
            return False
        self._probe_started = now
        return True

    def record_success(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            if self._probe_started is not None:
                self._close()
            return
        if state is BreakerState.CLOSED:
            self._consecutive = 0
            self._add(True)

    def record_failure(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            if self._probe_started is not None:
                self._open()
            return
        if state is BreakerState.OPEN:
            return  # a call started before the breaker opened: no new information
        self._consecutive += 1
        self._add(False)
        if self._consecutive >= self.config.consecutive_failures or self._rate_tripped():
            self._open()

    def record_ignored(self) -> None:
        """The call ended without a verdict on the provider (cancelled, or our own bad request): free the probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_started = None

    def error_rate(self) -> tuple[int, float]:
        """(calls, failure fraction) within the sliding window."""
        self._prune()
        calls = len(self._window)
        if not calls:
            return 0, 0.0
        failures = sum(1 for _, ok in self._window if not ok)
        return calls, failures / calls

    def snapshot(self) -> dict[str, object]:
        calls, rate = self.error_rate()
        return {
            "name": self.name,
            "state": str(self.state),
            "consecutive_failures": self._consecutive,
            "window_calls": calls,
            "window_error_rate": round(rate, 4),
            "times_opened": self.times_opened,
        }

    def _rate_tripped(self) -> bool:
        calls, rate = self.error_rate()
        return calls >= self.config.min_calls and rate >= self.config.error_rate

    def _add(self, ok: bool) -> None:
        self._window.append((self._clock(), ok))

    def _prune(self) -> None:
        horizon = self._clock() - self.config.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_started = None
        self._consecutive = 0
        self._window.clear()
        self.times_opened += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._probe_started = None
        self._consecutive = 0
        self._window.clear()


class BreakerRegistry:
    """One breaker per provider name, created on first use (``overrides`` sets per-provider configs)."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        overrides: Mapping[str, BreakerConfig] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._overrides = dict(overrides or {})
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            config = self._overrides.get(name, self.config)
            breaker = self._breakers[name] = CircuitBreaker(config, clock=self._clock, name=name)
        return breaker

    __getitem__ = get

    def states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self._breakers.items()}

    def snapshot(self) -> list[dict[str, object]]:
        return [b.snapshot() for b in self._breakers.values()]
