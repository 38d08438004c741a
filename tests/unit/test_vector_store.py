"""VectorStore adapters: Qdrant Edge on a temp dir and the Qdrant server adapter in qdrant-client's local mode
(no server here). Both must behave the same, above all: a tenant never sees another tenant's entries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from workers.errors import ConfigError
from workers.ports import VectorStore
from workers.vector_store import EdgeVectorStore, QdrantServerStore, VectorStoreError, open_vector_store

DIM = 384


def unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def open_store(kind: str, tmp_path: Path) -> EdgeVectorStore | QdrantServerStore:
    if kind == "edge":
        return EdgeVectorStore(tmp_path / "edge", dim=DIM)
    return QdrantServerStore(location=":memory:", dim=DIM)


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EdgeVectorStore | QdrantServerStore]:
    s = open_store(request.param, tmp_path)
    try:
        yield s
    finally:
        await s.close()


async def fill(store: VectorStore, tenant: str, vectors: np.ndarray, start_ms: int = 1000) -> None:
    for i, v in enumerate(vectors):
        await store.upsert(tenant, f"e{i}", v, {"i": i, "text": f"answer {i}"}, start_ms + i)


async def test_identical_vector_is_nearest_with_score_one(store: VectorStore) -> None:
    vecs = unit(40)
    await fill(store, "acme", vecs)
    hits = await store.search("acme", vecs[7], limit=3)
    assert hits[0].id == "e7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload == {"i": 7, "text": "answer 7"}  # the caller's payload, round-tripped as given
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert await store.count("acme") == 40


async def test_tenant_isolation_regardless_of_distance(store: VectorStore) -> None:
    a_vecs, b_vecs = unit(20, seed=1), unit(5, seed=2)
    secret = b_vecs[0]
    await fill(store, "tenant-b", b_vecs)
    assert await store.search("tenant-a", secret, limit=10) == []  # A is empty: B's identical vector stays hidden
    await fill(store, "tenant-a", a_vecs)
    hits = await store.search("tenant-a", secret, limit=50)
    assert len(hits) == 20 and all(h.payload["text"].startswith("answer") for h in hits)
    assert all(h.score < 0.5 for h in hits)  # only A's unrelated entries, never B's exact match
    # The same entry_id under two tenants is two entries: B's upsert never overwrites A's.
    assert await store.count("tenant-a") == 20 and await store.count("tenant-b") == 5
    assert (await store.search("tenant-a", a_vecs[0], limit=1))[0].score == pytest.approx(1.0, abs=1e-4)
    # Arbitrary tenant strings (prefix of another, odd chars, 256 chars) are distinct partitions.
    for tenant in ("tenant", "tenant-b ", "Tenant-B", "ü/\x00*", "x" * 256):
        assert await store.search(tenant, secret, limit=5) == []


async def test_bad_tenant_and_vector_are_not_retriable(store: VectorStore) -> None:
    v = unit(1)[0]
    cases = [
        store.upsert("x" * 257, "e", v, {}, 1),
        store.upsert("t", "e", v[:10], {}, 1),
        store.upsert("t", "e", np.full(DIM, np.nan, dtype=np.float32), {}, 1),
        store.upsert("t", "", v, {}, 1),
        store.search("t", np.zeros(DIM, dtype=np.float32), limit=1),
    ]
    for call in cases:
        with pytest.raises(VectorStoreError) as err:
            await call
        assert err.value.retriable is False
    assert await store.count("t") == 0


async def test_ttl_filter_excludes_older_entries(store: VectorStore) -> None:
    v = unit(2, seed=3)
    await store.upsert("acme", "old", v[0], {"k": "old"}, created_at_ms=1_000)
    await store.upsert("acme", "new", v[1], {"k": "new"}, created_at_ms=2_000)
    assert [h.id for h in await store.search("acme", v[0], limit=5, min_created_at_ms=1_500)] == ["new"]
    assert {h.id for h in await store.search("acme", v[0], limit=5, min_created_at_ms=1_000)} == {"old", "new"}
    assert await store.search("acme", v[0], limit=5, min_created_at_ms=2_001) == []


async def test_upsert_same_entry_id_replaces(store: VectorStore) -> None:
    v = unit(2, seed=4)
    key = "ab" * 32  # a 64-hex dedup key
    await store.upsert("acme", key, v[0], {"rev": 1}, 1_000)
    await store.upsert("acme", key, v[1], {"rev": 2}, 2_000)
    assert await store.count("acme") == 1
    (hit,) = await store.search("acme", v[1], limit=5)
    assert (hit.id, hit.payload, hit.score) == (key, {"rev": 2}, pytest.approx(1.0, abs=1e-4))
    assert await store.search("acme", v[1], limit=5, min_created_at_ms=1_500) != []  # new timestamp too


async def test_upsert_many_matches_single_upserts(store: EdgeVectorStore | QdrantServerStore) -> None:
    vecs = unit(30, seed=5)
    ids = [f"k{i}" for i in range(30)]
    await store.upsert_many("acme", ids, vecs, [{"i": i} for i in range(30)], [100 + i for i in range(30)])
    assert await store.count("acme") == 30
    assert (await store.search("acme", vecs[12], limit=1))[0].id == "k12"
    # a repeated id keeps its last row, as two upserts would
    fresh = unit(2, seed=55)
    await store.upsert_many("acme", ["k0", "k0"], fresh, [{"v": 1}, {"v": 2}], 500)
    hit = (await store.search("acme", fresh[1], limit=1))[0]
    assert (hit.id, hit.payload) == ("k0", {"v": 2})
    assert await store.count("acme") == 30
    with pytest.raises(VectorStoreError):
        await store.upsert_many("acme", ["a", "b"], vecs[:1], [{}, {}], 1)


async def test_evict_oldest_keeps_newest(store: VectorStore) -> None:
    vecs = unit(10, seed=6)
    await fill(store, "acme", vecs[::-1].copy(), start_ms=5_000)  # e0 is the oldest
    await fill(store, "other", vecs[:3])
    assert await store.evict_oldest("acme", keep=4) == 6
    assert await store.count("acme") == 4
    assert {h.id for h in await store.search("acme", vecs[0], limit=10)} == {"e6", "e7", "e8", "e9"}
    assert await store.evict_oldest("acme", keep=4) == 0
    assert await store.evict_oldest("acme", keep=100) == 0
    assert await store.count("other") == 3  # untouched
    assert await store.evict_oldest("acme", keep=0) == 4
    assert await store.count("acme") == 0


async def test_purge_with_and_without_cutoff(store: VectorStore) -> None:
    vecs = unit(8, seed=7)
    await fill(store, "acme", vecs, start_ms=1_000)  # created 1000..1007
    await fill(store, "other", vecs[:2])
    assert await store.purge("acme", older_than_ms=1_003) == 3
    assert await store.count("acme") == 5
    assert await store.search("acme", vecs[0], limit=8, min_created_at_ms=0) != []
    assert "e0" not in {h.id for h in await store.search("acme", vecs[0], limit=8)}
    assert await store.purge("acme") == 5
    assert await store.count("acme") == 0
    assert await store.purge("acme") == 0
    assert await store.count("other") == 2


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    for kind in ("edge", "server"):
        s = open_store(kind, tmp_path)
        await s.close()
        await s.close()  # idempotent
        with pytest.raises(VectorStoreError):
            await s.count("acme")


async def test_edge_persists_across_reopen(tmp_path: Path) -> None:
    vecs = unit(25, seed=8)
    first = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    await fill(first, "acme", vecs)
    await first.upsert("beta", "b0", vecs[0], {"t": "beta"}, 1)
    await first.close()

    again = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    try:
        assert await again.count("acme") == 25 and await again.count("beta") == 1
        hit = (await again.search("acme", vecs[3], limit=1))[0]
        assert (hit.id, hit.payload["i"]) == ("e3", 3)
        await again.evict_oldest("acme", keep=10)
    finally:
        await again.close()

    third = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    try:
        assert await third.count("acme") == 10  # deletes persist too
    finally:
        await third.close()


async def test_edge_rejects_reopen_with_other_dim(tmp_path: Path) -> None:
    s = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    await s.upsert("acme", "e", unit(1)[0], {}, 1)
    await s.close()
    wrong = EdgeVectorStore(tmp_path / "shard", dim=128)
    with pytest.raises(VectorStoreError, match="did not open") as err:
        await wrong.count("acme")
    assert err.value.retriable is False
    await wrong.close()


async def test_edge_dir_has_one_opener_at_a_time(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    assert await first.count("acme") == 0
    second = EdgeVectorStore(tmp_path / "shard", dim=DIM)  # the shard's WAL lock refuses a second opener
    with pytest.raises(VectorStoreError, match="did not open"):
        await second.count("acme")
    await second.close()
    await first.close()


async def test_edge_search_does_not_block_event_loop(tmp_path: Path) -> None:
    s = EdgeVectorStore(tmp_path / "shard", dim=DIM)
    vecs = unit(3000, seed=9)
    await s.upsert_many("acme", [f"e{i}" for i in range(3000)], vecs, [{}] * 3000, 1)
    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop))
    started = time.perf_counter()
    results = await asyncio.gather(*(s.search("acme", vecs[i], limit=3) for i in range(50)))
    busy = time.perf_counter() - started
    stop.set()
    await tick
    await s.close()
    assert [r[0].id for r in results] == [f"e{i}" for i in range(50)]
    # The loop kept ticking while 50 searches ran on the worker thread.
    assert max(gaps) < max(0.1, busy / 2), (max(gaps), busy)


async def test_server_unreachable_is_retriable() -> None:
    s = QdrantServerStore("http://127.0.0.1:9", timeout=1)
    with pytest.raises(VectorStoreError) as err:
        await s.count("acme")
    assert err.value.retriable is True
    await s.close()


async def test_factory(tmp_path: Path) -> None:
    edge = open_vector_store("edge", path=tmp_path / "f", dim=DIM)
    server = open_vector_store("server", location=":memory:")
    assert isinstance(edge, EdgeVectorStore) and isinstance(server, QdrantServerStore)
    await edge.close()
    await server.close()
    with pytest.raises(ConfigError):
        open_vector_store("faiss")
    with pytest.raises(ConfigError):
        QdrantServerStore()
