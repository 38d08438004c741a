"""Local-tier benchmark (c), one run: completion tokens/s of the shipped GGUF model three ways, same model file,
same settings (n_ctx, threads, seed, temperature) and the same prompts (distinct per request, so nothing is a
prompt-cache replay), in interleaved rounds so machine noise hits every way alike:

  bare    ``llama_cpp.Llama.create_chat_completion`` called directly (the ceiling) on the pool's own model, in the
          pool's own executor thread: a second OS thread calling llama.cpp starts a second OpenMP team, and libgomp
          then throttles both to about half speed, which would measure the threading, not the pipeline;
  stage   ``LocalTierStage.handle`` on an encoded job, in-process (ModelPool executor hop, job parse, result encode);
  worker  ``SluiceClient.send`` -> reply through ONE all-roles ``sluice worker`` (admit -> lookup -> tier.local ->
          results -> complete -> responses), ``cache: false`` so every request is generated; ``--in-flight``
          requests outstanding (2 keeps the pool busy while a reply travels back).

Target: worker/bare >= 0.90. Also reports the worker's VmRSS with both default models loaded (embedder and GGUF).
Needs a broker: KAFKA_BOOTSTRAP, or one is started on 29392/29393.

    .venv/bin/python bench/local_bench.py [--requests 6] [--rounds 3] [--max-tokens 128] [--in-flight 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_cluster import bench_kafka, release_kafka, start_worker, stop_worker  # noqa: E402
from bench_output import goal, md_table, targets_table, write_results  # noqa: E402
from local_ways import Tally, bare_calls, prompt, work_queue  # noqa: E402
from pipeline_bench import memory  # noqa: E402

from schemas.records import Job, dumps  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.client import SluiceClient, make_request  # noqa: E402
from streams.policy.cache_key import dedup_key  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.stages.local_tier import LocalTierStage  # noqa: E402
from streams.stages.outgoing import Source  # noqa: E402
from streams.topics import TOPICS, create_topics  # noqa: E402
from workers.local.factory import build_pool  # noqa: E402
from workers.local.model_files import resolve_model_path  # noqa: E402


async def stage_round(stage: LocalTierStage, args: argparse.Namespace, tally: Tally) -> None:
    """Through the stage the local agent calls: job bytes in, result bytes out, generation in the pool; as many
    calls in flight as the pool has instances (the local agent's concurrency)."""
    tokens, gate = 0, asyncio.Semaphore(stage.pool.size)

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            request = make_request(prompt(i), tenant="bench", session=f"s{i}", max_tokens=args.max_tokens)
            key = dedup_key("bench", request.chat(), {"max_tokens": args.max_tokens})
            t = time.perf_counter()
            outs = await stage.handle(dumps(Job(request=request, tier="local", key=key)), Source("bench", 0, i))
            tally.latencies.append(time.perf_counter() - t)
            response = json.loads(outs[0].value)["response"]
            if response["status"] != "ok":
                raise RuntimeError(f"stage generation failed: {response.get('reason')}")
            tokens += int(response["usage"]["completion_tokens"])
            tally.texts.add((i, response["text"]))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.requests)))
    tally.add(tokens, time.perf_counter() - t0, args.requests)


async def worker_round(client: SluiceClient, args: argparse.Namespace, tally: Tally) -> None:
    """Through Kafka and the worker: ``in_flight`` requests outstanding until ``requests`` are answered."""
    gate, tokens = asyncio.Semaphore(args.in_flight), 0

    async def one(i: int) -> None:
        nonlocal tokens
        async with gate:
            request = replace(
                make_request(prompt(i), tenant="bench", session=uuid.uuid4().hex, max_tokens=args.max_tokens),
                cache=False,
            )
            t = time.perf_counter()
            response = await asyncio.wait_for(await client.send(request), args.timeout)
            tally.latencies.append(time.perf_counter() - t)
            if response.status != "ok" or response.tier != "local":
                raise RuntimeError(f"worker reply {response.status}/{response.tier}: {response.reason}")
            tokens += response.usage.completion_tokens
            tally.texts.add((i, response.text))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.requests)))
    tally.add(tokens, time.perf_counter() - t0, args.requests)


