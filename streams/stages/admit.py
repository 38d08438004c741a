"""Admission stage: validate, dead-letter bad input, apply limits, then hand over to the cache stage.

Runs on ``sluice.requests`` (key: session) and re-keys admitted requests by dedup key onto ``sluice.lookup``.
Pure apart from the ``reply_topic_exists`` callback, so it is tested without a broker; the Faust agent
only reads, calls :meth:`AdmitStage.handle` and sends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import yaml

from schemas.parse import InvalidMessage, Limits, parse_request
from schemas.records import Job, Request, Response, dumps
from streams.policy.admission import AdmissionLimits, TenantLimits, admit
from streams.policy.cache_key import dedup_key
from streams.settings import Settings
from streams.stages.decisions import DecisionTrail
from streams.stages.guard import SessionGuard
from streams.stages.outgoing import Outgoing, Source, dead_letter, response_messages
from streams.stages.shortcut import ExactShortcut
from streams.stages.tenant_budget import forward_job, forward_usage
from streams.topics import topic_names
from workers.errors import ConfigError


class AdmitStage:
    def __init__(
        self,
        settings: Settings,
        reply_topic_exists: Callable[[str], Awaitable[bool]] | None = None,
        guard: SessionGuard | None = None,
        shortcut: ExactShortcut | None = None,
    ) -> None:
        self.settings = settings
        self.limits = Limits(settings.max_message_bytes, settings.max_prompt_chars, settings.default_max_tokens)
        self.admission, self.tenant_budgets = load_tenant_limits(settings)
        self.reply_topic_exists = reply_topic_exists or _any_topic
        # Sluice's own topics (a reply inbox under the prefix, e.g. ``sluice.inbox.svc-a``, is the user's).
        self._internal_topics = frozenset(topic_names(settings)) - {settings.topic("responses")}
        self.guard = guard
        self.shortcut = shortcut  # set by the worker when this process also runs the cache role
        self.counts: Counter[str] = Counter()  # "admitted", "deadletter:<reason>", "rejected:<reason>"
        self.trail = DecisionTrail(settings)

    async def handle(self, raw: bytes, source: Source) -> list[Outgoing]:
        try:
            request = parse_request(raw, self.limits)
        except InvalidMessage as exc:
            return await self._invalid(raw, source, exc)
        reply_ok = request.reply_to is None or await self._reply_ok(request.reply_to)
        verdict = admit(request, self.admission.for_tenant(request.tenant), reply_topic_ok=reply_ok)
        if not verdict.admitted:
            reason = verdict.reason or "rejected"
            self.counts[f"rejected:{reason}"] += 1
            # An unknown reply_to cannot be written to: the rejection goes to sluice.responses only.
            reply_to = request.reply_to if reply_ok else None
            decided = self.trail.admit(request, "rejected", reason)
            return response_messages(Response.rejected(request, reason), self._topic("responses"), reply_to) + decided
        requested_max_tokens = request.max_tokens
        if verdict.max_tokens != request.max_tokens:
            request = _with_max_tokens(request, verdict.max_tokens)
        params = {"max_tokens": verdict.max_tokens}
        key = dedup_key(request.tenant, request.chat(), params)
        route_info: dict[str, Any] = {"notes": list(verdict.notes)} if verdict.notes else {}
        if request.feature:
            route_info["feature"] = request.feature  # carried to the response for cost attribution
        job = Job(request=request, tier="", key=key, route=route_info)
        budgeted = request.tenant in self.tenant_budgets
        # An exact hit this process can answer: no hop through sluice.lookup (see streams/stages/shortcut.py).
        # A tenant-wide budget's single writer must still see the request, so its tenants take the long way.
        hit = self.shortcut.find(job) if self.shortcut is not None and not budgeted else None
        events: list[Outgoing] = []
        guarded = None
        if self.guard is not None:
            guarded, events = self.guard.admit(request, source.partition, settle_usd=None if hit is None else 0.0)
            if not guarded.allow:
                reason = guarded.reason or "rejected"
                self.counts[f"rejected:{reason}"] += 1
                response = Response.rejected(request, reason)
                if guarded.detail:
                    response = _with_route(response, {"detail": guarded.detail})
                decided = self.trail.admit(
                    request, "rejected", reason, requested_max_tokens=requested_max_tokens, guard=guarded
                )
                return events + response_messages(response, self._topic("responses"), request.reply_to) + decided
        self.counts["admitted"] += 1
        decided = self.trail.admit(
            request, "admitted", requested_max_tokens=requested_max_tokens, guard=guarded, tenant_budget=budgeted
        )
        if budgeted:  # a tenant-wide budget: its single writer decides first
            return [*events, forward_job(self.settings, request.tenant, job.to_dict()), *decided]
        if hit is not None and self.shortcut is not None:
            return [*events, *decided, *self.shortcut.answer(job, hit)]
        return [*events, Outgoing(self._topic("lookup"), key.encode(), dumps(job)), *decided]

    async def settle(self, raw: bytes, source: Source | None = None) -> list[Outgoing]:
        """A ``sluice.usage`` record: settle its session's reservation (idempotent per request id)."""
        try:
            usage = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(usage, dict) or "id" not in usage or "session" not in usage:
            return []
        partition = None if source is None else source.partition
        out = self.guard.settle(usage, partition) if self.guard is not None else []
        tenant = usage.get("tenant")
        if isinstance(tenant, str) and tenant in self.tenant_budgets:
            out.append(forward_usage(self.settings, tenant, usage))
        return out

    async def _invalid(self, raw: bytes, source: Source, exc: InvalidMessage) -> list[Outgoing]:
        self.counts[f"deadletter:{exc.reason}"] += 1
        out = [dead_letter(self._topic("deadletter"), raw, source, exc)]
        request_id = exc.request_id
        if request_id:
            partial = exc.partial
            rejected = Response(
                id=request_id,
                tenant=partial.get("tenant", ""),
                session=partial.get("session", ""),
                status="rejected",
                reason=exc.reason,
            )
            reply_to = partial.get("reply_to")
            if reply_to and not await self._reply_ok(reply_to):
                reply_to = None
            out.extend(response_messages(rejected, self._topic("responses"), reply_to))
        return out + self.trail.dead_letter(request_id, exc.partial, exc.reason)

    def _topic(self, name: str) -> str:
        return self.settings.topic(name)

    async def _reply_ok(self, name: str) -> bool:
        """An existing topic that is not Sluice's own: a reply_to naming an internal topic (or a table's
        changelog) would let a requester inject records there, e.g. forged usage that settles budgets."""
        internal = name in self._internal_topics or name.startswith((f"{self.settings.topic_prefix}-", "__"))
        return not internal and await self.reply_topic_exists(name)


