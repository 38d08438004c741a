"""Where an exact hit's round trip goes: the way in (publish -> the worker's reply record is created) and the way
back (reply created -> reply consumed), from the reply's Kafka create time, at paced offered loads through one
all-roles worker.

Why: p50 and p99 of the whole round trip say how slow, not where. The way back is only the worker's producer, the
broker and the client's fetch; the way in holds the client's producer, the broker, the worker's fetch, Faust and
the stages. Producer and client run on this machine, so both timestamps come from one clock. (A finer split, e.g.
broker append to the worker's fetch, needs the worker instrumented: README, Benchmarks, says how it was done.)

    .venv/bin/python bench/latency_legs.py [--loads 100,250,500] [--seconds 8] [--single-group] [--json]

Needs KAFKA_BOOTSTRAP (or starts a broker on 29392/29393 like pipeline_bench). ``BENCH_SLUICE_X=v`` sets SLUICE_X
in the worker, as in the other benches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_cluster import run_with_worker  # noqa: E402
from pipeline_bench import PROMPT  # noqa: E402

from schemas.parse import InvalidMessage, parse_response  # noqa: E402
from streams.client import SluiceClient, make_request  # noqa: E402
from streams.settings import Settings  # noqa: E402


class TimedClient(SluiceClient):
    """SluiceClient that also keeps, per reply, its record's create time and when it was consumed (epoch ms)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.reply_times: dict[str, tuple[float, float]] = {}

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for records in batches.values():
                for record in records:
                    if record.topic == self.chunks_topic:
                        self._deliver_chunk(record.value)
                        continue
                    try:
                        rid = parse_response(record.value or b"").id
                    except InvalidMessage:
                        continue
                    self.reply_times.setdefault(rid, (float(record.timestamp), now_ms))
                    self._deliver(record.value)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    q = np.percentile(np.array(values), [50, 90, 99])
    return {"p50": round(float(q[0]), 2), "p90": round(float(q[1]), 2), "p99": round(float(q[2]), 2)}


async def run_load(client: TimedClient, rate: float, seconds: float) -> dict[str, Any]:
    sent: dict[str, float] = {}

    async def one(i: int) -> None:
        request = make_request(PROMPT, tenant="bench", session=f"legs-{rate}-{i}", max_tokens=16)
        sent[request.id] = time.time() * 1000
        try:
            await client.submit(request, timeout=30)
        except TimeoutError:
            pass  # counted as unanswered below

    tasks, t0, n = [], time.perf_counter(), int(rate * seconds)
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    answered = [rid for rid in sent if rid in client.reply_times]
    way_in = [client.reply_times[rid][0] - sent[rid] for rid in answered]
    way_back = [client.reply_times[rid][1] - client.reply_times[rid][0] for rid in answered]
    total = [client.reply_times[rid][1] - sent[rid] for rid in answered]
    return {
        "offered_per_s": rate,
        "sent": n,
        "answered": len(answered),
        "total_ms": percentiles(total),
        "way_in_ms": percentiles(way_in),
        "way_back_ms": percentiles(way_back),
    }


async def drive(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    client = TimedClient(settings)
    async with client:
        warm = await client.submit(make_request(PROMPT, tenant="bench", session="warm", max_tokens=16), timeout=300)
        if warm.status != "ok":
            raise RuntimeError(f"warm-up failed: {warm.status} {warm.reason}")
        await run_load(client, 100, 2.0)  # untimed: connections, cold paths
        return [await run_load(client, float(rate), args.seconds) for rate in args.loads]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--loads", type=lambda v: [int(x) for x in v.split(",")], default=[100, 250, 500], help="offered req/s")
    add("--seconds", type=float, default=8.0)
    add("--partitions", type=int, default=4)
    add("--port", type=int, default=29392)
    add("--single-group", action="store_true", help="the worker runs its roles as one app (SLUICE_SINGLE_GROUP)")
    add("--json", action="store_true")
    args = parser.parse_args()
    if args.single_group:
        os.environ["BENCH_SLUICE_SINGLE_GROUP"] = "true"
    loads = run_with_worker("legs", args.port, args.partitions, lambda settings, _: drive(settings, args))
    for r in loads:
        t, i, b = r["total_ms"], r["way_in_ms"], r["way_back_ms"]
        print(
            f"{r['offered_per_s']:.0f}/s: answered {r['answered']}/{r['sent']}; p50/p90 ms:"
            f" total {t['p50']}/{t['p90']}, way in {i['p50']}/{i['p90']}, way back {b['p50']}/{b['p90']}"
        )
    result = {"partitions": args.partitions, "single_group": args.single_group, "loads": loads}
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
