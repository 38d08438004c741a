"""Strict decoding of raw topic bytes into records.

Every failure raises :class:`InvalidMessage` with a short machine-readable ``reason`` (for the dead-letter
record and metrics) and whatever identifying fields could be read, so the requester can still be told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.records import (
    PRIORITIES,
    ROLES,
    SCHEMA_VERSION,
    CachePurge,
    Decision,
    Job,
    Message,
    Request,
    Response,
    Result,
    new_id,
    now_ms,
)
from schemas.streaming import Cancel, Chunk

_NAME_MAX = 256  # tenant, session, id, reply_to
# Deeper metadata would parse but could not be re-encoded inside a job (orjson.dumps stops at 254 levels).
_METADATA_MAX_DEPTH = 32
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


class InvalidMessage(ValueError):
    """Raw bytes that are not a valid record; ``reason`` is one of the codes in docs/topics.md."""

    def __init__(self, reason: str, detail: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.partial = partial or {}

    @property
    def request_id(self) -> str | None:
        value = self.partial.get("id")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 1_000_000
    max_prompt_chars: int = 32_000
    default_max_tokens: int = 128


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidMessage("oversized", f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("invalid_utf8", str(exc)) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("malformed_json", str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidMessage("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    return data


def _partial(data: dict[str, Any]) -> dict[str, Any]:
    """Identifying fields that look usable, for a rejection reply to a message that failed later checks."""
    out: dict[str, Any] = {}
    for name in ("id", "tenant", "session", "reply_to"):
        value = data.get(name)
        if isinstance(value, str) and 0 < len(value) <= _NAME_MAX:
            out[name] = value
    return out


def _str(data: dict[str, Any], name: str, *, required: bool, partial: dict[str, Any]) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidMessage(f"missing_field:{name}", f"'{name}' is required", partial)
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"wrong_type:{name}", f"'{name}' must be a string", partial)
    if required and not value.strip():
        raise InvalidMessage(f"missing_field:{name}", f"'{name}' must not be empty", partial)
    if len(value) > _NAME_MAX:
        raise InvalidMessage(f"too_long:{name}", f"'{name}' is over {_NAME_MAX} characters", partial)
    return value


def _messages(value: Any, partial: dict[str, Any]) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidMessage("wrong_type:messages", "'messages' must be a non-empty list", partial)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidMessage("wrong_type:messages", f"messages[{i}] must be an object", partial)
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise InvalidMessage("wrong_type:messages", f"messages[{i}].role must be one of {ROLES}", partial)
        if not isinstance(content, str):
            raise InvalidMessage("wrong_type:messages", f"messages[{i}].content must be a string", partial)
        out.append(Message(role=role, content=content))
    return tuple(out)


def parse_request(raw: bytes, limits: Limits = Limits()) -> Request:
    """Decode and validate a ``sluice.requests`` message."""
    data = _load_object(raw, limits.max_message_bytes)
    partial = _partial(data)
    version = data.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"schema version {version!r} is not supported", partial)
    # A generated id is not added to ``partial``: nobody could correlate a rejection sent under it.
    request_id = _str(data, "id", required=False, partial=partial) or new_id()
    tenant = _str(data, "tenant", required=True, partial=partial)
    session = _str(data, "session", required=True, partial=partial)
    reply_to = _str(data, "reply_to", required=False, partial=partial)
    if reply_to is not None and (not _TOPIC_NAME.fullmatch(reply_to) or reply_to in (".", "..")):
        partial.pop("reply_to", None)  # not a topic anyone could read: the rejection goes to responses only
        raise InvalidMessage("wrong_type:reply_to", "'reply_to' must be a Kafka topic name", partial)
    prompt = data.get("prompt")
    messages: tuple[Message, ...] = ()
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidMessage("wrong_type:prompt", "'prompt' must be a string", partial)
    if data.get("messages") is not None:
        messages = _messages(data["messages"], partial)
    if (prompt is None) == (not messages):
        raise InvalidMessage("missing_field:prompt", "give exactly one of 'prompt' or 'messages'", partial)
    chars = len(prompt or "") + sum(len(m.content) for m in messages)
    if chars > limits.max_prompt_chars:
        raise InvalidMessage(
            "prompt_too_long", f"prompt is {chars} characters, limit {limits.max_prompt_chars}", partial
        )
    max_tokens = data.get("max_tokens", limits.default_max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidMessage("wrong_type:max_tokens", "'max_tokens' must be a positive integer", partial)
    priority = data.get("priority", "interactive")
    if priority not in PRIORITIES:
        raise InvalidMessage("wrong_type:priority", f"'priority' must be one of {PRIORITIES}", partial)
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidMessage("wrong_type:metadata", "'metadata' must be an object", partial)
    if _depth(metadata) > _METADATA_MAX_DEPTH:
        raise InvalidMessage("too_deep:metadata", f"'metadata' nests deeper than {_METADATA_MAX_DEPTH}", partial)
    cache, refresh = data.get("cache", True), data.get("cache_refresh", False)
    if not isinstance(cache, bool) or not isinstance(refresh, bool):
        raise InvalidMessage("wrong_type:cache", "'cache' and 'cache_refresh' must be booleans", partial)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidMessage("wrong_type:stream", "'stream' must be a boolean", partial)
    created_at = data.get("created_at")
    if not isinstance(created_at, int) or isinstance(created_at, bool) or created_at <= 0:
        created_at = now_ms()
    return Request(
        id=request_id,
        tenant=tenant or "",
        session=session or "",
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        priority=priority,
        reply_to=reply_to,
        metadata=metadata,
        created_at=created_at,
        cache=cache,
        cache_refresh=refresh,
        stream=stream,
    )


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: hostile input must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def request_from_dict(data: dict[str, Any]) -> Request:
    """Rebuild a request that Sluice itself wrote (already validated; no limits applied)."""
    return parse_request(orjson.dumps(data), Limits(max_message_bytes=1 << 62, max_prompt_chars=1 << 62))


def parse_job(raw: bytes) -> Job:
    return job_from_dict(_load_object(raw, 1 << 62))


def parse_lookup(raw: bytes) -> Job | CachePurge:
    """A ``sluice.lookup`` message: a job, or a cache command."""
    data = _load_object(raw, 1 << 62)
    if data.get("command") == "purge":
        tenant, cutoff = data.get("tenant"), data.get("older_than_ms")
        if not isinstance(tenant, str) or not (cutoff is None or isinstance(cutoff, int)):
            raise InvalidMessage("malformed_command", "purge needs a tenant and an optional integer cutoff")
        return CachePurge(id=str(data.get("id") or new_id()), tenant=tenant, older_than_ms=cutoff)
    return job_from_dict(data)


def job_from_dict(data: dict[str, Any]) -> Job:
    if not isinstance(data, dict):
        raise InvalidMessage("malformed_job", f"a job must be an object, got {type(data).__name__}")
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"job schema version {data.get('v')!r} is not supported")
    try:
        request = request_from_dict(data["request"])
        return Job(
            request=request,
            tier=str(data["tier"]),
            key=str(data["key"]),
            route=dict(data.get("route") or {}),
            admitted_at=int(data.get("admitted_at") or now_ms()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidMessage):
            raise
        raise InvalidMessage("malformed_job", str(exc)) from None


def parse_result(raw: bytes) -> Result:
    data = _load_object(raw, 1 << 62)
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"result schema version {data.get('v')!r} is not supported")
    try:
        return Result(job=job_from_dict(data["job"]), response=Response.from_dict(data["response"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidMessage):
            raise
        raise InvalidMessage("malformed_result", str(exc)) from None


def parse_response(raw: bytes) -> Response:
    data = _load_object(raw, 1 << 62)
    try:
        return Response.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # e.g. "usage": [] has no .get
        raise InvalidMessage("malformed_response", str(exc)) from None


def parse_decision(raw: bytes) -> Decision:
    """A ``sluice.decisions`` record (``sluice replay`` reads them); unknown versions are refused."""
    data = _load_object(raw, 1 << 62)
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"decision schema version {data.get('v')!r} is not supported")
    try:
        return Decision.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage("malformed_decision", str(exc)) from None


def parse_chunk(raw: bytes) -> Chunk:
    """A ``sluice.chunks`` (or ``reply_to``) record of a streamed reply."""
    data = _load_object(raw, 1 << 62)
    if data.get("type") != "chunk":
        raise InvalidMessage("not_a_chunk", "record has no type 'chunk'")
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"chunk schema version {data.get('v')!r} is not supported")
    rid, seq, text = data.get("id"), data.get("seq"), data.get("text")
    if not isinstance(rid, str) or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidMessage("malformed_chunk", "a chunk needs a string id and an integer seq >= 0")
    if not isinstance(text, str):
        raise InvalidMessage("malformed_chunk", "a chunk's text must be a string")
    return Chunk(
        id=rid,
        seq=seq,
        text=text,
        tenant=str(data.get("tenant") or ""),
        session=str(data.get("session") or ""),
        created_at=int(data.get("created_at") or 0),
    )


def parse_cancel(raw: bytes) -> Cancel:
    """A ``sluice.cancel`` command."""
    data = _load_object(raw, 1 << 62)
    rid = data.get("id")
    if data.get("type") != "cancel" or not isinstance(rid, str) or not rid:
        raise InvalidMessage("malformed_cancel", "a cancel needs type 'cancel' and a string id")
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidMessage("unknown_version", f"cancel schema version {data.get('v')!r} is not supported")
    return Cancel(id=rid, reason=str(data.get("reason") or "cancelled"), at=int(data.get("at") or 0))
