"""Cloud tier stage: a job → the provider fallback chain (retries, breakers, local last resort) → a result.

Runs on ``sluice.tier.cloud`` (key: dedup key) and writes to ``sluice.results``. Usage comes from the
provider's reply; cost from the price table for the model that actually answered. Every attempt, including
retried calls that may have been billed, is recorded on the response (``route.attempts``, ``route.chain``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from schemas.parse import parse_job
from schemas.records import Response, Result, Usage, dumps, now_ms
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.outgoing import Outgoing, Source, parse_or_dead_letter
from workers.cloud.fallback import AllProvidersFailed, FallbackChain

log = logging.getLogger(__name__)

OnText = Callable[[str], Awaitable[None]]
Pricer = Callable[[str, int, int], float]  # (model, prompt_tokens, completion_tokens) -> USD


class CloudTierStage:
    def __init__(self, settings: Settings, chain: Callable[[], FallbackChain], price: Pricer) -> None:
        self.settings = settings
        self.chain = chain  # called per job so a reloaded tier/provider config applies at once
        self.price = price
        self.counts: Counter[str] = Counter()
        self.trail = DecisionTrail(settings)

    async def handle(
        self,
        raw: bytes,
        source: Source,
        *,
        on_text: OnText | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Outgoing]:
        """``on_text`` (streamed jobs, see streams/stages/streaming.py) gets the text as the provider sends it;
        ``cancelled()`` true stops it: the response is ``cancelled`` and priced for the tokens produced."""
        job = parse_or_dead_letter(parse_job, raw, source, self.settings.topic("deadletter"), self.counts)
        if isinstance(job, list):
            return job
        request = job.request
        started = time.monotonic()
        try:
            outcome = await self.chain().complete(request.chat(), request.max_tokens, on_text, cancelled)
        except AllProvidersFailed as exc:
            self.counts["error"] += 1
            calls = sum(a.attempts for a in exc.attempts)
            route = dict(job.route, chain=[a.describe() for a in exc.attempts], attempts=calls)
            response = Response(
                id=request.id,
                tenant=request.tenant,
                session=request.session,
                status="error",
                tier="cloud",
                reason=f"all_providers_failed: {exc}"[:500],
                route=route,
                latency_ms=float(now_ms() - request.created_at),
            )
        else:
            served = outcome.served_by
            completion = outcome.completion
            tier = "local" if outcome.tier == "local" else "cloud"
            cost = (
                0.0
                if tier == "local"
                else self.price(served.model, completion.prompt_tokens, completion.completion_tokens)
            )
            self.counts[f"ok:{served.provider}"] += 1
            route = dict(
                job.route,
                chain=outcome.chain,
                attempts=outcome.calls_made,
                provider=served.provider,
                generation_ms=round((time.monotonic() - started) * 1000, 1),
            )
            if len(outcome.attempts) > 1:
                route["fallback"] = True
            response = Response(
                id=request.id,
                tenant=request.tenant,
                session=request.session,
                status="cancelled" if completion.finish_reason == "cancelled" else "ok",
                reason="cancelled" if completion.finish_reason == "cancelled" else None,
                text=completion.text,
                tier=tier,
                model=completion.model or served.model,
                usage=Usage(completion.prompt_tokens, completion.completion_tokens),
                cost_usd=cost,
                latency_ms=float(now_ms() - request.created_at),
                route=route,
            )
        result = Result(job=job, response=response)
        decided = self.trail.tier("cloud", job, response)
        return [Outgoing(self.settings.topic("results"), job.key.encode(), dumps(result)), *decided]
