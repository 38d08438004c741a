"""Message records: the public contract on Sluice's topics (documented in docs/topics.md).

Records are plain frozen dataclasses encoded as JSON with orjson. Every record carries ``v``, the schema
version; readers reject versions they do not know rather than guess.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import orjson

SCHEMA_VERSION = 1

Priority = Literal["interactive", "batch"]
Status = Literal["ok", "rejected", "error", "cancelled"]
Tier = Literal["cache", "local", "cloud", "none"]
PRIORITIES: tuple[str, ...] = ("interactive", "batch")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


def _shallow(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, one level deep: ``dataclasses.asdict`` deep-copies every value on the
    hot path (a few percent of a busy worker), and records are encoded once, not mutated."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Request:
    """An inference request published to ``sluice.requests`` (key: session)."""

    id: str
    tenant: str
    session: str
    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    max_tokens: int = 128
    priority: str = "interactive"
    reply_to: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: int = field(default_factory=now_ms)
    cache: bool = True  # False: never answer from (or store into) the cache
    cache_refresh: bool = False  # True: skip cached answers, compute afresh and replace the entry
    stream: bool = False  # True: tokens also arrive as Chunk records (sluice.chunks, reply_to) before the response
    v: int = SCHEMA_VERSION

    def chat(self) -> list[Message]:
        """The conversation to send to a model: ``messages``, or ``prompt`` as one user turn."""
        if self.messages:
            return list(self.messages)
        return [Message(role="user", content=self.prompt or "")]

    @property
    def feature(self) -> str | None:
        value = self.metadata.get("feature")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        d = _shallow(self)
        d["metadata"] = dict(self.metadata)
        if self.messages:
            d["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        else:
            del d["messages"]
        if self.prompt is None:
            del d["prompt"]
        if self.cache:
            del d["cache"]
        if not self.cache_refresh:
            del d["cache_refresh"]
        if not self.stream:
            del d["stream"]
        return d


@dataclass(frozen=True)
class Response:
    """The final answer to one request, on ``sluice.responses`` (key: request id) and ``reply_to``."""

    id: str
    tenant: str
    session: str
    status: str
    text: str = ""
    tier: str = "none"
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    reason: str | None = None
    route: dict[str, Any] = field(default_factory=dict)
    created_at: int = field(default_factory=now_ms)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = _shallow(self)
        d["usage"] = {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens}
        d["route"] = dict(self.route)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Response:
        usage = d.get("usage") or {}
        return cls(
            id=str(d["id"]),
            tenant=str(d.get("tenant", "")),
            session=str(d.get("session", "")),
            status=str(d["status"]),
            text=str(d.get("text") or ""),
            tier=str(d.get("tier") or "none"),
            model=str(d.get("model") or ""),
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            cost_usd=float(d.get("cost_usd") or 0.0),
            latency_ms=float(d.get("latency_ms") or 0.0),
            reason=d.get("reason"),
            route=dict(d.get("route") or {}),
            created_at=int(d.get("created_at") or 0),
            v=int(d.get("v", SCHEMA_VERSION)),
        )

    @classmethod
    def rejected(cls, request: Request, reason: str, *, status: str = "rejected") -> Response:
        return cls(
            id=request.id,
            tenant=request.tenant,
            session=request.session,
            status=status,
            tier="none",
            reason=reason,
            latency_ms=float(max(0, now_ms() - request.created_at)),
            route={"feature": request.feature} if request.feature else {},
        )


@dataclass(frozen=True)
class Job:
    """Work for a tier pool, on ``sluice.tier.<name>`` (key: dedup key)."""

    request: Request
    tier: str
    key: str
    route: dict[str, Any] = field(default_factory=dict)
    admitted_at: int = field(default_factory=now_ms)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "request": self.request.to_dict(),
            "tier": self.tier,
            "key": self.key,
            "route": self.route,
            "admitted_at": self.admitted_at,
        }


@dataclass(frozen=True)
class Result:
    """A tier's answer to a job, on ``sluice.results`` (key: dedup key); the complete stage turns it into the
    final responses (the leader's and every coalesced waiter's) and stores it in the cache."""

    job: Job
    response: Response
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.v, "job": self.job.to_dict(), "response": self.response.to_dict()}


@dataclass(frozen=True)
class CachePurge:
    """A command on every partition of ``sluice.lookup``: drop a tenant's cache entries (``sluice cache purge``)."""

    id: str
    tenant: str
    older_than_ms: int | None = None  # entries created before this instant; None: all of them
    command: str = "purge"
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """A message Sluice could not accept, on ``sluice.deadletter``: nothing is dropped silently."""

    reason: str
    error: str
    source_topic: str
    partition: int
    offset: int
    original: str  # a bounded excerpt of the original bytes, decoded with replacement characters
    original_bytes: int
    truncated: bool
    request_id: str | None = None
    tenant: str | None = None
    time: int = field(default_factory=now_ms)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def dumps(record: Record | dict[str, Any]) -> bytes:
    """A record (anything with ``to_dict``) or a plain dict as JSON bytes."""
    data = record if isinstance(record, dict) else record.to_dict()
    return orjson.dumps(data)


DECISION_STAGES: tuple[str, ...] = ("admit", "tenant_budget", "lookup", "local", "cloud", "meter")


@dataclass(frozen=True)
class Decision:
    """One stage's verdict on one request, on ``sluice.decisions`` (key: request id): the audit trail, and the
    input of ``sluice replay``. ``data`` holds the stage's facts (docs/topics.md); never API keys, and no prompt
    text for tenants in ``SLUICE_REDACT_PROMPT_TENANTS``."""

    id: str
    stage: str  # one of DECISION_STAGES
    verdict: str  # admit: admitted|rejected|deadletter; lookup: exact|coalesced|semantic|miss; tiers: ok|error
    tenant: str = ""
    session: str = ""
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: int = field(default_factory=now_ms)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "stage": self.stage,
            "verdict": self.verdict,
            "tenant": self.tenant,
            "session": self.session,
            "reason": self.reason,
            "at": self.at,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(
            id=str(d["id"]),
            stage=str(d["stage"]),
            verdict=str(d.get("verdict") or ""),
            tenant=str(d.get("tenant") or ""),
            session=str(d.get("session") or ""),
            reason=d.get("reason"),
            data=dict(d.get("data") or {}),
            at=int(d.get("at") or 0),
            v=int(d.get("v", SCHEMA_VERSION)),
        )
