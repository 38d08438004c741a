"""Lookup stage: exact cache → in-flight coalescing → embed (batched) → vector search → verifier → route.

Runs on ``sluice.lookup`` (key: dedup key), so one partition, hence one process, owns each key: coalescing
needs no locks across processes. The key is claimed in ``inflight`` *before* any await, so concurrent
lookups of the same key inside this process coalesce too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2

from schemas.parse import InvalidMessage, parse_lookup
from schemas.records import CachePurge, Job, Request, dumps, now_ms
from streams.policy.cache_policy import (
    CachePolicy,
    Candidate,
    choose,
    context_key,
    expired,
    may_read,
    query_text,
)
from streams.policy.router import RouteDecision
from streams.settings import Settings
from streams.stages.cache_state import CacheState, answer_messages, waiter_of
from streams.stages.decisions import DecisionTrail
from streams.stages.outgoing import Outgoing, Source, dead_letter
from workers.embedding.batcher import BatchingEmbedder
from workers.ports import VectorStore

log = logging.getLogger(__name__)


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes), as producers place ``sluice.lookup`` keys."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


Verify = Callable[[str, str, float], float]  # (query, cached query, cosine) -> probability of duplicate
# (request, query embedding) -> (decision, logical topic of the chosen tier, e.g. "tier.local")
Route = Callable[[Request, np.ndarray, np.ndarray | None], tuple[RouteDecision, str]]


class LookupStage:
    def __init__(
        self,
        settings: Settings,
        state: CacheState,
        policy: CachePolicy,
        embedder: BatchingEmbedder,
        store: VectorStore,
        verify: Verify,
        router: Route,
    ) -> None:
        self.settings = settings
        self.state = state
        self.policy = policy
        self.embedder = embedder
        self.store = store
        self.verify = verify
        self.router = router
        self.counts: Counter[str] = Counter()
        self.inflight_timeout_ms = int(settings.inflight_timeout_s * 1000)
        self._purges_done: set[str] = set()
        self.trail = DecisionTrail(settings)

    async def handle(self, raw: bytes, source: Source) -> list[Outgoing]:
        try:
            job = parse_lookup(raw)
        except InvalidMessage as exc:
            self.counts[f"deadletter:{exc.reason}"] += 1
            return [dead_letter(self.settings.topic("deadletter"), raw, source, exc)]
        if isinstance(job, CachePurge):
            await self.purge(job, source.partition)
            return []
        request, key, now = job.request, job.key, now_ms()
        entry = self.exact_entry(job, now)
        if entry is not None:
            return self.answer_exact(job, entry)
        if request.cache:
            claim = self._claim_or_join(request, key, now)
            if isinstance(claim, list):  # joined a key in flight (answered later) or one just completed
                return claim
        # One embedding serves the semantic lookup, the router's classifier and the cache write.
        vector = await self.embedder.embed_one(query_text(request.chat()))
        if request.cache:
            self.state.remember_vector(key, vector)
        if may_read(request, self.policy):
            hit = await self._semantic(request, job, vector, now)
            if hit is not None:
                return hit
        probe_state = getattr(self.router, "probe_state", None)  # the classifier's LM probe, for heads that read it
        probe = await probe_state(request, vector) if probe_state is not None else None
        return self._dispatch(job, vector, probe)

    def exact_entry(self, job: Job, now: int) -> dict[str, Any] | None:
        """The fresh exact-cache entry this job may be answered from, if any (a read: nothing changes)."""
        if not may_read(job.request, self.policy):
            return None
        entry = self.state.exact.get(job.key)
        if entry is None or expired(int(entry["created_at"]), now, self.policy):
            return None
        return entry

    def answer_exact(self, job: Job, entry: dict[str, Any], via: str = "") -> list[Outgoing]:
        """The answer (and its decision record) for a job whose key has the fresh exact entry ``entry``;
        ``via``: the stage that answered it, when not this one (recorded in the response's cache facts)."""
        self.counts["hit:exact"] += 1
        cache: dict[str, Any] = {"kind": "exact", "source_id": entry["source_id"], "similarity": 1.0}
        if via:
            cache["via"] = via
        return self._answer(job.request, entry, cache, job.route) + self.trail.hit(job.request, cache, entry)

    async def purge(self, command: CachePurge, partition: int) -> None:
        """Drop the tenant's exact entries owned by ``partition`` (the command reaches every partition, and a
        table's changelog must only get tombstones in the key's own partition), and, once per command, the
        tenant's vectors in this process's store."""
        cutoff = command.older_than_ms
        for key, entry in list(self.state.exact.items()):
            if entry.get("tenant") != command.tenant or (cutoff is not None and int(entry["created_at"]) >= cutoff):
                continue
            if partition_for(key, self.settings.partitions) == partition:
                del self.state.exact[key]
                self.counts["purged:exact"] += 1
        if command.id not in self._purges_done:
            self._purges_done.add(command.id)
            self.counts["purged:vectors"] += await self.store.purge(command.tenant, older_than_ms=cutoff)

    def _claim_or_join(self, request: Request, key: str, now: int) -> bool | list[Outgoing]:
        """True: this request leads the key and must be dispatched. A list: the messages to send instead (none
        when it joined a key in flight, the answer when the key has just been completed)."""
        current = self.state.inflight.get(key)
        if current is not None and now - int(current["started"]) <= self.inflight_timeout_ms:
            if current.get("done"):
                self.counts["coalesced"] += 1
                cache = {"kind": "coalesced", "source_id": current["leader"], "similarity": 1.0}
                source = current["response"]
                return self._answer_waiter(waiter_of(request), source, cache) + self.trail.hit(request, cache, source)
            if request.id == current["leader"]:
                # A redelivered leader: its job may never have reached the tier (crash after the claim was
                # logged): dispatch again; a second result for the key is dropped by the complete stage.
                self.counts["redelivered"] += 1
                return True
            if any(w["id"] == request.id for w in current["waiters"]):
                self.counts["redelivered"] += 1  # a redelivery must not add a second waiter
                return []
            current["waiters"].append(waiter_of(request))
            self.state.inflight[key] = current  # re-assign so a Faust table writes the change to its changelog
            self.counts["coalesced"] += 1
            return self.trail.joined(request, current["leader"])
        waiters = current["waiters"] if current is not None else []  # a stale leader's waiters still need answers
        self.state.inflight[key] = {"leader": request.id, "waiters": waiters, "started": now}
        return True

    async def _semantic(self, request: Request, job: Job, vector: np.ndarray, now: int) -> list[Outgoing] | None:
        min_created = now - int(self.policy.ttl_s * 1000)
        hits = await self.store.search(request.tenant, vector, self.policy.candidates, min_created_at_ms=min_created)
        if not hits:
            self.counts["miss"] += 1
            return None
        query = query_text(request.chat())
        context = context_key(request.chat(), {"max_tokens": request.max_tokens})
        candidates = [
            Candidate(h.id, h.score, str(h.payload.get("text", "")), str(h.payload.get("context", "")), h.payload)
            for h in hits
        ]
        scores = [self.verify(query, c.text, c.cosine) if c.context == context else 0.0 for c in candidates]
        threshold = self.policy.threshold_for(request.tenant, request.feature)
        verdict = choose(candidates, scores, context=context, threshold=threshold, policy=self.policy)
        if verdict.hit is None:
            self.counts["miss"] += 1
            self.trail.note_semantic(request.id, candidates, scores, context, threshold)
            return None
        self.counts["hit:semantic"] += 1
        payload = verdict.hit.payload
        cache = {
            "kind": "semantic",
            "source_id": payload.get("source_id"),
            "similarity": round(verdict.hit.cosine, 4),
            "verifier_score": round(float(verdict.verifier_score or 0.0), 4),
            "threshold": threshold,
        }
        outs = self._answer(request, payload["response"], cache, job.route)
        outs += self.trail.hit(request, cache, payload["response"], candidates, scores, context)
        waiting = self.state.inflight.pop(job.key, None) if request.cache else None
        for waiter in (waiting or {}).get("waiters", []):
            outs += self._answer_waiter(waiter, payload["response"], {**cache, "kind": "coalesced"})
        return outs

    def _dispatch(self, job: Job, vector: np.ndarray, probe: np.ndarray | None = None) -> list[Outgoing]:
        decision, topic = self.router(job.request, vector, probe)
        route: dict[str, Any] = {**job.route, **decision.to_dict()}
        routed = replace(job, tier=decision.tier, route=route)
        self.counts[f"routed:{decision.tier}"] += 1
        backlog = getattr(self.router, "backlog", None)
        decided = self.trail.routed(routed, route, backlog() if callable(backlog) else None)
        return [Outgoing(self.settings.topic(topic), job.key.encode(), dumps(routed)), *decided]

    def _answer(
        self, request: Request, source: dict[str, Any], cache: dict[str, Any], route: dict[str, Any]
    ) -> list[Outgoing]:
        responses, chunks = self.settings.topic("responses"), self.settings.topic("chunks")
        return answer_messages(waiter_of(request), source, cache, responses, route, chunks_topic=chunks)

    def _answer_waiter(self, waiter: dict[str, Any], source: dict[str, Any], cache: dict[str, Any]) -> list[Outgoing]:
        chunks = self.settings.topic("chunks")  # a streamed waiter gets the text as chunks first
        return answer_messages(waiter, source, cache, self.settings.topic("responses"), chunks_topic=chunks)
