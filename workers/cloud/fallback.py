"""A fallback chain (e.g. OpenAI → Anthropic → local model) with per-provider retries and circuit breakers.

Every step is recorded (provider, model, outcome, status, attempts, elapsed) so the response can show the
path taken and metering can see calls that were retried, and so maybe billed more than once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from schemas.records import Message
from streams.policy.provider_breaker import BreakerRegistry
from workers.cloud.errors import ProviderError
from workers.cloud.provider import CloudProvider
from workers.cloud.retry import Clock, RetryPolicy, Sleep, retry_call
from workers.errors import SluiceError
from workers.ports import Completion

log = logging.getLogger(__name__)

LocalCall = Callable[[Sequence[Message], int], Awaitable[Completion]]
OnText = Callable[[str], Awaitable[None]]
Outcome = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class ProviderLink:
    """Try ``model`` on ``provider``; ``retry`` overrides the chain's policy for this link."""

    provider: CloudProvider
    model: str
    timeout_s: float = 30.0
    retry: RetryPolicy | None = None


@dataclass(frozen=True)
class LocalLink:
    """The last resort: an in-house model (``async (messages, max_tokens) -> Completion``), tried once."""

    call: LocalCall
    name: str = "local"
    model: str = "local"


Link = ProviderLink | LocalLink


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    outcome: Outcome
    status: int | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0
    error: str | None = None  # a short code: HTTP status, "timeout", "breaker_open", ...

    def describe(self) -> str:
        """One hop of the chain as text, e.g. ``openai:gpt-4o failed 429x3`` or ``anthropic:claude ok``."""
        head = f"{self.provider}:{self.model} {self.outcome}"
        if self.outcome == "failed":
            return f"{head} {self.error}x{self.attempts}"
        if self.outcome == "skipped":
            return f"{head} {self.error}"
        return head if self.attempts <= 1 else f"{head} x{self.attempts}"


@dataclass(frozen=True)
class ChainResult:
    completion: Completion
    attempts: tuple[Attempt, ...]
    tier: Literal["cloud", "local"] = "cloud"

    @property
    def served_by(self) -> Attempt:
        return self.attempts[-1]

    @property
    def chain(self) -> list[str]:
        return [a.describe() for a in self.attempts]

    @property
    def calls_made(self) -> int:
        """Upstream calls in all, failed ones included (each may have been billed)."""
        return sum(a.attempts for a in self.attempts)


class AllProvidersFailed(SluiceError):
    """Every link failed or was skipped. Retriable when any failure was (trying later may work)."""

    def __init__(self, attempts: Sequence[Attempt], *, retriable: bool) -> None:
        self.attempts = tuple(attempts)
        chain = "; ".join(a.describe() for a in self.attempts) or "no links"
        super().__init__(f"all providers failed: {chain}", retriable=retriable)