def load_tenant_limits(settings: Settings) -> tuple[TenantLimits, dict[str, tuple[float | None, float | None]]]:
    """Global limits from settings, per-tenant overrides and tenant budgets from ``SLUICE_TENANTS_FILE``
    (YAML ``tenants: {acme: {max_tokens, max_prompt_chars, over_limit, budget_soft_usd, budget_hard_usd}}``)."""
    default = AdmissionLimits(
        max_tokens_limit=settings.max_tokens_limit, clamp_max_tokens=settings.over_limit == "clamp"
    )
    if not settings.tenants_file:
        return TenantLimits(default), {}
    try:
        doc = yaml.safe_load(Path(settings.tenants_file).read_text()) or {}
        budgets: dict[str, tuple[float | None, float | None]] = {}
        for name, raw in (doc.get("tenants") or {}).items():
            if isinstance(raw, dict) and ("budget_soft_usd" in raw or "budget_hard_usd" in raw):
                soft, hard = raw.get("budget_soft_usd"), raw.get("budget_hard_usd")
                budgets[str(name)] = (None if soft is None else float(soft), None if hard is None else float(hard))
        return TenantLimits.from_mapping(default, doc), budgets
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise ConfigError(f"SLUICE_TENANTS_FILE: {exc}") from exc


async def _any_topic(_: str) -> bool:
    return True


def _with_max_tokens(request: Request, max_tokens: int) -> Request:
    return replace(request, max_tokens=max_tokens)


def _with_route(response: Response, extra: dict[str, Any]) -> Response:
    return replace(response, route={**response.route, **extra})
