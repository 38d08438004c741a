"""Semantic-cache storage on a Qdrant server (``qdrant_client.AsyncQdrantClient``), for deployments where several
workers share one cache (docker-compose runs ``http://qdrant:6333``). Tests use the client's local mode
(``location=":memory:"`` or ``path=...``), which runs the same API in-process without a server.

Isolation: ONE collection for all tenants with a mandatory tenant filter applied by the server inside every
query, count, scroll and delete; this is Qdrant's documented multitenancy design. ``tenant`` is a keyword index
with ``is_tenant=True`` (the server co-locates each tenant's points) and HNSW uses ``m=0, payload_m=16`` so a
graph is built per tenant and never links tenants. Why not a collection per tenant: every collection costs the
server its own segments, WAL and optimizer, which does not scale to many small tenants, and arbitrary tenant
strings would need hashing into names. Point ids hash (tenant, entry_id), and each hit's stored tenant is
re-checked before it is returned (fail closed).

Collection and payload indexes are created on first use (concurrent workers may race: "already exists" is
fine). Local mode ignores payload indexes, so they are only created on a real server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from workers.errors import ConfigError
from workers.ports import VectorHit
from workers.vector_store._common import (
    CREATED_AT,
    TENANT,
    VectorStoreError,
    batch_inputs,
    check_created_at,
    check_tenant,
    check_vector,
    point_id,
    stored_payload,
    to_hit,
)

T = TypeVar("T")
_CHUNK = 500  # points per upsert request (~2 MB of JSON at dim 384)
_EVICT_PAGE = 1000


def _filter(tenant: str, *, min_created_at_ms: int | None = None, older_than_ms: int | None = None) -> qm.Filter:
    """Every read and delete goes through this: the tenant condition is always present."""
    must: list[qm.Condition] = [qm.FieldCondition(key=TENANT, match=qm.MatchValue(value=tenant))]
    if min_created_at_ms is not None:
        must.append(qm.FieldCondition(key=CREATED_AT, range=qm.Range(gte=min_created_at_ms)))
    if older_than_ms is not None:
        must.append(qm.FieldCondition(key=CREATED_AT, range=qm.Range(lt=older_than_ms)))
    return qm.Filter(must=must)


def _translate(exc: Exception) -> VectorStoreError:
    """Connection problems, timeouts, 408/429/5xx may pass on retry; anything else is the request's fault."""
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code or 0
        retriable = code in (408, 429) or code >= 500
    else:
        retriable = isinstance(exc, ResponseHandlingException | httpx.TransportError | TimeoutError | OSError)
    return VectorStoreError(f"qdrant: {type(exc).__name__}: {exc}", retriable=retriable)


