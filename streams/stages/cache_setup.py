"""Builds the cache role's parts from settings: policy (with per-tenant/route thresholds), embedder,
vector store and verifier. Kept apart from the agents so tools (``sluice cache purge``, benchmarks) reuse it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.policy.cache_policy import CachePolicy
from streams.settings import Settings
from workers.embedding.batcher import BatchingEmbedder
from workers.errors import ConfigError
from workers.ports import VectorStore


def load_policy(settings: Settings) -> CachePolicy:
    from streams.policy.verifier import DEFAULT_MIN_COSINE, DEFAULT_THRESHOLD

    data: dict[str, Any] = {}
    if settings.cache_policy_file:
        try:
            data = yaml.safe_load(Path(settings.cache_policy_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read SLUICE_CACHE_POLICY_FILE: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("SLUICE_CACHE_POLICY_FILE must hold a mapping")
    threshold = settings.cache_threshold if settings.cache_threshold >= 0 else DEFAULT_THRESHOLD
    min_cosine = settings.cache_min_cosine if settings.cache_min_cosine >= 0 else DEFAULT_MIN_COSINE
    return CachePolicy(
        enabled=settings.cache_enabled,
        ttl_s=float(data.get("ttl_s", settings.cache_ttl_s)),
        max_entries_per_tenant=int(data.get("max_entries_per_tenant", settings.cache_max_entries)),
        min_cosine=float(data.get("min_cosine", min_cosine)),
        threshold=float(data.get("threshold", threshold)),
        tenant_thresholds={str(k): float(v) for k, v in (data.get("tenants") or {}).items()},
        route_thresholds={str(k): float(v) for k, v in (data.get("routes") or {}).items()},
    )


def open_store(settings: Settings) -> VectorStore:
    from workers.vector_store import open_vector_store

    if settings.vector_store == "server":
        if not settings.qdrant_url:
            raise ConfigError("SLUICE_VECTOR_STORE=server needs SLUICE_QDRANT_URL")
        return open_vector_store(
            "server",
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key or None,
            collection_prefix=settings.topic_prefix,
        )
    if settings.vector_store == "edge":
        return open_vector_store("edge", path=Path(settings.data_dir) / "vectors" / settings.topic_prefix)
    raise ConfigError(f"unknown SLUICE_VECTOR_STORE {settings.vector_store!r} (edge | server)")


def open_embedder(settings: Settings) -> BatchingEmbedder:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    model = FastEmbedEmbedder(threads=settings.embed_threads, batch_size=settings.embed_batch)
    return BatchingEmbedder(model, max_batch=settings.embed_batch, max_wait_ms=settings.embed_wait_ms)


@dataclass
class CacheParts:
    policy: CachePolicy
    embedder: BatchingEmbedder
    store: VectorStore
    verify: Any


def build_cache_parts(settings: Settings) -> CacheParts:
    from streams.policy.verifier import Verifier

    verifier = Verifier.load()
    return CacheParts(load_policy(settings), open_embedder(settings), open_store(settings), verifier.score)
