"""Semantic-cache storage on Qdrant Edge: Qdrant's own engine in-process, persistent under one data directory.

Why in-process: no server to run, ~1 ms searches at cache sizes, and the same engine (HNSW, payload indexes,
filters) as the Qdrant server adapter, so both stores behave alike.

Isolation: ONE shard for all tenants, partitioned by a mandatory tenant filter that the engine applies inside
the query (``tenant`` is a keyword index with ``is_tenant=True``; HNSW is built per tenant via ``m=0,
payload_m=16``, so a tenant's graph never links to another tenant's points). Why not a shard per tenant: each
shard preallocates ~100 MB of sparse WAL/segment files and its own search thread pool, too much for many small
tenants. Point ids hash (tenant, entry_id), so one tenant's upsert can never overwrite another's entry, and
every hit's stored tenant is re-checked before it is returned (fail closed).

Threading: EdgeShard calls block (the GIL is released while they run), so every call goes to one dedicated
worker thread: the event loop never blocks, and the shard is never used from two threads at once. The shard is
opened on that thread too, so construction does not block; an open failure (e.g. a dim mismatch, or another
store holding the directory: one opener at a time) surfaces on the first call.

Indexing: Edge has no background optimizer. New points sit in a plain (brute-force) segment, ~1 ms per 10k
points of one tenant; call :meth:`optimize` (blocks the store while it runs: seconds at 10k, minutes at 100k)
from a maintenance task to build HNSW and vacuum deleted points.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

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
_CHUNK = 1000  # points per engine update: big enough for throughput, small enough to let searches interleave
_EVICT_PAGE = 1000


def _filter(tenant: str, *, min_created_at_ms: int | None = None, older_than_ms: int | None = None) -> qe.Filter:
    """Every read and delete goes through this: the tenant condition is always present."""
    must: list[Any] = [qe.FieldCondition(TENANT, match=qe.MatchValue(tenant))]
    if min_created_at_ms is not None:
        must.append(qe.FieldCondition(CREATED_AT, range=qe.RangeFloat(gte=float(min_created_at_ms))))
    if older_than_ms is not None:
        must.append(qe.FieldCondition(CREATED_AT, range=qe.RangeFloat(lt=float(older_than_ms))))
    return qe.Filter(must=must)


class EdgeVectorStore:
    """``VectorStore`` on a Qdrant Edge shard at ``path`` (created on first use, re-opened after)."""

    def __init__(
        self,
        path: str | Path,
        dim: int = 384,
        *,
        ef_construct: int = 100,
        full_scan_threshold_kb: int = 10_000,
        max_search_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.dim = dim
        self._config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=0, ef_construct=ef_construct, full_scan_threshold=full_scan_threshold_kb, payload_m=16
            ),
            max_search_threads=max_search_threads,
        )
        self._shard: qe.EdgeShard | None = None
        self._open_error: str | None = None
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-edge")
        self._pool.submit(self._open)  # FIFO: runs before any later call

    # -- worker-thread side ------------------------------------------------------------------------------------

    def _open(self) -> None:
        shard: qe.EdgeShard | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if (self.path / "edge_config.json").exists():
                shard = qe.EdgeShard.load(str(self.path), self._config)  # checks dim compatibility
            else:
                shard = qe.EdgeShard.create(str(self.path), self._config)
            indexed = shard.info().payload_schema
            if TENANT not in indexed:
                shard.update(qe.UpdateOperation.create_field_index(TENANT, qe.KeywordIndexParams(is_tenant=True)))
            if CREATED_AT not in indexed:
                params = qe.IntegerIndexParams(lookup=False, range=True, is_principal=True, enable_hnsw=False)
                shard.update(qe.UpdateOperation.create_field_index(CREATED_AT, params))
            self._shard = shard
        except Exception as exc:
            self._open_error = str(exc)
            if shard is not None:  # release the directory's WAL lock
                shard.close()

    def _with_shard(self, fn: Callable[..., T], *args: Any) -> T:
        if self._shard is None:
            why = "is closed" if self._closed else f"did not open: {self._open_error}"
            raise VectorStoreError(f"edge store at {self.path} {why}", retriable=False)
        return fn(self._shard, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise VectorStoreError("edge store is closed", retriable=False)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(self._with_shard, fn, *args))
        except VectorStoreError:
            raise
        except RuntimeError as exc:  # executor shut down under us
            if self._closed:
                raise VectorStoreError("edge store is closed", retriable=False) from exc
            raise VectorStoreError(f"edge store: {exc}", retriable=False) from exc
        except Exception as exc:  # the engine raises plain Exception with a message
            raise VectorStoreError(f"edge store: {exc}", retriable=False) from exc

    @staticmethod
    def _upsert_points(shard: qe.EdgeShard, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        points = [qe.Point(i, v, p) for i, v, p in zip(ids, vectors, payloads, strict=True)]
        shard.update(qe.UpdateOperation.upsert_points(points))

    @staticmethod
    def _search(shard: qe.EdgeShard, tenant: str, vector: np.ndarray, limit: int, since: int | None) -> list[Any]:
        query = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector.tolist()),
            filter=_filter(tenant, min_created_at_ms=since),
            with_payload=True,
        )
        return [(p.score, p.payload) for p in shard.query(query)]

    @staticmethod
    def _count(shard: qe.EdgeShard, flt: qe.Filter) -> int:
        return shard.count(qe.CountRequest(exact=True, filter=flt))

    @staticmethod
    def _evict(shard: qe.EdgeShard, tenant: str, keep: int) -> int:
        flt = _filter(tenant)
        excess = shard.count(qe.CountRequest(exact=True, filter=flt)) - keep
        deleted = 0
        while excess > 0:
            oldest, _ = shard.scroll(
                qe.ScrollRequest(
                    limit=min(excess, _EVICT_PAGE),
                    filter=flt,
                    with_payload=False,
                    order_by=qe.OrderBy(CREATED_AT, qe.Direction.Asc),
                )
            )
            if not oldest:
                break
            shard.update(qe.UpdateOperation.delete_points([r.id for r in oldest]))
            deleted += len(oldest)
            excess -= len(oldest)
        return deleted

    @staticmethod
    def _purge(shard: qe.EdgeShard, flt: qe.Filter) -> int:
        n = shard.count(qe.CountRequest(exact=True, filter=flt))
        if n:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return n

    def _close_shard(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            try:
                shard.flush()
            finally:
                shard.close()

    # -- VectorStore -------------------------------------------------------------------------------------------

    async def upsert(
        self, tenant: str, entry_id: str, vector: np.ndarray, payload: dict[str, Any], created_at_ms: int
    ) -> None:
        check_tenant(tenant)
        vec = check_vector(vector, self.dim)
        stored = stored_payload(tenant, entry_id, payload, check_created_at(created_at_ms))
        await self._run(self._upsert_points, [point_id(tenant, entry_id)], vec[None, :], [stored])

    async def upsert_many(
        self,
        tenant: str,
        entry_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
        created_at_ms: Sequence[int] | int,
    ) -> None:
        """Batch upsert (rows of ``vectors`` match ``entry_ids``); one engine update per 1000 points."""
        ids, matrix, stored = batch_inputs(tenant, entry_ids, vectors, payloads, created_at_ms, self.dim)
        for lo in range(0, len(ids), _CHUNK):
            hi = lo + _CHUNK
            await self._run(self._upsert_points, ids[lo:hi], matrix[lo:hi], stored[lo:hi])

    async def search(
        self, tenant: str, vector: np.ndarray, limit: int, min_created_at_ms: int | None = None
    ) -> list[VectorHit]:
        check_tenant(tenant)
        vec = check_vector(vector, self.dim)
        if limit <= 0:
            return []
        since = None if min_created_at_ms is None else check_created_at(min_created_at_ms)
        raw = await self._run(self._search, tenant, vec, int(limit), since)
        return [hit for score, payload in raw if (hit := to_hit(tenant, score, payload)) is not None]

    async def count(self, tenant: str) -> int:
        return await self._run(self._count, _filter(check_tenant(tenant)))

    async def evict_oldest(self, tenant: str, keep: int) -> int:
        """Delete the oldest entries so at most ``keep`` remain; returns how many were deleted."""
        if keep < 0:
            raise VectorStoreError("keep must be >= 0", retriable=False)
        return await self._run(self._evict, check_tenant(tenant), int(keep))

    async def purge(self, tenant: str, older_than_ms: int | None = None) -> int:
        """Delete a tenant's entries (all, or those created before ``older_than_ms``); returns the count."""
        cutoff = None if older_than_ms is None else check_created_at(older_than_ms)
        return await self._run(self._purge, _filter(check_tenant(tenant), older_than_ms=cutoff))

    async def optimize(self) -> bool:
        """Build HNSW for new points and vacuum deleted ones; blocks this store's calls while it runs."""
        return await self._run(lambda shard: shard.optimize())

    async def flush(self) -> None:
        """Write pending changes to the segments (the WAL already makes them durable)."""
        await self._run(lambda shard: shard.flush())

    async def close(self) -> None:
        """Flush and release the shard (queued calls finish first); further calls raise."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close_shard)
        except Exception as exc:
            raise VectorStoreError(f"edge store close: {exc}", retriable=False) from exc
        finally:
            self._pool.shutdown(wait=False)
