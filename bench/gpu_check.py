"""GPU worker-path check (run where a CUDA build of llama-cpp-python is installed): the local tier's own code
(``LlamaCppModel`` in a ``ModelPool``, as ``sluice worker`` builds it) with ``n_gpu_layers=-1`` against the same
code on the CPU, on the same GGUF file and prompts.

It needs no broker and none of Faust (a GPU box may have neither); the Kafka side of the local tier is the same
code on CPU and GPU and is measured by ``local_bench.py``. What it checks and reports:

  offload     llama.cpp was built with GPU offload, and the model's layers went to the GPU (VRAM used);
  same answer greedy output is the same for a prompt asked twice with other prompts between (the cache, replay
              and streaming rely on it), and how many answers match the CPU's (float order differs on a GPU, so
              this is reported, not required);
  speed       completion tokens/s: bare llama_cpp on the GPU (the ceiling), the pool with 1 instance, the pool
              with ``--pool`` instances under as many concurrent requests, and the pool on the CPU.

    python bench/gpu_check.py --model FILE.gguf [--requests 8] [--max-tokens 128] [--pool 4] [--cpu-threads 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from streams.settings import Settings  # noqa: E402
from workers.local.native_order import load_llama_first  # noqa: E402

# Before numpy: a CUDA llama.cpp loaded after numpy crashed on model load (workers/local/native_order.py).
load_llama_first(Settings())

from bench_output import md_table, ratio, write_results  # noqa: E402

from schemas.records import Job, Message, Request, dumps  # noqa: E402
from streams.policy.cache_key import dedup_key  # noqa: E402
from streams.stages.local_tier import LocalTierStage  # noqa: E402
from streams.stages.outgoing import Source  # noqa: E402
from workers.local.factory import build_pool  # noqa: E402
from workers.local.llama_cpp_model import LlamaCppModel  # noqa: E402
from workers.local.pool import ModelPool  # noqa: E402

PROMPT = "Explain in a short paragraph how a write-ahead log lets a database recover after a crash."


def prompt(i: int) -> list[Message]:
    return [Message(role="user", content=f"Question {i + 1}. {PROMPT}")]


def vram_used_mib() -> int | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def pool(model: Path, gpu: bool, threads: int, size: int) -> ModelPool:
    """Built the way ``sluice worker`` builds it: from SLUICE_* settings, through the backend factory."""
    env = {
        "SLUICE_LOCAL_MODEL_PATH": str(model),
        "SLUICE_LOCAL_N_GPU_LAYERS": "-1" if gpu else "0",
        "SLUICE_LOCAL_THREADS": str(threads),
        "SLUICE_LOCAL_CONCURRENCY": str(size),
    }
    return build_pool(Settings.from_env(env))


def bare(llm: LlamaCppModel, args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling: llama_cpp's own call, one request after another, on the adapter's instance."""
    tokens, texts, t0 = 0, [], time.perf_counter()
    for i in range(args.requests):
        llm._llm.reset()
        out = llm._llm.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in prompt(i)],
            max_tokens=args.max_tokens,
            temperature=0.0,
            seed=0,
        )
        tokens += int(out["usage"]["completion_tokens"])
        texts.append(out["choices"][0]["message"].get("content") or "")
    return speed(tokens, time.perf_counter() - t0, texts)


def speed(tokens: int, seconds: float, texts: list[str]) -> dict[str, Any]:
    return dict(
        completion_tokens=tokens, seconds=round(seconds, 3), tokens_per_s=round(tokens / seconds, 1), texts=texts
    )


async def through_pool(pool: ModelPool, args: argparse.Namespace, concurrent: int) -> dict[str, Any]:
    """``requests`` generations through the pool, ``concurrent`` at a time (texts in prompt order)."""
    await pool.start()
    gate, texts = asyncio.Semaphore(concurrent), [""] * args.requests

    async def one(i: int) -> int:
        async with gate:
            completion = await pool.generate(prompt(i), args.max_tokens)
            texts[i] = completion.text
            return completion.completion_tokens

    t0 = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(args.requests))))
    return speed(tokens, time.perf_counter() - t0, texts)