async def run(settings: Settings, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    stage = LocalTierStage(settings, build_pool(settings))
    await stage.pool.start()
    # Bare calls go to the pool's own llama_cpp.Llama instances, each on the pool's executor (one OS thread per
    # instance, as the pool runs them): llama.cpp's CPU backend runs an OpenMP team per calling OS thread, so
    # the same instances on the same threads are the ceiling for this configuration, without Sluice around it.
    models = [m._llm for m in stage.pool._models]  # type: ignore[attr-defined]
    executor = stage.pool._executor
    loop = asyncio.get_running_loop()

    async def bare(round_args: argparse.Namespace, tally: Tally) -> None:
        t0, work = time.perf_counter(), work_queue(round_args.requests)
        calls = [loop.run_in_executor(executor, bare_calls, llm, settings, round_args, work, tally) for llm in models]
        tokens = sum(await asyncio.gather(*calls))
        tally.add(tokens, time.perf_counter() - t0, round_args.requests)

    single = None
    if args.single_baseline and (stage.pool.size, settings.local_threads) != (1, os.cpu_count()):
        # The naive ceiling: one instance using every core, one call at a time (no pool at all).
        one_settings = settings.with_overrides(local_concurrency=1, local_threads=os.cpu_count() or 1)
        single = LocalTierStage(one_settings, build_pool(one_settings))
        await single.pool.start()
        single_llm = single.pool._models[0]._llm  # type: ignore[attr-defined]

        async def bare_single(round_args: argparse.Namespace, tally: Tally) -> None:
            assert single is not None
            t0, work = time.perf_counter(), work_queue(round_args.requests)
            tokens = await loop.run_in_executor(
                single.pool._executor, bare_calls, single_llm, settings, round_args, work, tally
            )
            tally.add(tokens, time.perf_counter() - t0, round_args.requests)

    tallies = {"bare": Tally(), "stage": Tally(), "worker": Tally(), "bare_single": Tally()}
    warm = Tally()  # untimed: first calls allocate buffers
    await bare(argparse.Namespace(**{**vars(args), "requests": len(models)}), warm)
    if single is not None:
        await bare_single(argparse.Namespace(**{**vars(args), "requests": 1}), warm)
    await stage_round(stage, argparse.Namespace(**{**vars(args), "requests": 1}), warm)
    worker, client = None, None
    mem: dict[str, Any] = {}
    try:
        if not args.no_worker:
            await create_topics(settings, TOPICS)
            worker, log = start_worker(settings, tmp)
            client = await SluiceClient(settings).__aenter__()
            print("waiting for the worker's first answer (model loads)", file=sys.stderr)
            one = argparse.Namespace(**{**vars(args), "requests": 1, "in_flight": 1, "timeout": 300.0})
            try:
                await worker_round(client, one, warm)
            except BaseException:
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
                raise
        for r in range(args.rounds):  # interleaved: noise from other processes hits every way alike
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            await bare(args, tallies["bare"])
            if single is not None:
                await bare_single(args, tallies["bare_single"])
            await stage_round(stage, args, tallies["stage"])
            if client is not None:
                try:
                    await worker_round(client, args, tallies["worker"])
                except BaseException:
                    print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
                    raise
        if worker is not None:
            mem = memory(worker.pid)
    finally:
        if client is not None:
            await client.close()
        if worker is not None:
            stop_worker(worker)
        await stage.pool.close()
        if single is not None:
            await single.pool.close()
    out: dict[str, Any] = {name: t.summary() for name, t in tallies.items() if t.requests}
    bare = out["bare"]["tokens_per_s"]
    out["ratios"] = {f"{k}_over_bare": round(v["tokens_per_s"] / bare, 3) for k, v in out.items() if k != "bare"}
    if "bare_single" in out and "worker" in out:
        out["ratios"]["worker_over_bare_single"] = round(
            out["worker"]["tokens_per_s"] / out["bare_single"]["tokens_per_s"], 3
        )
    # One text per prompt index in every way of this configuration (another thread count may round differently).
    texts = set().union(*(t.texts for name, t in tallies.items() if name != "bare_single"))
    out["same_output_every_way"] = len(texts) == len({i for i, _ in texts})
    out["worker_memory"] = mem
    headline = out["ratios"].get("worker_over_bare", out["ratios"].get("stage_over_bare"))
    out["targets"] = {"local_tokens_per_s_ratio": goal(headline, 0.90, at_least=True)}
    if mem:
        out["targets"]["all_roles_rss_bytes"] = goal(mem.get("vm_rss_bytes"), 1.5e9)
    return out


def markdown(r: dict[str, Any]) -> str:
    rows: list[tuple[Any, ...]] = [
        (k, r[k]["requests"], r[k]["completion_tokens"], r[k]["seconds"], r[k]["tokens_per_s"])
        for k in ("bare", "stage", "worker", "bare_single")
        if k in r
    ]
    rows = [(*row, r["ratios"].get(f"{row[0]}_over_bare", 1.0), r[row[0]].get("p50_request_s")) for row in rows]
    lines = [
        "# Local tier benchmark\n",
        f"{r['started']}, {r['wall_s']} s. Model {r['model']}, {r.get('instances', 1)} instance(s) x {r['threads']}"
        f" thread(s) (bare_single: one instance, every core), max_tokens {r['max_tokens']},"
        f" {r['rounds']} interleaved rounds of {r['requests']} requests; worker: {r['in_flight']} in flight,"
        f" cache off. Same output every way: {r['same_output_every_way']}.\n",
        *md_table(("way", "requests", "tokens", "seconds", "tokens/s", "/bare", "p50 s per request"), rows),
    ]
    if r.get("worker_memory"):
        m = r["worker_memory"]
        lines.append(
            f"\nAll-roles worker after generating: VmRSS {m['vm_rss_bytes'] / 1e6:.0f} MB,"
            f" VmHWM {m['vm_hwm_bytes'] / 1e6:.0f} MB."
        )
    lines += ["", *targets_table(r["targets"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--requests", type=int, default=6, help="per way per round")
    add("--rounds", type=int, default=3)
    add("--max-tokens", type=int, default=128)
    add("--in-flight", type=int, default=None, help="worker requests outstanding (default: 2 per instance)")
    add("--concurrency", type=int, default=None, help="model instances in the pool (default: the settings')")
    add("--no-single", dest="single_baseline", action="store_false", help="skip the one-instance, all-cores bare way")
    add("--timeout", type=float, default=600.0, help="per worker request, seconds")
    add("--no-worker", action="store_true", help="bare vs stage only (no broker, no worker)")
    add("--partitions", type=int, default=4)
    add("--threads", type=int, default=None, help="llama.cpp threads, every way (default: the settings' default)")
    add("--port", type=int, default=29392, help="local broker port (controller: port + 1)")
    add("--out", default=str(REPO / "bench" / "results" / "local.json"), help="and the markdown beside it (.md)")
    add("--json", action="store_true", help="print the JSON object as the last stdout line")
    args = parser.parse_args()
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-local-bench-"))
    broker: LocalBroker | None = None
    settings: Settings | None = None
    try:
        # Default settings, as the worker gets them (start_worker drops SLUICE_* variables): the same model.
        settings, broker = bench_kafka(tmp, args.port, args.partitions, "lb", start=not args.no_worker)
        if args.threads is not None:
            settings = settings.with_overrides(local_threads=args.threads)
        if args.concurrency is not None:
            settings = settings.with_overrides(local_concurrency=args.concurrency)
        settings = settings.with_overrides(local_concurrency=settings.local_instances)  # resolved: bench and worker
        if args.in_flight is None:
            args.in_flight = 2 * settings.local_concurrency
        result = asyncio.run(run(settings, args, tmp))
    finally:
        release_kafka(settings, broker)
        shutil.rmtree(tmp, ignore_errors=True)
    model = resolve_model_path(settings.local_model_path).name
    result = dict(started=started, model=model, threads=settings.local_threads, **result)
    result["instances"] = settings.local_concurrency
    result.update(max_tokens=args.max_tokens, rounds=args.rounds, requests=args.requests, in_flight=args.in_flight)
    result["wall_s"] = round(time.monotonic() - wall0, 1)
    write_results(result, args.out, markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
