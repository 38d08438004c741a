"""The decision audit trail: each stage's verdict on a request, as one small record on ``sluice.decisions``.

Key: request id, so every record about one request lands in one partition, in order. The records are the
audit trail ("why did this request cost that?") and the input of ``sluice replay``. They are built on the hot
path, so they are plain dicts encoded once with orjson and hold only numbers, names and short strings; prompt
text is stored (the last user turn, bounded) except for tenants in ``SLUICE_REDACT_PROMPT_TENANTS``, whose
records keep a SHA-256 and a length instead. Nothing here ever copies request metadata wholesale, headers or
provider configuration, so no API key can reach the topic; provider error strings are scrubbed of anything
that looks like a key. ``SLUICE_DECISIONS_ENABLED=false`` turns the trail off (every method returns ``[]``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import orjson

from schemas.records import SCHEMA_VERSION, Job, Request, Response, now_ms
from streams.settings import Settings
from streams.stages.outgoing import Outgoing

PROMPT_EXCERPT_CHARS = 500
_KEYLIKE = re.compile(r"(?i)(bearer\s+\S+|sk-[A-Za-z0-9_\-]{6,}|api[_-]?key[=:]\s*\S+|x-api-key:\s*\S+)")


def scrub(text: str) -> str:
    """Provider error text with anything key-shaped replaced (errors may echo a header or a URL)."""
    return _KEYLIKE.sub("[redacted]", text)[:300]


class DecisionTrail:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.decisions_enabled
        self.topic = settings.topic("decisions")
        self.redact = frozenset(t.strip() for t in settings.redact_prompt_tenants.split(",") if t.strip())
        self._notes: dict[str, dict[str, Any]] = {}  # request id -> semantic-miss facts, until it is routed

    def _record(
        self, rid: str, stage: str, verdict: str, tenant: str, session: str, reason: str | None, data: dict[str, Any]
    ) -> list[Outgoing]:
        record = {
            "v": SCHEMA_VERSION,
            "id": rid,
            "stage": stage,
            "verdict": verdict,
            "tenant": tenant,
            "session": session,
            "reason": reason,
            "at": now_ms(),
            "data": data,
        }
        return [Outgoing(self.topic, rid.encode(), orjson.dumps(record))]

    # admit ---------------------------------------------------------------------------------------------------

    def prompt_facts(self, request: Request) -> dict[str, Any]:
        chat = request.chat()
        chars = sum(len(m.content) for m in chat)
        facts: dict[str, Any] = {"prompt_chars": chars, "messages": len(chat)}
        if request.tenant in self.redact:
            digest = hashlib.sha256("\x1e".join(m.content for m in chat).encode("utf-8", "replace"))
            facts["prompt_sha256"] = digest.hexdigest()
        else:
            last = next((m.content for m in reversed(chat) if m.role == "user"), chat[-1].content if chat else "")
            facts["prompt"] = last[:PROMPT_EXCERPT_CHARS]
        return facts

    def admit(
        self,
        request: Request,
        verdict: str,
        reason: str | None = None,
        *,
        requested_max_tokens: int | None = None,
        guard: Any = None,  # streams.stages.guard.GuardVerdict, or None when no guard ran
        tenant_budget: bool = False,
        detail: str | None = None,
    ) -> list[Outgoing]:
        if not self.enabled:
            return []
        data = self.prompt_facts(request)
        data["max_tokens"] = request.max_tokens
        if requested_max_tokens is not None and requested_max_tokens != request.max_tokens:
            data["clamped_from"] = requested_max_tokens
        data["priority"] = request.priority
        if request.feature:
            data["feature"] = request.feature
        if guard is not None:
            if not guard.allow and guard.reason == "breaker":
                data["breaker"] = guard.detail or "open"
            else:
                data["breaker"] = "ok"
                data["budget"] = "rejected" if not guard.allow else round(float(guard.reserved_usd), 8)
        if tenant_budget:
            data["tenant_budget"] = True
        if detail:
            data["detail"] = detail
        return self._record(request.id, "admit", verdict, request.tenant, request.session, reason, data)

    def dead_letter(self, request_id: str | None, partial: dict[str, Any], reason: str) -> list[Outgoing]:
        """A message that could not be parsed; recorded only when it carried an id to key it by."""
        if not self.enabled or not request_id:
            return []
        tenant, session = str(partial.get("tenant") or ""), str(partial.get("session") or "")
        return self._record(request_id, "admit", "deadletter", tenant, session, reason, {})

    def tenant_budget(self, request: Request, ok: bool, reserved_usd: float) -> list[Outgoing]:
        if not self.enabled:
            return []
        data = {"budget": round(float(reserved_usd), 8) if ok else "rejected", "scope": "tenant"}
        verdict, reason = ("admitted", None) if ok else ("rejected", "budget")
        return self._record(request.id, "tenant_budget", verdict, request.tenant, request.session, reason, data)

    # lookup --------------------------------------------------------------------------------------------------

    def note_semantic(
        self, request_id: str, candidates: Sequence[Any], scores: Sequence[float], context: str, threshold: float
    ) -> None:
        """Remember a semantic miss's candidates until :meth:`routed` (no await lies between the two)."""
        if not self.enabled:
            return
        if len(self._notes) > 10_000:  # only an exception between note and route leaves one behind
            self._notes.clear()
        self._notes[request_id] = {
            "candidates": [
                [round(float(c.cosine), 4), round(float(s), 4), 1 if c.context == context else 0]
                for c, s in zip(candidates, scores, strict=True)
            ],
            "threshold": threshold,
        }

    def hit(
        self,
        request: Request,
        cache: dict[str, Any],
        source: dict[str, Any],
        candidates: Sequence[Any] = (),
        scores: Sequence[float] = (),
        context: str = "",
    ) -> list[Outgoing]:
        """An exact, semantic or coalesced answer; ``source`` is the cached answer (its tier and tokens are
        what replay charges if a candidate config turns this hit into a miss)."""
        if not self.enabled:
            return []
        facts = dict(cache)
        facts["source_tier"] = source.get("tier") or ""
        usage = source.get("usage") or {}
        facts["saved"] = [int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)]
        if candidates:
            facts["candidates"] = [
                [round(float(c.cosine), 4), round(float(s), 4), 1 if c.context == context else 0]
                for c, s in zip(candidates, scores, strict=True)
            ]
        kind = str(cache.get("kind") or "exact")
        return self._record(request.id, "lookup", kind, request.tenant, request.session, None, {"cache": facts})

    def joined(self, request: Request, leader: str) -> list[Outgoing]:
        """A request that joined an identical one in flight: it is answered when the leader completes."""
        if not self.enabled:
            return []
        data = {"cache": {"kind": "coalesced", "source_id": leader, "pending": True}}
        return self._record(request.id, "lookup", "coalesced", request.tenant, request.session, None, data)

    def routed(self, job: Job, route: dict[str, Any], backlog: int | None) -> list[Outgoing]:
        """A cache miss (or a request that may not use the cache) and where the router sent it."""
        request = job.request
        note = self._notes.pop(request.id, None)
        if not self.enabled:
            return []
        cache: dict[str, Any] = {"kind": "miss", **(note or {"candidates": []})}
        if not request.cache or request.cache_refresh:
            cache["kind"] = "skip" if not request.cache else "refresh"
        keep = ("tier", "reason", "score", "knob", "kind")
        facts = {k: route[k] for k in keep if k in route}
        if backlog is not None:
            facts["backlog"] = backlog
        data = {"cache": cache, "route": facts}
        return self._record(request.id, "lookup", cache["kind"], request.tenant, request.session, None, data)

    # tiers and meter -----------------------------------------------------------------------------------------

    def tier(self, stage: str, job: Job, response: Response) -> list[Outgoing]:
        """A local or cloud tier's outcome: who served it, with what tokens and cost, after which failures."""
        if not self.enabled:
            return []
        route = response.route or {}
        data: dict[str, Any] = {
            "tier": job.tier,
            "served": response.tier,
            "model": response.model,
            "usage": [response.usage.prompt_tokens, response.usage.completion_tokens],
            "cost_usd": response.cost_usd,
        }
        for k in ("provider", "attempts", "fallback", "generation_ms"):
            if k in route:
                data[k] = route[k]
        if route.get("chain"):
            data["chain"] = [scrub(str(c)) for c in route["chain"]]
        reason = scrub(response.reason) if response.reason else None
        return self._record(response.id, stage, response.status, response.tenant, response.session, reason, data)

    def final(self, response: Response, usage: dict[str, Any]) -> list[Outgoing]:
        """The meter's verdict: what the request finally was and cost (the same numbers as ``sluice.usage``)."""
        if not self.enabled:
            return []
        data = {
            "status": response.status,
            "tier": response.tier,
            "route_tier": (response.route or {}).get("tier"),
            "model": response.model,
            "usage": [usage["prompt_tokens"], usage["completion_tokens"]],
            "cost_usd": usage["cost_usd"],
            "baseline_cost_usd": usage["baseline_cost_usd"],
            "cache": usage["cache"],
            "attempts": usage["attempts"],
            "latency_ms": usage["latency_ms"],
        }
        reason = scrub(response.reason) if response.reason else None
        return self._record(response.id, "meter", response.status, response.tenant, response.session, reason, data)