async def through_stage(stage: LocalTierStage, args: argparse.Namespace) -> dict[str, Any]:
    """Through the local tier's handler, as the tier agent calls it: job bytes in, result bytes out."""
    tokens, texts, t0 = 0, [], time.perf_counter()
    for i in range(args.requests):
        request = Request(
            id=f"gpu-check-{i}",
            tenant="gpu-check",
            session=f"s{i}",
            messages=tuple(prompt(i)),
            max_tokens=args.max_tokens,
        )
        key = dedup_key("gpu-check", request.chat(), {"max_tokens": args.max_tokens})
        outs = await stage.handle(dumps(Job(request=request, tier="local", key=key)), Source("gpu-check", 0, i))
        response = json.loads(outs[0].value)["response"]
        if response["status"] != "ok":
            raise RuntimeError(f"stage generation failed: {response.get('reason')}")
        tokens += int(response["usage"]["completion_tokens"])
        texts.append(response["text"])
    return speed(tokens, time.perf_counter() - t0, texts)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    model = Path(args.model)
    result: dict[str, Any] = dict(
        model=model.name,
        llama_cpp_version=llama_cpp.__version__,
        gpu_offload_supported=bool(llama_cpp.llama_supports_gpu_offload()),
        requests=args.requests,
        max_tokens=args.max_tokens,
    )
    vram_before = vram_used_mib()
    t = time.perf_counter()
    gpu_one = pool(model, True, args.gpu_threads, 1)
    await gpu_one.start()
    result["gpu_load_s"] = round(time.perf_counter() - t, 2)
    vram_loaded = vram_used_mib()
    result["vram_mib_one_instance"] = (
        vram_loaded - vram_before if vram_loaded is not None and vram_before is not None else None
    )
    instance = gpu_one._models[0]
    assert isinstance(instance, LlamaCppModel)

    await through_pool(gpu_one, args, 1)  # warm-up (CUDA kernels load on first use)
    runs: dict[str, dict[str, Any]] = {}
    every: dict[str, list[float]] = {"gpu_bare": [], "gpu_pool_1": [], "gpu_stage": []}
    stage = LocalTierStage(Settings.from_env({}), gpu_one)
    loop = asyncio.get_running_loop()
    for _ in range(args.rounds):  # interleaved rounds: noise hits both ways alike; the best round counts
        # bare runs on the pool's own executor thread, as the pool's calls do
        for name, got in (
            ("gpu_bare", await loop.run_in_executor(gpu_one._executor, bare, instance, args)),
            ("gpu_pool_1", await through_pool(gpu_one, args, 1)),
            ("gpu_stage", await through_stage(stage, args)),
        ):
            every[name].append(got["tokens_per_s"])
            if name not in runs or got["tokens_per_s"] > runs[name]["tokens_per_s"]:
                runs[name] = got
    for name, values in every.items():
        runs[name]["every_round"] = values

    # Determinism: the first prompt again, after every other prompt ran on the same instance.
    again = await gpu_one.generate(prompt(0), args.max_tokens)
    result["gpu_same_answer_when_asked_again"] = again.text == runs["gpu_pool_1"]["texts"][0]

    gpu_many = pool(model, True, args.gpu_threads, args.pool)
    runs[f"gpu_pool_{args.pool}"] = await through_pool(gpu_many, args, args.pool)
    vram_many = vram_used_mib()
    result[f"vram_mib_{args.pool + 1}_instances"] = (
        vram_many - vram_before if vram_many is not None and vram_before is not None else None
    )
    await gpu_many.close()
    await gpu_one.close()

    cpu = pool(model, False, args.cpu_threads, 1)
    runs["cpu_pool_1"] = await through_pool(cpu, args, 1)
    await cpu.close()

    gpu_texts, cpu_texts = runs["gpu_pool_1"]["texts"], runs["cpu_pool_1"]["texts"]
    result["gpu_pool_matches_bare"] = gpu_texts == runs["gpu_bare"]["texts"] == runs["gpu_stage"]["texts"]
    result["gpu_cpu_same_answers"] = agreement(gpu_texts, cpu_texts)
    result["gpu_concurrent_same_answers"] = agreement(gpu_texts, runs[f"gpu_pool_{args.pool}"]["texts"])
    result["sample_answer"] = gpu_texts[0][:300]
    result["runs"] = {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in runs.items()}
    tps = {k: v["tokens_per_s"] for k, v in runs.items()}
    result["ratios"] = {
        "gpu_pool_1/gpu_bare": ratio(tps["gpu_pool_1"], tps["gpu_bare"]),
        "gpu_stage/gpu_bare": ratio(tps["gpu_stage"], tps["gpu_bare"]),
        f"gpu_pool_{args.pool}/gpu_pool_1": ratio(tps[f"gpu_pool_{args.pool}"], tps["gpu_pool_1"]),
        "gpu_pool_1/cpu_pool_1": ratio(tps["gpu_pool_1"], tps["cpu_pool_1"]),
    }
    return result


def agreement(a: list[str], b: list[str]) -> str:
    return f"{sum(x == y for x, y in zip(a, b, strict=True))}/{len(a)}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# GPU worker-path check",
        "",
        f"{result['model']}, llama-cpp-python {result['llama_cpp_version']}, GPU offload built in: "
        f"{result['gpu_offload_supported']}; {result['requests']} distinct prompts, max_tokens "
        f"{result['max_tokens']}; load {result['gpu_load_s']} s, VRAM for one instance "
        f"{result['vram_mib_one_instance']} MiB.",
        "",
    ]
    rows = [(k, v["tokens_per_s"], v["completion_tokens"], v["seconds"]) for k, v in result["runs"].items()]
    lines += md_table(("way", "completion tokens/s", "tokens", "seconds"), rows)
    lines += ["", *md_table(("ratio", "value"), list(result["ratios"].items())), ""]
    checks = [(k, result[k]) for k in result if k.startswith(("gpu_same", "gpu_pool_matches", "gpu_cpu", "gpu_conc"))]
    lines += [*md_table(("check", "result"), checks), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--gpu-threads", type=int, default=2)
    parser.add_argument("--cpu-threads", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu.json"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    write_results(result, args.out, markdown, args.json)
    print(json.dumps({k: result[k] for k in ("gpu_offload_supported", "ratios")}), file=sys.stderr)


if __name__ == "__main__":
    main()