@dataclass
class FallbackChain:
    """Tries links in order; skips providers whose breaker is open; returns the first completion."""

    links: Sequence[Link]
    breakers: BreakerRegistry = field(default_factory=BreakerRegistry)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline_s: float | None = None  # across the whole chain; each link's retry deadline shrinks to fit
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.monotonic
    rand: Callable[[], float] = random.random

    async def complete(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        on_text: OnText | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> ChainResult:
        """``on_text``: stream (providers send server-sent events; the local link sends its text whole).
        Retries and fallback apply only until the first text went out: after that a failure is final (the
        consumer has seen part of one model's answer; another model's would not continue it)."""
        start = self.clock()
        done: list[Attempt] = []
        retriable = False
        stream = _Relay(on_text, cancelled) if on_text is not None else None
        for link in self.links:
            if isinstance(link, LocalLink):
                result, failed_retriable = await self._local(link, messages, max_tokens, done, stream)
            else:
                result, failed_retriable = await self._provider(link, messages, max_tokens, done, start, stream)
            if result is not None:
                return result
            retriable = retriable or failed_retriable
            if stream is not None and stream.started:
                raise AllProvidersFailed(done, retriable=False)
        raise AllProvidersFailed(done, retriable=retriable)

    async def _provider(
        self,
        link: ProviderLink,
        messages: Sequence[Message],
        max_tokens: int,
        done: list[Attempt],
        start: float,
        stream: _Relay | None = None,
    ) -> tuple[ChainResult | None, bool]:
        provider = link.provider
        breaker = self.breakers.get(provider.name)
        if not breaker.allow():
            done.append(Attempt(provider.name, link.model, "skipped", error="breaker_open"))
            return None, True  # the breaker will let a probe through later
        policy = link.retry or self.retry
        if self.deadline_s is not None:
            left = self.deadline_s - (self.clock() - start)
            if left <= 0:
                breaker.record_ignored()  # in case allow() just handed us the half-open probe
                done.append(Attempt(provider.name, link.model, "skipped", error="deadline"))
                return None, True
            policy = replace(policy, deadline_s=left if policy.deadline_s is None else min(left, policy.deadline_s))

        async def call(timeout_s: float) -> Completion:
            if stream is None:
                return await provider.complete(messages, max_tokens, link.model, timeout_s=timeout_s)
            return await stream.provider_call(provider, messages, max_tokens, link.model, timeout_s)

        t0 = self.clock()
        try:
            outcome = await retry_call(
                call,
                policy,
                timeout_s=link.timeout_s,
                sleep=self.sleep,
                clock=self.clock,
                rand=self.rand,
                label=provider.name,
            )
        except ProviderError as err:
            if err.counts_against_provider and err.attempts > 0:
                breaker.record_failure()
            else:
                breaker.record_ignored()
            elapsed = _ms(self.clock() - t0)
            done.append(Attempt(provider.name, link.model, "failed", err.status, err.attempts, elapsed, err.code))
            log.warning("provider %s (%s) failed: %s", provider.name, link.model, err)
            return None, err.retriable
        except BaseException:
            breaker.record_ignored()  # cancelled, or a bug: no verdict on the provider
            raise
        breaker.record_success()
        done.append(Attempt(provider.name, link.model, "ok", 200, outcome.attempts, _ms(self.clock() - t0)))
        return ChainResult(outcome.completion, tuple(done), "cloud"), False

    async def _local(
        self,
        link: LocalLink,
        messages: Sequence[Message],
        max_tokens: int,
        done: list[Attempt],
        stream: _Relay | None = None,
    ) -> tuple[ChainResult | None, bool]:
        t0 = self.clock()
        try:
            completion = await link.call(messages, max_tokens)
            if stream is not None:
                await stream(completion.text)
        except SluiceError as err:
            done.append(Attempt(link.name, link.model, "failed", None, 1, _ms(self.clock() - t0), type(err).__name__))
            log.warning("local fallback %s failed: %s", link.name, err)
            return None, err.retriable
        done.append(Attempt(link.name, completion.model or link.model, "ok", None, 1, _ms(self.clock() - t0)))
        return ChainResult(completion, tuple(done), "local"), False


class _Relay:
    """Passes streamed text on and remembers whether any went out (then retries and fallback stop)."""

    def __init__(self, on_text: OnText, cancelled: Callable[[], bool] | None) -> None:
        self.on_text = on_text
        self.cancelled = cancelled
        self.started = False

    async def __call__(self, text: str) -> None:
        if text:
            self.started = True
            await self.on_text(text)

    async def provider_call(
        self, provider: CloudProvider, messages: Sequence[Message], max_tokens: int, model: str, timeout_s: float
    ) -> Completion:
        stream = getattr(provider, "stream", None)
        if stream is None:  # a provider without streaming: its whole answer is one chunk
            completion: Completion = await provider.complete(messages, max_tokens, model, timeout_s=timeout_s)
            await self(completion.text)
            return completion
        try:
            result: Completion = await stream(
                messages, max_tokens, model, timeout_s=timeout_s, on_text=self, cancelled=self.cancelled
            )
            return result
        except ProviderError as err:
            if not self.started:
                raise  # nothing went out yet: retry and fall back as usual
            broken = ProviderError(
                f"{err} (after the stream began)",
                provider=err.provider,
                status=err.status,
                kind="stream_broken",
                retriable=False,
            )
            raise broken from None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
