"""Complete stage: a tier's result → the leader's response, one response per coalesced waiter, cache write.

Runs on ``sluice.results`` (key: dedup key), co-partitioned with ``sluice.lookup``: the process that claimed a
key in ``inflight`` is the one that completes it, and it alone writes the key's cache entry.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.parse import InvalidMessage, parse_result
from schemas.records import Response, now_ms
from streams.policy.cache_policy import CachePolicy, context_key, may_write, query_text
from streams.settings import Settings
from streams.stages.cache_state import CacheState, answer_messages
from streams.stages.outgoing import Outgoing, Source, dead_letter, response_messages
from workers.embedding.batcher import BatchingEmbedder
from workers.ports import VectorStore

log = logging.getLogger(__name__)
Send = Callable[[list[Outgoing]], Awaitable[None]]


def _answer_payload(response: Response) -> dict[str, Any]:
    """What a late joiner of a completed key is answered with."""
    return {
        "status": response.status,
        "text": response.text,
        "model": response.model,
        "tier": response.tier,  # the decision trail records where a late joiner's answer came from
        "reason": response.reason,
        "usage": {"prompt_tokens": response.usage.prompt_tokens, "completion_tokens": response.usage.completion_tokens},
        "cost_usd": response.cost_usd,
    }


class CompleteStage:
    def __init__(
        self,
        settings: Settings,
        state: CacheState,
        policy: CachePolicy,
        embedder: BatchingEmbedder,
        store: VectorStore,
    ) -> None:
        self.settings = settings
        self.state = state
        self.policy = policy
        self.embedder = embedder
        self.store = store
        self.counts: Counter[str] = Counter()
        self._writes: Counter[str] = Counter()
        self._indexed = 0

    async def handle(self, raw: bytes, source: Source, send: Send) -> None:
        """Mark the key done (synchronously), send every response, then write the cache and drop the claim.

        A request that joins while the responses are being sent finds the key done and is answered from it,
        and a crash before the claim is dropped only re-sends responses (clients and the meter dedup by id):
        nothing is lost in either case.
        """
        try:
            result = parse_result(raw)
        except InvalidMessage as exc:
            self.counts[f"deadletter:{exc.reason}"] += 1
            await send([dead_letter(self.settings.topic("deadletter"), raw, source, exc)])
            return
        request, response, key = result.job.request, result.response, result.job.key
        responses = self.settings.topic("responses")
        if not request.cache:  # never claimed, never coalesced, never stored
            await send(response_messages(response, responses, request.reply_to))
            return
        current = self.state.inflight.get(key)
        if current is None or current["leader"] != request.id:
            # Already completed (a redelivered result): the responses went out the first time.
            self.counts["duplicate_result"] += 1
            return
        current["done"] = True
        current["response"] = _answer_payload(response)
        self.state.inflight[key] = current  # (re-assigned so a Faust table logs the change)
        outs = response_messages(response, responses, request.reply_to)
        coalesced = {"kind": "coalesced", "source_id": request.id, "similarity": 1.0}
        for waiter in current["waiters"]:
            outs += answer_messages(waiter, response, coalesced, responses, chunks_topic=self.settings.topic("chunks"))
        await send(outs)
        if may_write(request, response, self.policy):
            await self._store(key, request.tenant, request.chat(), request.max_tokens, response)
        self.state.inflight.pop(key, None)
        self.counts["completed"] += 1

    async def _store(self, key: str, tenant: str, chat: list[Any], max_tokens: int, response: Response) -> None:
        created = now_ms()
        entry = {
            "text": response.text,
            "model": response.model,
            "tier": response.tier,
            "usage": {
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
            },
            "cost_usd": response.cost_usd,
            "source_id": response.id,
            "tenant": tenant,
            "created_at": created,
        }
        self.state.exact[key] = entry
        vector = self.state.vectors.pop(key, None)
        query = query_text(chat)
        if vector is None:
            vector = await self.embedder.embed_one(query)
        payload = {
            "text": query,
            "context": context_key(chat, {"max_tokens": max_tokens}),
            "source_id": response.id,
            "response": entry,
        }
        try:
            await self.store.upsert(tenant, key, vector, payload, created)
            await self._bound(tenant)
        except Exception as exc:  # the exact entry is in; a failed vector write only costs future semantic hits
            self.counts["store_error"] += 1
            log.warning("vector store write failed for a %s entry: %s", tenant, exc)

    async def maintain(self, min_new: int = 5_000) -> None:
        """Index new vectors (the embedded engine searches unindexed points by brute force) once ``min_new``
        entries arrived since the last run; optimising blocks the store briefly, so it is batched."""
        optimize = getattr(self.store, "optimize", None)
        written = sum(self._writes.values())
        if optimize is None or written - self._indexed < min_new:
            return
        self._indexed = written
        await optimize()

    async def _bound(self, tenant: str) -> None:
        """Keep at most ``max_entries_per_tenant`` vectors, oldest out first; checked every 64 writes."""
        self._writes[tenant] += 1
        if self._writes[tenant] % 64 != 1:
            return
        limit = self.policy.max_entries_per_tenant
        if await self.store.count(tenant) > limit:
            self.counts["evicted"] += await self.store.evict_oldest(tenant, keep=limit)
