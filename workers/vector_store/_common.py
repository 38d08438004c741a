"""What both vector-store adapters share: input checks, the entry-id → point-id mapping and the stored payload
layout, so the edge and server stores agree on ids and isolation rules and stay interchangeable."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workers.errors import SluiceError
from workers.ports import VectorHit

TENANT_MAX = 256  # same bound as schemas.parse applies to tenant names
# Stored payload keys. The caller's payload is nested under DATA so it can never shadow the keys that isolation,
# TTL and eviction depend on (a caller payload with its own "tenant" key stays inert).
TENANT, ENTRY_ID, CREATED_AT, DATA = "tenant", "entry_id", "created_at_ms", "data"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://sluice/vector-store/entry")


class VectorStoreError(SluiceError):
    """A vector-store call failed. ``retriable`` is True for connection problems and timeouts, False for bad
    input or a store that cannot work as configured."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or len(tenant) > TENANT_MAX:
        raise VectorStoreError(f"tenant must be a str of at most {TENANT_MAX} chars", retriable=False)
    return tenant


def point_id(tenant: str, entry_id: str) -> str:
    """Deterministic Qdrant point id (UUIDv5) for one tenant's entry.

    The tenant is part of the name (length-prefixed, so no two (tenant, entry_id) pairs collide): the same
    entry_id under two tenants gives two points, so one tenant's upsert can never overwrite another's entry.
    """
    if not isinstance(entry_id, str) or not entry_id:
        raise VectorStoreError("entry_id must be a non-empty str", retriable=False)
    return str(uuid.uuid5(_ID_NAMESPACE, f"{len(tenant)}:{tenant}{entry_id}"))


def check_vector(vector: Any, dim: int) -> np.ndarray:
    """One finite, non-zero float32 vector of length ``dim`` (engines accept NaN silently, so check here)."""
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"vector is not numeric: {exc}", retriable=False) from exc
    if arr.shape != (dim,):
        raise VectorStoreError(f"vector shape {arr.shape} != ({dim},)", retriable=False)
    if not np.isfinite(arr).all() or not np.any(arr):
        raise VectorStoreError("vector must be finite and non-zero", retriable=False)
    return arr


def check_matrix(vectors: Any, dim: int, rows: int) -> np.ndarray:
    """A (rows, dim) float32 batch with the same checks as :func:`check_vector`."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"vectors are not numeric: {exc}", retriable=False) from exc
    if arr.shape != (rows, dim):
        raise VectorStoreError(f"vectors shape {arr.shape} != ({rows}, {dim})", retriable=False)
    if not np.isfinite(arr).all() or not np.any(arr, axis=1).all():
        raise VectorStoreError("vectors must be finite and non-zero", retriable=False)
    return arr


def check_created_at(created_at_ms: Any) -> int:
    if isinstance(created_at_ms, bool) or not isinstance(created_at_ms, int | np.integer):
        raise VectorStoreError("created_at_ms must be an int", retriable=False)
    value = int(created_at_ms)
    if not 0 <= value < 2**63:
        raise VectorStoreError("created_at_ms out of range", retriable=False)
    return value


def stored_payload(tenant: str, entry_id: str, payload: Mapping[str, Any], created_at_ms: int) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise VectorStoreError("payload must be a mapping", retriable=False)
    return {TENANT: tenant, ENTRY_ID: entry_id, CREATED_AT: created_at_ms, DATA: dict(payload)}


def to_hit(tenant: str, score: float, stored: Mapping[str, Any] | None) -> VectorHit | None:
    """The hit the caller sees, or None if the stored tenant is not the asked one (defence in depth: the engine
    filter already guarantees it, this makes a filter bug fail closed rather than leak)."""
    if not stored or stored.get(TENANT) != tenant:
        return None
    score = float(score)
    return VectorHit(
        id=str(stored.get(ENTRY_ID, "")),
        score=score if math.isfinite(score) else 0.0,
        payload=dict(stored.get(DATA) or {}),
    )


def batch_inputs(
    tenant: str,
    entry_ids: Sequence[str],
    vectors: Any,
    payloads: Sequence[Mapping[str, Any]],
    created_at_ms: Sequence[int] | int,
    dim: int,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Checks an ``upsert_many`` batch; returns (point ids, vectors, stored payloads). A repeated entry_id keeps
    its last row, as sequential upserts would."""
    check_tenant(tenant)
    n = len(entry_ids)
    stamps = [created_at_ms] * n if isinstance(created_at_ms, int) else list(created_at_ms)
    if len(payloads) != n or len(stamps) != n:
        raise VectorStoreError("entry_ids, payloads and created_at_ms differ in length", retriable=False)
    matrix = check_matrix(vectors, dim, n)
    pids = [point_id(tenant, e) for e in entry_ids]
    rows = sorted({pid: i for i, pid in enumerate(pids)}.values())
    ids = [pids[i] for i in rows]
    stored = [stored_payload(tenant, entry_ids[i], payloads[i], check_created_at(stamps[i])) for i in rows]
    return ids, (matrix if len(rows) == n else matrix[rows]), stored
