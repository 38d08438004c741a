"""Streamed-reply records: the chunks of a reply as it is generated, and the cancel that stops generation.

Kept apart from ``records.py`` (requests, responses and the pipeline's own records): only streaming uses these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from schemas.records import SCHEMA_VERSION, now_ms


@dataclass(frozen=True)
class Chunk:
    """Part of a streamed reply, on ``sluice.chunks`` (key: request id) and ``reply_to``: ``seq`` counts from 0
    per request id; the final ``Response`` (on ``sluice.responses``) follows and carries usage and cost. A chunk
    is never metered. Redelivery may repeat chunks: keep the first per (id, seq)."""

    id: str
    seq: int
    text: str
    tenant: str = ""
    session: str = ""
    created_at: int = field(default_factory=now_ms)
    type: str = "chunk"
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cancel:
    """Stop generating for a request (its streamed consumer went away), on ``sluice.cancel`` (key: request id).
    Every worker process reads all of it, without a consumer group."""

    id: str
    reason: str = "client_disconnected"
    at: int = field(default_factory=now_ms)
    type: str = "cancel"
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
