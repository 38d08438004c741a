"""OpenAI chat-completions shapes ↔ Sluice records: request translation, responses, headers and errors.

Pure (no aiohttp handlers, no Kafka): the HTTP layer in ``server.py`` calls these, and tests can too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from schemas.records import Message, Request, Response, new_id
from streams.ingress.keys import MAX_ID, ApiKey
from streams.settings import Settings
from streams.tiers import TierConfig

CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _text(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content parts are supported", param=f"messages[{i}].content")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ApiError(400, "content must be a string or a list of text parts", param=f"messages[{i}].content")


def _opt_str(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ApiError(400, f"{param} must be a non-empty string of at most {MAX_ID} characters", param=param)
    return value


def build_request(
    body: Any, key: ApiKey, headers: Mapping[str, str], tiers: TierConfig, settings: Settings
) -> tuple[Request, str]:
    """Translate an OpenAI chat request (plus Sluice's extra fields) into a Sluice request; the model asked for."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", param="stream")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported")
    if body.get("tools") or body.get("functions"):
        raise ApiError(400, "tools/functions are not supported", param="tools", code="unsupported")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    messages = []
    for i, m in enumerate(raw):
        role = m.get("role") if isinstance(m, Mapping) else None
        if role not in CHAT_ROLES:
            raise ApiError(400, f"role must be one of {', '.join(CHAT_ROLES)}", param=f"messages[{i}].role")
        messages.append(Message(CHAT_ROLES[role], _text(m.get("content"), i)))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        limit = settings.default_max_tokens
    elif not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ApiError(400, "max_tokens must be an integer >= 1", param="max_tokens")
    model: str = body["model"] if isinstance(body.get("model"), str) else "auto"
    rid = new_id()
    session = (
        _opt_str(headers.get("X-Sluice-Session"), "X-Sluice-Session")
        or _opt_str(body.get("sluice_session"), "sluice_session")
        or _opt_str(body.get("user"), "user")
        or key.session
        or f"req-{rid}"  # no session named: each request is its own (budgets and breakers need one)
    )
    meta = body.get("metadata")
    metadata: dict[str, Any] = dict(meta) if isinstance(meta, Mapping) else {}
    feature = _opt_str(body.get("sluice_feature") or headers.get("X-Sluice-Feature"), "sluice_feature") or key.feature
    if feature:
        metadata["feature"] = feature
    route = _opt_str(body.get("sluice_route"), "sluice_route")
    pinned = {t.name for t in tiers.tiers if t.kind != "cache"} | {t.kind for t in tiers.tiers if t.kind != "cache"}
    if route or model in pinned:  # a tier's name pins it; any other model name leaves the choice to the router
        metadata["route"] = route or model
    cache = body.get("sluice_cache", body.get("cache", True))
    refresh = body.get("sluice_cache_refresh", body.get("cache_refresh", False)) or cache == "refresh"
    priority = body.get("sluice_priority", body.get("priority", "interactive"))
    if priority not in ("interactive", "batch"):
        raise ApiError(400, "priority must be interactive or batch", param="priority")
    request = Request(
        id=rid,
        tenant=key.tenant,
        session=session,
        messages=tuple(messages),
        max_tokens=limit,
        priority=priority,
        metadata=metadata,
        cache=cache not in (False, "off", "false", "no"),
        cache_refresh=bool(refresh),
        stream=stream,
    )
    return request, model


def cache_kind(response: Response) -> str | None:
    cache = response.route.get("cache") if response.tier == "cache" else None
    return str(cache.get("kind")) if isinstance(cache, Mapping) and cache.get("kind") else None


def sluice_headers(response: Response) -> dict[str, str]:
    return {
        "X-Sluice-Tier": response.tier,
        "X-Sluice-Tier-Name": str(response.route.get("tier") or response.tier),
        "X-Sluice-Cache": cache_kind(response) or "miss",
        "X-Sluice-Cost-USD": f"{response.cost_usd:.8f}",
        "X-Sluice-Latency-Ms": f"{response.latency_ms:.0f}",
        "X-Sluice-Session": response.session,
        "X-Request-Id": response.id,
    }


def completion_body(response: Response, request: Request, model: str) -> dict[str, Any]:
    cache = response.route.get("cache") if cache_kind(response) else None
    saved = cache.get("saved_usage") if isinstance(cache, Mapping) else None
    produced = int((saved or {}).get("completion_tokens") or response.usage.completion_tokens)
    u = response.usage
    return {
        "id": f"chatcmpl-{response.id}",
        "object": "chat.completion",
        "created": (response.created_at or int(time.time() * 1000)) // 1000,
        "model": response.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if produced >= request.max_tokens else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
        },
        "system_fingerprint": None,
        "sluice": {
            "request_id": response.id,
            "tenant": response.tenant,
            "session": response.session,
            "tier": response.tier,
            "tier_name": response.route.get("tier") or response.tier,
            "cache": cache_kind(response),
            "cost_usd": response.cost_usd,
            "saved_cost_usd": float(cache.get("saved_cost_usd") or 0.0) if isinstance(cache, Mapping) else 0.0,
            "latency_ms": response.latency_ms,
            "route": response.route,
        },
    }


def rejection(response: Response, retry_after_s: float) -> ApiError:
    """Map a rejected/failed response to an HTTP error: budget 402, breaker 429, provider failure 502, else 400."""
    reason = response.reason or "rejected"
    detail = response.route.get("detail")
    headers = {**sluice_headers(response), "X-Sluice-Reason": reason}
    if response.status == "error":
        return ApiError(
            502, f"the model failed: {reason}", type_="server_error", code="upstream_error", headers=headers
        )
    headers["X-Should-Retry"] = "false"  # deliberate refusals: OpenAI SDKs must not retry them unchanged
    if reason == "budget":
        msg = "the session's budget is exhausted" + (f" ({detail})" if detail else "")
        return ApiError(402, msg, type_="insufficient_quota", code="budget_exceeded", headers=headers)
    if reason == "breaker":
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        msg = "the session's circuit breaker is open" + (f" ({detail})" if detail else "")
        return ApiError(429, msg, type_="rate_limit_error", code="session_breaker_open", headers=headers)
    return ApiError(400, f"request rejected: {reason}", code=reason, headers=headers)
