"""CPU cost of the exact-hit path: one all-roles worker answering exact hits at a fixed offered load, its CPU
seconds per answer, and (with ``--py-spy``) a sampled profile of the worker over the same window, summed by
function (self time) and by Sluice/Faust/aiokafka frame (inclusive). CPU time is far less distorted by a busy
machine than wall-clock latency, so this is the number to compare before/after a hot-path change.

    .venv/bin/python bench/hot_path_profile.py [--rate 300] [--seconds 10] [--py-spy out.txt] [--json]

Needs KAFKA_BOOTSTRAP (or starts a broker on 29392/29393 like pipeline_bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_cluster import run_with_worker  # noqa: E402
from pipeline_bench import PROMPT, Record, memory, phase  # noqa: E402

from streams.client import SluiceClient, make_request  # noqa: E402
from streams.settings import Settings  # noqa: E402


async def drive(settings: Settings, args: argparse.Namespace, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    async with SluiceClient(settings) as client:
        warm = await client.submit(make_request(PROMPT, tenant="bench", session="warm", max_tokens=16), timeout=300)
        if warm.status != "ok":
            raise RuntimeError(f"warm-up failed: {warm.status} {warm.reason}")

        async def one(recs: list[Record]) -> None:
            request = make_request(PROMPT, tenant="bench", session=uuid.uuid4().hex, max_tokens=16)
            t = time.perf_counter()
            response = await (await client.send(request))
            now = time.perf_counter()
            recs.append((now, now - t, response.tier == "cache"))

        await phase(one, 2.0, 10.0, rate=args.rate)  # untimed: connections, cold paths
        spy = None
        if args.py_spy:
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker.pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "200",
            ]
            cmd += ["--format", "raw", "--output", args.py_spy, "--nonblocking", "--gil"]
            spy = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = memory(worker.pid)["cpu_s"]
        result = await phase(one, args.seconds, args.drain, rate=args.rate)
        cpu = memory(worker.pid)["cpu_s"] - cpu0
        if spy is not None:
            await asyncio.wait_for(spy.wait(), 60)
        result.update(worker_cpu_s=round(cpu, 2), cpu_ms_per_answer=round(cpu * 1e3 / max(result["answered"], 1), 3))
        return result


def summarize(path: str, top: int) -> dict[str, Any]:
    """py-spy raw output (collapsed stacks, ``frame;frame;... count``): top functions by self and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    share = lambda c: [(f, round(100 * n / max(total, 1), 1)) for f, n in c.most_common(top)]  # noqa: E731
    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rate", type=float, default=300.0, help="offered exact hits per second")
    add("--seconds", type=float, default=10.0)
    add("--drain", type=float, default=15.0)
    add("--partitions", type=int, default=4)
    add("--port", type=int, default=29392)
    add("--py-spy", help="write py-spy's raw (collapsed) profile of the worker here")
    add("--top", type=int, default=30)
    add("--json", action="store_true")
    args = parser.parse_args()
    result = run_with_worker("hp", args.port, args.partitions, lambda settings, worker: drive(settings, args, worker))
    if args.py_spy and Path(args.py_spy).exists():
        result["profile"] = summarize(args.py_spy, args.top)
        for kind in ("self_pct", "inclusive_pct"):
            print(f"-- {kind}")
            for frame, pct in result["profile"][kind]:
                print(f"{pct:6.1f}%  {frame}")
    keys = ("sent", "answered", "answered_ok", "p50_ms", "p99_ms", "worker_cpu_s", "cpu_ms_per_answer")
    print(", ".join(f"{k}={result.get(k)}" for k in keys))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