class QdrantServerStore:
    """``VectorStore`` on one Qdrant collection named ``{collection_prefix}_semcache_d{dim}``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        location: str | None = None,
        path: str | None = None,
        api_key: str | None = None,
        collection_prefix: str = "sluice",
        dim: int = 384,
        timeout: int = 5,
    ) -> None:
        if url is None and location is None and path is None:
            raise ConfigError("QdrantServerStore needs url, location or path")
        prefix = re.sub(r"[^A-Za-z0-9_-]", "_", collection_prefix)[:64]
        self.collection = f"{prefix}_semcache_d{dim}"
        self.dim = dim
        self._local = path is not None or location == ":memory:"
        self._client = AsyncQdrantClient(
            url=url, location=location, path=path, api_key=api_key, timeout=timeout, check_compatibility=False
        )
        self._ready = False
        self._closed = False
        self._lock = asyncio.Lock()

    async def _ensure_collection(self) -> None:
        client, name = self._client, self.collection
        if not await client.collection_exists(name):
            try:
                await client.create_collection(
                    name,
                    vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
                    hnsw_config=qm.HnswConfigDiff(m=0, payload_m=16),
                )
            except (UnexpectedResponse, ValueError):
                if not await client.collection_exists(name):  # lost a race to another worker: fine
                    raise
        params = (await client.get_collection(name)).config.params.vectors
        if isinstance(params, qm.VectorParams) and params.size != self.dim:
            raise VectorStoreError(f"collection {name} has dim {params.size}, want {self.dim}", retriable=False)
        if not self._local:  # idempotent on the server; local mode would only warn that indexes do nothing
            await client.create_payload_index(
                name, TENANT, qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True), wait=True
            )
            await client.create_payload_index(
                name,
                CREATED_AT,
                qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=False, range=True, is_principal=True),
                wait=True,
            )

    async def _call(self, op: Awaitable[T]) -> T:
        """Runs one client call after the collection exists, translating its errors."""
        try:
            if self._closed:
                raise VectorStoreError("qdrant store is closed", retriable=False)
            if not self._ready:
                async with self._lock:
                    if not self._ready:
                        await self._ensure_collection()
                        self._ready = True
            return await op
        except VectorStoreError:
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            if asyncio.iscoroutine(op):
                op.close()  # never awaited when setup failed: avoid the "never awaited" warning

    async def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        batch = qm.Batch(ids=list(ids), vectors=vectors.tolist(), payloads=payloads)
        await self._call(self._client.upsert(self.collection, points=batch, wait=True))

    async def upsert(
        self, tenant: str, entry_id: str, vector: np.ndarray, payload: dict[str, Any], created_at_ms: int
    ) -> None:
        check_tenant(tenant)
        vec = check_vector(vector, self.dim)
        stored = stored_payload(tenant, entry_id, payload, check_created_at(created_at_ms))
        await self._upsert([point_id(tenant, entry_id)], vec[None, :], [stored])

    async def upsert_many(
        self,
        tenant: str,
        entry_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
        created_at_ms: Sequence[int] | int,
    ) -> None:
        """Batch upsert (rows of ``vectors`` match ``entry_ids``); one request per 500 points."""
        ids, matrix, stored = batch_inputs(tenant, entry_ids, vectors, payloads, created_at_ms, self.dim)
        for lo in range(0, len(ids), _CHUNK):
            await self._upsert(ids[lo : lo + _CHUNK], matrix[lo : lo + _CHUNK], stored[lo : lo + _CHUNK])

    async def search(
        self, tenant: str, vector: np.ndarray, limit: int, min_created_at_ms: int | None = None
    ) -> list[VectorHit]:
        check_tenant(tenant)
        vec = check_vector(vector, self.dim)
        if limit <= 0:
            return []
        since = None if min_created_at_ms is None else check_created_at(min_created_at_ms)
        flt = _filter(tenant, min_created_at_ms=since)
        response = await self._call(
            self._client.query_points(
                self.collection, query=vec.tolist(), query_filter=flt, limit=int(limit), with_payload=True
            )
        )
        return [hit for p in response.points if (hit := to_hit(tenant, p.score, p.payload)) is not None]

    async def _count(self, flt: qm.Filter) -> int:
        result = await self._call(self._client.count(self.collection, count_filter=flt, exact=True))
        return result.count

    async def count(self, tenant: str) -> int:
        return await self._count(_filter(check_tenant(tenant)))

    async def evict_oldest(self, tenant: str, keep: int) -> int:
        """Delete the oldest entries so at most ``keep`` remain; returns how many were deleted."""
        if keep < 0:
            raise VectorStoreError("keep must be >= 0", retriable=False)
        flt = _filter(check_tenant(tenant))
        excess = await self._count(flt) - keep
        deleted = 0
        while excess > 0:
            oldest, _ = await self._call(
                self._client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=min(excess, _EVICT_PAGE),
                    order_by=qm.OrderBy(key=CREATED_AT, direction=qm.Direction.ASC),
                    with_payload=False,
                )
            )
            if not oldest:
                break
            selector = qm.PointIdsList(points=[r.id for r in oldest])
            await self._call(self._client.delete(self.collection, points_selector=selector, wait=True))
            deleted += len(oldest)
            excess -= len(oldest)
        return deleted

    async def purge(self, tenant: str, older_than_ms: int | None = None) -> int:
        """Delete a tenant's entries (all, or those created before ``older_than_ms``); returns the count
        (counted just before the delete, so concurrent writers can make it approximate)."""
        cutoff = None if older_than_ms is None else check_created_at(older_than_ms)
        flt = _filter(check_tenant(tenant), older_than_ms=cutoff)
        n = await self._count(flt)
        if n:
            selector = qm.FilterSelector(filter=flt)
            await self._call(self._client.delete(self.collection, points_selector=selector, wait=True))
        return n

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.close()
        except Exception as exc:
            raise _translate(exc) from exc
