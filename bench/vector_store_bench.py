"""Edge vector-store benchmark: search latency (p50/p99) at 10k and 100k entries of one tenant, the cost of a
second tenant's 10k entries on the first tenant's searches (isolation should cost nothing), and bytes on disk
per entry with a ~200-byte payload. Latency is measured through the async adapter (worker-thread hop included).

    .venv/bin/python bench/vector_store_bench.py [--json] [--queries 200] [--optimize]

Edge builds HNSW only when ``optimize()`` runs: the 10k store is measured before (plain segment, brute force)
and after; ``--optimize`` also indexes the 100k store (minutes on 2 cores, so off by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.vector_store import EdgeVectorStore

DIM = 384
BATCH = 2000


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def payload(rng: np.random.Generator, i: int) -> dict[str, Any]:
    """~200 bytes of JSON, like a cached short answer plus its metadata."""
    text = "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 150))
    return {"text": text, "model": "local-small", "prompt_tokens": 40 + i % 50, "completion_tokens": 24}


async def fill(store: EdgeVectorStore, tenant: str, n: int, rng: np.random.Generator) -> float:
    """Inserts n entries in batches; returns entries per second."""
    started = time.perf_counter()
    for lo in range(0, n, BATCH):
        k = min(BATCH, n - lo)
        ids = [f"{tenant}-{lo + j:058x}" for j in range(k)]  # 64 chars like the cache's dedup keys
        await store.upsert_many(tenant, ids, unit(rng, k), [payload(rng, lo + j) for j in range(k)], lo)
    return n / (time.perf_counter() - started)


async def latency(store: EdgeVectorStore, tenant: str, queries: np.ndarray) -> dict[str, float]:
    await store.search(tenant, queries[0], limit=5)  # warm-up
    times = []
    for q in queries:
        t = time.perf_counter()
        await store.search(tenant, q, limit=5)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes: Edge preallocates sparse files, so allocated is the real footprint."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


async def run(queries: int, optimize_large: bool, log: Any, large_n: int = 100_000) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    q = unit(rng, queries)
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"dim": DIM, "queries": queries, "cpus": os.cpu_count(), "rows": rows}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sluice-edge-bench-") as tmp:
        small = EdgeVectorStore(Path(tmp) / "small", dim=DIM)
        rate = await fill(small, "a", 10_000, rng)
        rows.append({"case": "a=10k plain", **await latency(small, "a", q)})
        await fill(small, "b", 10_000, rng)
        rows.append({"case": "a=10k plain, +b=10k", **await latency(small, "a", q)})
        t = time.perf_counter()
        await small.optimize()
        out["optimize_20k_s"] = round(time.perf_counter() - t, 1)
        rows.append({"case": "a=10k hnsw, +b=10k", **await latency(small, "a", q)})
        rows.append({"case": "b=10k hnsw, +a=10k", **await latency(small, "b", q)})
        await small.close()
        log(f"10k store done ({time.perf_counter() - started:.0f}s)")

        large = EdgeVectorStore(Path(tmp) / "large", dim=DIM)
        rate = (rate + await fill(large, "a", large_n, rng)) / 2
        await fill(large, "b", 10_000, rng)
        big = f"{large_n // 1000}k"
        rows.append({"case": f"a={big} plain, +b=10k", **await latency(large, "a", q)})
        rows.append({"case": f"b=10k plain, +a={big}", **await latency(large, "b", q)})
        rows.append({"case": f"c=0, +a={big} +b=10k", **await latency(large, "c", q)})  # adapter overhead only
        if optimize_large:
            t = time.perf_counter()
            await large.optimize()
            out["optimize_110k_s"] = round(time.perf_counter() - t, 1)
            rows.append({"case": f"a={big} hnsw, +b=10k", **await latency(large, "a", q)})
        await large.flush()
        allocated, apparent = disk_bytes(Path(tmp) / "large")
        wal, _ = disk_bytes(Path(tmp) / "large" / "wal")
        await large.close()
        entries = large_n + 10_000
        out.update(
            insert_per_s=round(rate),
            entries=entries,
            bytes_per_entry=round(allocated / entries),
            bytes_per_entry_without_wal=round((allocated - wal) / entries),
            apparent_bytes_per_entry=round(apparent / entries),
            payload_json_bytes=len(json.dumps(payload(rng, 0))),
            total_s=round(time.perf_counter() - started, 1),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--optimize", action="store_true", help="also build HNSW for the 100k store (slow)")
    parser.add_argument("--large", type=int, default=100_000, help="entries of tenant a in the large store")
    args = parser.parse_args()
    result = asyncio.run(run(args.queries, args.optimize, lambda m: print(m, file=sys.stderr), args.large))
    print(f"{'case':<24} {'p50 ms':>8} {'p99 ms':>8}")
    for row in result["rows"]:
        print(f"{row['case']:<24} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}")
    print(
        f"disk: {result['bytes_per_entry']} B/entry allocated ({result['bytes_per_entry_without_wal']} without WAL,"
        f" {result['apparent_bytes_per_entry']} apparent/sparse) at {result['entries']} entries,"
        f" payload {result['payload_json_bytes']} B JSON; insert {result['insert_per_s']}/s;"
        f" optimize 20k: {result['optimize_20k_s']}s; total {result['total_s']}s"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
