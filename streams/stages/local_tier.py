"""Local tier stage: run a job on the local model pool and build the final response.

Runs on ``sluice.tier.local`` (key: dedup key) and writes a result to ``sluice.results`` (same key), where
the complete stage answers the requester and every coalesced waiter. Generation happens in the pool's
executor threads, never on the event loop. Model failures become ``error`` results: the requester always
hears back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from schemas.parse import parse_job
from schemas.records import Response, Result, Usage, dumps, now_ms
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.outgoing import Outgoing, Source, parse_or_dead_letter
from workers.errors import SluiceError
from workers.local.pool import ModelPool

log = logging.getLogger(__name__)
OnText = Callable[[str], Awaitable[None]]


class LocalTierStage:
    def __init__(
        self, settings: Settings, pool: ModelPool, price: Callable[[int, int], float] = lambda p, c: 0.0
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.price = price  # (prompt, completion tokens) -> USD at the local tier's configured compute price
        self.counts: Counter[str] = Counter()
        self.trail = DecisionTrail(settings)

    async def handle(
        self, raw: bytes, source: Source, *, on_text: OnText | None = None, cancel: threading.Event | None = None
    ) -> list[Outgoing]:
        """``on_text`` (streamed jobs, see streams/stages/streaming.py) gets the text while it is generated;
        ``cancel`` set stops generation: the response is ``cancelled`` and priced for the tokens produced."""
        job = parse_or_dead_letter(parse_job, raw, source, self.settings.topic("deadletter"), self.counts)
        if isinstance(job, list):
            return job
        request = job.request
        started = time.monotonic()
        try:
            if on_text is None:
                completion = await self.pool.generate(request.chat(), request.max_tokens, priority=request.priority)
            else:
                completion = await self.pool.stream(
                    request.chat(), request.max_tokens, on_text, cancel=cancel, priority=request.priority
                )
        except SluiceError as exc:
            self.counts["error"] += 1
            log.warning("local generation failed for %s: %s", request.id, exc)
            response = Response(
                id=request.id,
                tenant=request.tenant,
                session=request.session,
                status="error",
                tier="local",
                model=self.pool.name,
                reason=f"local_model_error: {exc}"[:500],
                route=job.route,
                latency_ms=float(now_ms() - request.created_at),
            )
        else:
            self.counts["ok"] += 1
            route = dict(job.route, generation_ms=round((time.monotonic() - started) * 1000, 1))
            response = Response(
                id=request.id,
                tenant=request.tenant,
                session=request.session,
                status="cancelled" if completion.finish_reason == "cancelled" else "ok",
                reason="cancelled" if completion.finish_reason == "cancelled" else None,
                text=completion.text,
                tier="local",
                model=completion.model,
                usage=Usage(completion.prompt_tokens, completion.completion_tokens),
                cost_usd=self.price(completion.prompt_tokens, completion.completion_tokens),
                latency_ms=float(now_ms() - request.created_at),
                route=route,
            )
        result = Result(job=job, response=response)
        decided = self.trail.tier("local", job, response)
        return [Outgoing(self.settings.topic("results"), job.key.encode(), dumps(result)), *decided]
