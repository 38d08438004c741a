"""Cache memory benchmark (e): what one cached entry costs at ``--entries`` (default 100k) entries of one tenant.

Entries go in the way production writes them: ``CompleteStage.handle`` on encoded results (the leader's claim
is in ``inflight``), so the exact-cache table (a dict, as Faust's ``memory://`` store holds it) gets the real
entry and the Qdrant Edge store the real vector + payload (query text, context hash, the response entry).
Measured: the process's resident memory growth over the fill (and after building HNSW, as the cache role's
maintenance timer does), the edge store's allocated bytes on disk, the edge store's resident footprint when a
fresh process opens it and searches, the exact table's Python bytes and its changelog record bytes (key +
value JSON, as Faust writes them). "Beyond the response text" subtracts the response text's UTF-8 bytes once.

    .venv/bin/python bench/memory_bench.py [--entries 100000] [--response-chars 400] [--no-optimize] [--json]

Vectors are random unit vectors (the size of an entry does not depend on where it points); queries are QQP
questions. Target: <= 4 KB per cached entry beyond the response text (resident, and on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_output import goal, md_table, targets_table, write_results  # noqa: E402
from cache_bench import prompts  # noqa: E402
from pipeline_bench import memory  # noqa: E402
from vector_store_bench import disk_bytes  # noqa: E402

from schemas.records import Job, Response, Result, Usage, dumps  # noqa: E402
from streams.client import make_request  # noqa: E402
from streams.policy.cache_key import dedup_key  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.stages.cache_setup import load_policy  # noqa: E402
from streams.stages.cache_state import CacheState  # noqa: E402
from streams.stages.complete import CompleteStage  # noqa: E402
from streams.stages.outgoing import Outgoing, Source  # noqa: E402
from workers.vector_store.edge import EdgeVectorStore  # noqa: E402

DIM = 384
WORDS = "the a log write ahead database crash recovery page record commit replay durable disk segment".split()


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of a JSON-like Python object graph (dicts, lists, str, numbers), each object counted once."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(v, seen) for v in obj)
    return size


class NoEmbedder:
    """The query vector is already in ``CacheState.vectors`` (the lookup stage put it there): never embeds."""

    async def embed_one(self, text: str) -> np.ndarray:
        raise AssertionError("the bench pre-computes every vector")


class BatchedWrites:
    """The edge store with the complete stage's one-point upserts gathered into ``upsert_many`` calls of 1000
    (the same points and payloads; one engine call per point is slow and would only measure insert speed)."""

    def __init__(self, store: EdgeVectorStore) -> None:
        self.store = store
        self.pending: list[tuple[str, str, np.ndarray, dict[str, Any], int]] = []

    async def upsert(self, tenant: str, entry_id: str, vector: np.ndarray, payload: dict[str, Any], at: int) -> None:
        self.pending.append((tenant, entry_id, vector, payload, at))
        if len(self.pending) >= 1000:
            await self.drain()

    async def drain(self) -> None:
        if self.pending:
            tenant, rows = self.pending[0][0], self.pending
            self.pending = []
            ids, vecs, payloads, ats = (
                [r[1] for r in rows],
                np.stack([r[2] for r in rows]),
                [r[3] for r in rows],
                [r[4] for r in rows],
            )
            await self.store.upsert_many(tenant, ids, vecs, payloads, ats)

    async def count(self, tenant: str) -> int:
        await self.drain()
        return await self.store.count(tenant)

    async def evict_oldest(self, tenant: str, keep: int) -> int:
        await self.drain()
        return await self.store.evict_oldest(tenant, keep)


def answer(rng: np.random.Generator, chars: int) -> str:
    return " ".join(rng.choice(WORDS, size=chars // 3))[:chars]


async def fill(settings: Settings, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    questions = prompts(5000)
    store = EdgeVectorStore(Path(settings.data_dir) / "vectors", dim=DIM)
    await store.count("bench")  # opened
    state = CacheState(exact={}, inflight={})
    writes = BatchedWrites(store)
    stage = CompleteStage(settings, state, load_policy(settings), NoEmbedder(), writes)  # type: ignore[arg-type]
    sent: list[Outgoing] = []

    async def send(messages: list[Outgoing]) -> None:
        sent.extend(messages)

    gc.collect()
    rss0 = memory_now()
    text_bytes = query_bytes = 0
    t0 = time.perf_counter()
    for i in range(args.entries):
        prompt = f"{questions[i % len(questions)]} ({i})"  # distinct conversations
        request = make_request(prompt, tenant="bench", session=f"s{i}", max_tokens=128)
        key = dedup_key("bench", request.chat(), {"max_tokens": 128})
        text = answer(rng, args.response_chars)
        text_bytes += len(text.encode())
        query_bytes += len(prompt.encode())
        response = Response(
            id=request.id,
            tenant="bench",
            session=request.session,
            status="ok",
            text=text,
            tier="local",
            model="SmolLM2-135M-Instruct-Q4_1",
            usage=Usage(30, 90),
            cost_usd=1.2e-5,
        )
        vector = rng.standard_normal(DIM).astype(np.float32)
        state.remember_vector(key, vector / np.linalg.norm(vector))
        state.inflight[key] = {"leader": request.id, "waiters": [], "started": request.created_at}
        await stage.handle(
            dumps(Result(job=Job(request=request, tier="local", key=key), response=response)),
            Source("bench.results", 0, i),
            send,
        )
        sent.clear()
        if (i + 1) % 10_000 == 0:
            log(f"{i + 1} entries ({time.perf_counter() - t0:.0f}s)")
        if i + 1 == args.entries // 2:  # the second half's growth is the marginal cost, without fixed costs
            await writes.drain()
            await store.flush()
            gc.collect()
            rss_half, (disk_half, _) = memory_now(), disk_bytes(store.path)
    await writes.drain()
    fill_s = time.perf_counter() - t0
    assert len(state.exact) == args.entries and not state.inflight, "every result should be stored once"
    await store.flush()
    gc.collect()
    rss_filled = memory_now()
    disk_filled, _ = disk_bytes(store.path)
    out: dict[str, Any] = dict(entries=args.entries, fill_s=round(fill_s, 1), fill_per_s=round(args.entries / fill_s))
    out.update(response_text_bytes=round(text_bytes / args.entries), query_text_bytes=round(query_bytes / args.entries))
    out.update(rss_growth_bytes_per_entry_plain=round((rss_filled - rss0) / args.entries))
    out.update(edge_disk_bytes_per_entry_plain=round(disk_filled / args.entries))
    second_half = args.entries - args.entries // 2
    out.update(rss_marginal_bytes_per_entry_plain=round((rss_filled - rss_half) / second_half))
    out.update(edge_disk_marginal_bytes_per_entry_plain=round((disk_filled - disk_half) / second_half))
    if not args.no_optimize:
        log("building HNSW (optimize)")
        t = time.perf_counter()
        await store.optimize()
        await store.flush()
        out["optimize_s"] = round(time.perf_counter() - t, 1)
        gc.collect()
        rss_filled = memory_now()
    out["indexed"] = not args.no_optimize
    disk, _ = disk_bytes(store.path)
    wal, _ = disk_bytes(store.path / "wal")
    out.update(rss_growth_bytes_per_entry=round((rss_filled - rss0) / args.entries))
    out.update(edge_disk_bytes_per_entry=round(disk / args.entries), edge_wal_bytes_per_entry=round(wal / args.entries))
    exact_values = list(state.exact.items())[: min(2000, args.entries)]  # a sample: deep_size is slow
    exact_py = sum(deep_size(k) + deep_size(v) for k, v in exact_values) / len(exact_values)
    out["exact_table_python_bytes_per_entry"] = round(exact_py + 8 * 3 * 1.5)  # + the dict slot (hash, key, value)
    changelog = [len(json.dumps(k)) + len(json.dumps(v)) for k, v in exact_values]
    out["exact_changelog_bytes_per_entry"] = round(sum(changelog) / len(changelog) + 20)  # + Kafka record overhead
    await store.close()
    return out


def memory_now() -> int:
    import os

    return int(memory(os.getpid())["vm_rss_bytes"])


async def reopen(path: str, queries: int) -> dict[str, Any]:
    """In a fresh process: resident memory after opening the store at ``path`` and searching it."""
    rng = np.random.default_rng(3)
    store = EdgeVectorStore(path, dim=DIM)
    for _ in range(queries):
        v = rng.standard_normal(DIM).astype(np.float32)
        await store.search("bench", v / np.linalg.norm(v), limit=4)
    n = await store.count("bench")
    gc.collect()
    rss = memory_now()
    await store.close()
    return {"entries": n, "rss_bytes": rss}


def reopened_rss(path: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--reopen", str(path)]
    return dict(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--entries", type=int, default=100_000)
    add("--response-chars", type=int, default=400, help="length of each cached answer")
    add("--no-optimize", action="store_true", help="skip building HNSW (minutes at 100k on 2 cores)")
    add("--reopen", help=argparse.SUPPRESS)  # internal: measure a fresh process opening this store
    add("--out", default=str(REPO / "bench" / "results" / "memory.json"), help="and the markdown beside it (.md)")
    add("--json", action="store_true", help="print the JSON object as the last stdout line")
    args = parser.parse_args()
    if args.reopen:
        print(json.dumps(asyncio.run(reopen(args.reopen, 50))))
        return 0
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sluice-memory-bench-") as tmp:
        settings = Settings(data_dir=tmp, topic_prefix="bench")
        result = asyncio.run(fill(settings, args, lambda m: print(m, file=sys.stderr)))
        # Two fresh processes, an empty store and the filled one: the difference is what the entries cost.
        empty, filled = reopened_rss(Path(tmp) / "empty"), reopened_rss(Path(tmp) / "vectors")
    growth = filled["rss_bytes"] - empty["rss_bytes"]
    result["edge_reopened_rss_bytes_per_entry"] = round(growth / max(filled["entries"], 1))
    text = result["response_text_bytes"]
    resident = result["rss_growth_bytes_per_entry"]  # edge store + exact table, in the process that wrote them
    disk = result["edge_disk_bytes_per_entry"] + result["exact_changelog_bytes_per_entry"]
    result.update(resident_bytes_per_entry=resident, disk_bytes_per_entry=disk)
    result["targets"] = {
        "cached_entry_resident_bytes_beyond_text": goal(resident - text, 4096.0),
        "cached_entry_disk_bytes_beyond_text": goal(disk - text, 4096.0),
    }
    result = {"started": started, **result, "wall_s": round(time.monotonic() - wall0, 1)}
    write_results(result, args.out, markdown, args.json)
    return 0


def markdown(r: dict[str, Any]) -> str:
    rows = [
        ("process RSS growth (edge store + exact table)", r["rss_growth_bytes_per_entry"]),
        ("  of which before HNSW was built", r["rss_growth_bytes_per_entry_plain"]),
        ("  marginal, second half of the fill, before HNSW", r["rss_marginal_bytes_per_entry_plain"]),
        ("edge store, a fresh process opening it and searching (vs empty)", r["edge_reopened_rss_bytes_per_entry"]),
        ("exact table entry (Python objects)", r["exact_table_python_bytes_per_entry"]),
        ("edge store on disk (allocated)", r["edge_disk_bytes_per_entry"]),
        ("  of which WAL", r["edge_wal_bytes_per_entry"]),
        ("  marginal, second half of the fill, before HNSW", r["edge_disk_marginal_bytes_per_entry_plain"]),
        ("exact table changelog record (Kafka)", r["exact_changelog_bytes_per_entry"]),
    ]
    return (
        "\n".join(
            [
                "# Cache memory benchmark\n",
                f"{r['started']}, {r['wall_s']} s. {r['entries']} entries of one tenant written through the"
                f" complete stage ({r['fill_per_s']}/s); HNSW built: {r['indexed']}. Per entry: response text"
                f" {r['response_text_bytes']} B,"
                f" query text {r['query_text_bytes']} B, vector {DIM * 4} B.\n",
                *md_table(("bytes per entry", "value"), rows),
                "",
                *targets_table(r["targets"]),
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
