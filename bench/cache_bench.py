"""Semantic-cache benchmark, measured in one run: raw batched fastembed throughput vs lookups through the
lookup stage (micro-batched embedding + vector search + verifier + routing, 64 in flight), and the stage's
latency with the store holding 10k entries.

    .venv/bin/python bench/cache_bench.py [--n 1000] [--json]

Prompts are distinct QQP questions from ../shared/data (misses: every lookup does the full work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from schemas.records import Job, Request, dumps  # noqa: E402
from streams.policy.cache_key import dedup_key  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.stages.cache_setup import build_cache_parts  # noqa: E402
from streams.stages.cache_state import CacheState  # noqa: E402
from streams.stages.lookup import LookupStage  # noqa: E402
from streams.stages.outgoing import Source  # noqa: E402
from streams.stages.routing import build_router  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def prompts(n: int) -> list[str]:
    """Distinct user questions of chat length: QQP questions, then GSM8K problems if more are asked for."""
    out: list[str] = []
    with open(DATA / "qqp_balanced_5k.tsv") as fh:
        next(fh)
        seen: set[str] = set()
        for line in fh:
            question = line.rstrip("\n").split("\t")[1]
            if question not in seen:
                seen.add(question)
                out.append(question)
    with open(DATA / "gsm8k_test.jsonl") as fh:
        out += [json.loads(line)["question"] for line in fh]
    return out[:n]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def run(n: int, preload: int) -> dict[str, Any]:
    texts = prompts(n)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(topic_prefix="bench", data_dir=tmp)
        parts = build_cache_parts(settings)
        raw_model = parts.embedder.embedder
        raw_model.embed(texts[:64])  # warm up
        started = time.perf_counter()
        raw_model.embed(texts)
        raw_rate = len(texts) / (time.perf_counter() - started)

        if preload:  # fill the tenant's store so searches run against a realistic index size
            rng = np.random.default_rng(0)
            vectors = rng.standard_normal((preload, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for lo in range(0, preload, 2000):
                ids = [f"pre{i}" for i in range(lo, min(preload, lo + 2000))]
                payloads = [{"text": f"filler {i}", "context": "", "response": {"text": "x"}} for i in ids]
                await parts.store.upsert_many("bench", ids, vectors[lo : lo + len(ids)], payloads, 1)  # type: ignore[attr-defined]
            optimize = getattr(parts.store, "optimize", None)
            if optimize is not None:
                await optimize()

        state = CacheState(exact={}, inflight={})
        stage = LookupStage(
            settings, state, parts.policy, parts.embedder, parts.store, parts.verify, build_router(settings)
        )
        jobs = []
        for i, text in enumerate(texts):
            request = Request(id=f"b{i}", tenant="bench", session=f"s{i}", prompt=text, max_tokens=64)
            jobs.append(
                dumps(Job(request=request, tier="", key=dedup_key("bench", request.chat(), {"max_tokens": 64})))
            )
        latencies: list[float] = []
        gate = asyncio.Semaphore(64)

        async def one(raw: bytes) -> None:
            async with gate:
                t0 = time.perf_counter()
                await stage.handle(raw, Source("bench.lookup", 0, 0))
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one(j) for j in jobs))
        stage_rate = len(jobs) / (time.perf_counter() - started)
        await parts.store.close()
        parts.embedder.close()
    return {
        "n": len(texts),
        "store_entries": preload,
        "raw_embeddings_per_s": round(raw_rate, 1),
        "lookup_stage_per_s": round(stage_rate, 1),
        "semantic_ratio": round(stage_rate / raw_rate, 3),
        "lookup_p50_ms_at_64_in_flight": round(pct(latencies, 50), 2),
        "lookup_p99_ms_at_64_in_flight": round(pct(latencies, 99), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--preload", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.preload))
    print(f"raw fastembed (batch 32):     {result['raw_embeddings_per_s']:>8.1f} /s")
    print(
        f"through the lookup stage:     {result['lookup_stage_per_s']:>8.1f} /s  (ratio {result['semantic_ratio']:.2f})"
    )
    print(
        f"lookup latency at 64 in flight, {result['store_entries']} entries: p50 "
        f"{result['lookup_p50_ms_at_64_in_flight']} ms, p99 {result['lookup_p99_ms_at_64_in_flight']} ms"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
