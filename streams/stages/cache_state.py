"""State shared by the lookup and complete stages of one cache process.

``exact`` and ``inflight`` are Faust tables in production (changelog-backed, partitioned by dedup key, so
exactly one process owns each key) and plain dicts in unit tests. Values are JSON-able dicts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.records import Request, Response, Usage, now_ms
from streams.stages.chunks import cached_chunks
from streams.stages.outgoing import Outgoing, response_messages


@dataclass
class CacheState:
    exact: MutableMapping[str, dict[str, Any]]
    inflight: MutableMapping[str, dict[str, Any]]
    # Query vectors of keys in flight, so the complete stage stores them without embedding again.
    vectors: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    max_vectors: int = 50_000

    def remember_vector(self, key: str, vector: np.ndarray) -> None:
        self.vectors[key] = vector
        while len(self.vectors) > self.max_vectors:
            self.vectors.popitem(last=False)


def waiter_of(request: Request) -> dict[str, Any]:
    """What a coalesced request needs to get its own response later."""
    return {
        "id": request.id,
        "tenant": request.tenant,
        "session": request.session,
        "reply_to": request.reply_to,
        "created_at": request.created_at,
        "feature": request.feature,
        "stream": request.stream,
    }


def cached_response(
    *,
    request_id: str,
    tenant: str,
    session: str,
    created_at: int,
    source: Response | dict[str, Any],
    cache: dict[str, Any],
    route: dict[str, Any] | None = None,
) -> Response:
    """A response served from the cache (or by coalescing): no tokens consumed, no cost; the source's usage is
    kept in ``route.cache.saved_usage`` so metering can count what was avoided."""
    if isinstance(source, Response):
        text, model, status, reason = source.text, source.model, source.status, source.reason
        saved = {"prompt_tokens": source.usage.prompt_tokens, "completion_tokens": source.usage.completion_tokens}
        saved_cost = source.cost_usd
    else:
        text, model = source.get("text", ""), source.get("model", "")
        status, reason = source.get("status", "ok"), source.get("reason")
        saved = dict(source.get("usage") or {})
        saved_cost = float(source.get("cost_usd") or 0.0)
    return Response(
        id=request_id,
        tenant=tenant,
        session=session,
        status=status,
        text=text,
        tier="cache" if status == "ok" else "none",
        model=model,
        usage=Usage(),
        cost_usd=0.0,
        latency_ms=float(max(0, now_ms() - created_at)),
        reason=reason,
        route={
            **(route or {}),
            "tier": "cache",
            "cache": {**cache, "saved_usage": saved, "saved_cost_usd": saved_cost},
        },
    )


def answer_messages(
    who: dict[str, Any],
    source: Response | dict[str, Any],
    cache: dict[str, Any],
    topic: str,
    route: dict[str, Any] | None = None,
    chunks_topic: str | None = None,
) -> list[Outgoing]:
    """The messages answering one request (``who`` = :func:`waiter_of` it) from a cached or shared answer;
    a streamed request (``who["stream"]``) first gets the text as chunks on ``chunks_topic``."""
    feature = {"feature": who["feature"]} if who.get("feature") else {}
    answer = cached_response(
        request_id=who["id"],
        tenant=who["tenant"],
        session=who["session"],
        created_at=int(who["created_at"]),
        source=source,
        cache=cache,
        route={**(route or {}), **feature} or None,
    )
    chunks = cached_chunks(who, answer.text, chunks_topic) if who.get("stream") and chunks_topic else []
    return chunks + response_messages(answer, topic, who.get("reply_to"))
