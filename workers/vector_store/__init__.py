"""Vector-store adapters for the semantic cache (``workers.ports.VectorStore``): Qdrant Edge in-process (the
default: no server to run) and a Qdrant server (shared by many workers). Both hard-partition by tenant."""

from __future__ import annotations

from typing import Any

from workers.errors import ConfigError
from workers.ports import VectorStore
from workers.vector_store._common import VectorStoreError
from workers.vector_store.edge import EdgeVectorStore
from workers.vector_store.server import QdrantServerStore

__all__ = ["EdgeVectorStore", "QdrantServerStore", "VectorStoreError", "open_vector_store"]


def open_vector_store(kind: str, **kwargs: Any) -> VectorStore:
    """``kind="edge"``: ``EdgeVectorStore(path=..., dim=...)``; ``kind="server"``: ``QdrantServerStore(url=...)``."""
    if kind == "edge":
        return EdgeVectorStore(**kwargs)
    if kind == "server":
        return QdrantServerStore(**kwargs)
    raise ConfigError(f"unknown vector store kind {kind!r} (expected 'edge' or 'server')")
