"""Ports: the small interfaces that adapters implement (one adapter per backend)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from schemas.records import Message


@dataclass(frozen=True)
class Completion:
    """What a model produced for one request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str = "stop"


class LocalModel(Protocol):
    """A local model instance. ``generate`` blocks (native code): call it from an executor only.

    One instance serves one call at a time; pools hold several instances for concurrency.
    """

    name: str

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion: ...

    def close(self) -> None: ...


OnText = Callable[[str], None]  # receives each new piece of text, on the generating thread
Cancelled = Callable[[], bool]  # polled between tokens: True stops generation early


@runtime_checkable
class StreamingLocalModel(LocalModel, Protocol):
    """A local model that can hand out its tokens while generating (blocking, like ``generate``).

    ``stream`` calls ``on_text`` with each new piece and polls ``cancelled`` between tokens; when it returns
    True generation stops and the completion has ``finish_reason == "cancelled"`` and the tokens produced so
    far. Usage must equal what ``generate`` reports for the same output (metering must not depend on streaming).
    """

    def stream(
        self, messages: Sequence[Message], max_tokens: int, on_text: OnText, cancelled: Cancelled
    ) -> Completion: ...


class Embedder(Protocol):
    """Turns texts into L2-normalized vectors. ``embed`` blocks (ONNX): call it from an executor only."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class VectorHit:
    """A stored entry close to a query vector. ``score`` is cosine similarity (vectors are unit length)."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """Semantic-cache storage, hard-partitioned by tenant: a search never sees another tenant's entries.

    Entries carry ``created_at_ms`` so the cache can apply a TTL (``min_created_at_ms``) and evict oldest-first.
    """

    async def upsert(
        self, tenant: str, entry_id: str, vector: np.ndarray, payload: dict[str, Any], created_at_ms: int
    ) -> None: ...

    async def search(
        self, tenant: str, vector: np.ndarray, limit: int, min_created_at_ms: int | None = None
    ) -> list[VectorHit]: ...

    async def count(self, tenant: str) -> int: ...

    async def evict_oldest(self, tenant: str, keep: int) -> int:
        """Delete the oldest entries so at most ``keep`` remain; returns how many were deleted."""
        ...

    async def purge(self, tenant: str, older_than_ms: int | None = None) -> int:
        """Delete a tenant's entries (all, or those created before ``older_than_ms``); returns the count."""
        ...

    async def close(self) -> None: ...
