"""Retries for cloud calls: exponential backoff with full jitter, ``Retry-After``, max attempts, a deadline.

The attempt count is returned (or set on the raised error) because a retried call may be billed more than
once: metering needs to know. Sleep, clock and random are injectable so tests never really wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from workers.cloud.errors import ProviderError
from workers.ports import Completion

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one provider before the fallback chain moves on.

    ``deadline_s`` bounds the whole thing (attempts plus waits); each attempt's timeout is shrunk to fit.
    ``retry_after_cap_s`` caps how long a provider's ``Retry-After`` can make us wait.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_after_cap_s: float = 20.0
    deadline_s: float | None = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.retry_after_cap_s < 0:
            raise ValueError("delays must not be negative")

    def backoff_s(self, retry: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(retry-1))] (retry counts from 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (retry - 1)))
        return rand() * ceiling


@dataclass(frozen=True)
class RetryResult:
    completion: Completion
    attempts: int


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT; a naive result means the zone was missing
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / infinities
        return None
    return max(0.0, seconds)


async def retry_call(
    call: Callable[[float], Awaitable[Completion]],
    policy: RetryPolicy,
    *,
    timeout_s: float,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    rand: Callable[[], float] = random.random,
    label: str = "",
) -> RetryResult:
    """Run ``call(attempt_timeout_s)`` until it succeeds, fails for good, or attempts/deadline run out.

    Only retriable ``ProviderError``s are retried; anything else propagates at once. On failure the last
    ``ProviderError`` is raised with ``attempts`` set to the number of calls made.
    """
    start = clock()
    deadline = None if policy.deadline_s is None else start + policy.deadline_s
    attempt = 0
    last: ProviderError | None = None
    while True:
        attempt_timeout = timeout_s if deadline is None else min(timeout_s, deadline - clock())
        if attempt_timeout <= 0:
            if last is not None:
                raise last
            err = ProviderError(f"{label}: no time left for a first attempt", provider=label, kind="timeout")
            err.attempts = 0
            raise err
        attempt += 1
        try:
            completion = await call(attempt_timeout)
        except ProviderError as err:
            last = err
            err.attempts = attempt
            delay = _next_delay(err, attempt, policy, rand, deadline, clock)
            if delay is None:
                raise
            log.info("retrying %s after %s (attempt %d) in %.2fs", label, err.code, attempt, delay)
            await sleep(delay)
            continue
        return RetryResult(completion, attempt)


def _next_delay(
    err: ProviderError,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float],
    deadline: float | None,
    clock: Clock,
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up now."""
    if not err.retriable or attempt >= policy.max_attempts:
        return None
    if err.retry_after_s is not None:
        delay = min(err.retry_after_s, policy.retry_after_cap_s)
    else:
        delay = policy.backoff_s(attempt, rand)
    if deadline is not None and clock() + delay >= deadline:
        return None  # waiting would leave no time to try: let the caller fall back now
    return delay
