"""Router probe benchmark, measured in one run: what the LM probe (workers/embedding/lm_probe.py) costs per word
problem next to the MiniLM embedding every request already pays, and the memory it adds once loaded.

    .venv/bin/python bench/probe_bench.py [--n 100] [--json]

Prompts are GSM8K questions from ../shared/data (the kind the math head, the one that reads the probe, gets).
The probe runs as the router runs it: one thread, one prompt at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import llama_cpp  # noqa: E402, F401  (llama.cpp before numpy: workers/local/native_order.py)
import numpy as np  # noqa: E402
from bench_output import md_table, ratio, write_results  # noqa: E402
from load_phases import memory  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def measure(n: int) -> dict[str, Any]:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder
    from workers.embedding.lm_probe import LAYERS, LMProbe

    with open(DATA / "gsm8k_test.jsonl") as fh:
        texts = [json.loads(line)["question"] for line in fh][:n]
    embedder = FastEmbedEmbedder(threads=2)
    embedder.embed(texts[:8])  # warm
    t0 = time.perf_counter()
    for i in range(0, len(texts), 32):  # as the lookup stage batches them
        embedder.embed(texts[i : i + 32])
    embed_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    rss_before = memory(os.getpid())["vm_rss_bytes"]
    t0 = time.perf_counter()
    probe = LMProbe(threads=1)
    load_s = time.perf_counter() - t0
    probe.probe(texts[:2])  # warm
    per: list[float] = []
    for text in texts:
        t0 = time.perf_counter()
        probe.probe([text])
        per.append((time.perf_counter() - t0) * 1000)
    rss_after = memory(os.getpid())["vm_rss_bytes"]
    probe_ms = float(np.mean(per))
    return {
        "n": len(texts),
        "probe_layers": LAYERS,
        "embed_ms_per_prompt_batched": round(embed_ms, 2),
        "probe_ms_per_prompt": round(probe_ms, 2),
        "probe_ms_p50": round(float(np.percentile(per, 50)), 2),
        "probe_ms_p99": round(float(np.percentile(per, 99)), 2),
        "probe_over_embed": ratio(probe_ms, embed_ms),
        "probe_per_s_one_thread": round(1000 / probe_ms, 1),
        "probe_load_s": round(load_s, 2),
        "probe_resident_bytes_added": (rss_after - rss_before) if rss_after and rss_before else None,
    }


def render(r: dict[str, Any]) -> str:
    rows = [(k, v) for k, v in r.items()]
    return "\n".join(["# Router probe cost", "", *md_table(("measure", "value"), rows), ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "probe.json"))
    args = ap.parse_args()
    write_results(measure(args.n), args.out, render, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
