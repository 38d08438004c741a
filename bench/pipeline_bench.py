"""End-to-end pipeline benchmark on a genuine Kafka broker, one run (latency: publish call -> reply consumed):
(d) ceiling: raw aiokafka produce -> consume on a fresh topic, ~300-byte values carrying the publish timestamp;
(a) Sluice exact hits: SluiceClient.send -> reply through ONE ``sluice worker`` with every role, same prompt from
    distinct sessions; each at paced offered loads, then flat out with a bound on requests in flight; and
    the sustained rate: rising paced loads (--sustain, --sustain-seconds each) until one is not kept up with
    (every request answered, p99 <= --sustain-p99-ms, >= 95% answered within the window);
(e) VmRSS/VmHWM of that worker after the run. Targets: exact-hit p50 <= 10 ms, p99 <= 50 ms at 500 req/s;
    >= 1,000 req/s from one worker; <= 1.5 GB resident. Starts a broker on 29392/29393 unless KAFKA_BOOTSTRAP is set.
    .venv/bin/python bench/pipeline_bench.py [--loads 100,250,500] [--seconds 5] [--max-in-flight 2000]
        [--sustain 400,500,600,750,1000,1250] [--sustain-seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from bench_cluster import run_with_worker  # noqa: E402
from bench_output import goal, md_table, ratio, targets_table, write_results  # noqa: E402
from load_phases import One, Record, memory, phase, sustain, sustained_lines, with_cpu  # noqa: E402

from schemas.records import dumps  # noqa: E402
from streams.client import SluiceClient, make_request  # noqa: E402
from streams.kafka_clients import assign_all, stop_consumer  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import TopicSpec  # noqa: E402

PROMPT = "In one short sentence, what does a write-ahead log guarantee to a database after a crash?"


async def measure(one: One, args: argparse.Namespace, pid: int | None = None) -> dict[str, Any]:
    await phase(one, 1.0, args.drain, rate=100)  # untimed second: connections and cold paths
    loads = [await phase(one, args.seconds, args.drain, rate=rate) for rate in args.loads]
    sustained = await sustain(one, args, pid) if pid else None
    # The worker's CPU flat out: is one core the limit?
    flat = await with_cpu(pid, phase(one, args.seconds, args.drain, in_flight=args.max_in_flight))
    return {"loads": loads, "max": flat, **({"sustained": sustained} if sustained else {})}


async def run_ceiling(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    topic = settings.topic("ceiling")
    opts = {"bootstrap_servers": settings.bootstrap, **settings.kafka_client_options()}  # as in SluiceClient:
    linger_ms = settings.producer_linger_s * 1000
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=linger_ms, **opts)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **opts)
    await asyncio.gather(producer.start(), consumer.start())
    tps = await assign_all(consumer, settings, topic)
    await consumer.seek_to_end(*tps)
    await asyncio.gather(*(consumer.position(tp) for tp in tps))  # resolve the end offsets before publishing
    waiters: dict[int, asyncio.Future[float]] = {}  # by id(future): unique while the future waits there

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    ts, seq = struct.unpack_from("<dQ", record.value or b"")
                    if (fut := waiters.pop(seq, None)) is not None and not fut.done():
                        fut.set_result(now - ts)

    async def one(recs: list[Record]) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiters[seq := id(fut)] = fut
        await producer.send_and_wait(topic, struct.pack("<dQ", time.perf_counter(), seq).ljust(args.msg_bytes, b"x"))
        recs.append((time.perf_counter(), await fut, True))

    reader = asyncio.create_task(read())
    try:
        return {"message_bytes": args.msg_bytes, **await measure(one, args)}
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.gather(stop_consumer(consumer), producer.stop())


async def run_sluice(settings: Settings, args: argparse.Namespace, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    async with SluiceClient(settings) as client:
        warm = asyncio.create_task(client.submit(make_request(PROMPT, tenant="bench", session="warm", max_tokens=16)))
        while not warm.done():  # first answer: model load + one generation, then it is in the exact cache
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with code {worker.returncode}")
            await asyncio.sleep(0.5)
        first = warm.result()
        if first.status != "ok":
            raise RuntimeError(f"warm-up request failed: {first.status} {first.reason}")

        async def one(recs: list[Record]) -> None:
            request = make_request(PROMPT, tenant="bench", session=uuid.uuid4().hex, max_tokens=16)
            t = time.perf_counter()
            response = await (await client.send(request))
            now = time.perf_counter()
            exact = response.tier == "cache" and response.route.get("cache", {}).get("kind") == "exact"
            recs.append((now, now - t, exact))

        out = {"warm_tier": first.tier, **await measure(one, args, worker.pid)}
        size = len(dumps(make_request(PROMPT, tenant="bench", session=uuid.uuid4().hex, max_tokens=16)))
        return {"request_bytes": size, **out}


def analyse(ceiling: dict[str, Any], sluice: dict[str, Any], mem: dict[str, Any]) -> dict[str, Any]:
    at500: dict[str, Any] = next((row for row in sluice["loads"] if row["offered_per_s"] == 500), {})
    flat = sluice["max"]["answered_in_window_per_s"]
    sustained = (sluice.get("sustained") or {}).get("max_kept_up_per_s")
    pairs = list(zip(ceiling["loads"], sluice["loads"], strict=True))
    ratios = {
        "throughput_sluice_over_ceiling": ratio(flat, ceiling["max"]["answered_in_window_per_s"]),
        "p50_sluice_over_ceiling": {s["offered_per_s"]: ratio(s["p50_ms"], c["p50_ms"]) for c, s in pairs},
        "p99_sluice_over_ceiling": {s["offered_per_s"]: ratio(s["p99_ms"], c["p99_ms"]) for c, s in pairs},
    }
    targets = {
        "exact_hit_p50_ms_at_500": goal(at500.get("p50_ms"), 10.0),
        "exact_hit_p99_ms_at_500": goal(at500.get("p99_ms"), 50.0),
        "sustained_per_s_one_worker": goal(sustained, 1000.0, at_least=True),
        "all_roles_rss_bytes": goal(mem.get("vm_rss_bytes"), 1.5e9),
    }
    return {"ratios": ratios, "targets": targets}


def markdown(r: dict[str, Any]) -> str:
    c, s, m, q, cm, sm = r["ceiling"], r["sluice"], r["memory"], r["ratios"], r["ceiling"]["max"], r["sluice"]["max"]
    head: tuple[str, ...] = ("offered/s", "ceiling sent/s", "ceiling p50/p99 ms", "Sluice sent/s", "Sluice answered/s")
    head += ("Sluice p50/p99 ms", "exact hits/sent", "Sluice/ceiling p50 / p99")
    loads: list[tuple[Any, ...]] = []
    for cr, sr in zip(c["loads"], s["loads"], strict=True):
        n = sr["offered_per_s"]
        loads.append((n, cr["achieved_send_per_s"], f"{cr['p50_ms']} / {cr['p99_ms']}", sr["achieved_send_per_s"]))
        loads[-1] += (sr["answered_per_s"], f"{sr['p50_ms']} / {sr['p99_ms']}", f"{sr['answered_ok']}/{sr['sent']}")
        p50, p99 = (q[f"{p}_sluice_over_ceiling"] for p in ("p50", "p99"))
        # JSON keys are strings: the same table renders from the live result and from its saved JSON
        loads[-1] += (f"{p50.get(n, p50.get(str(n)))} / {p99.get(n, p99.get(str(n)))}",)
    cw, sw = cm["answered_in_window_per_s"], sm["answered_in_window_per_s"]
    text = [
        "# Pipeline benchmark\n",
        f"{r['started']}, {r['wall_s']} s, broker {r['broker']}, {r['partitions']} partitions. Latency: publish call"
        f" -> reply consumed. Ceiling: raw aiokafka, {c['message_bytes']}-byte values. Sluice: exact hits through"
        f" one all-roles worker{' (SLUICE_SINGLE_GROUP: one consumer group)' if r.get('single_group') else ''},"
        f" {s['request_bytes']}-byte requests, distinct sessions.\n",
        *md_table(head, loads),
        f"\nFlat out, {sm['max_in_flight']} in flight, answered/s in {r['seconds']} s: ceiling {cw} (p50"
        f" {cm['p50_ms']} ms), Sluice {sw} (p50 {sm['p50_ms']}, p99 {sm['p99_ms']} ms; {sm['answered_per_s']}/s to the"
        f" last reply): Sluice/ceiling {q['throughput_sluice_over_ceiling']}.\n",
        f"All-roles worker: VmRSS {m['vm_rss_bytes'] / 1e6:.0f}, VmHWM {m['vm_hwm_bytes'] / 1e6:.0f} MB; {m['cpu_s']}"
        f" CPU s; flat out {sm['worker_cpu_share']} cores, {sm['worker_cpu_ms_per_answer']} CPU ms per answer"
        f" (client {sm.get('client_cpu_share')} cores; machine {sm.get('machine_busy_cores')} of"
        f" {sm.get('machine_cores')} cores busy).\n",
        *sustained_lines(s.get("sustained")),
        *targets_table(r["targets"]),
    ]
    return "\n".join(text) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--loads", type=lambda v: [int(x) for x in v.split(",")], default=[100, 250, 500], help="offered req/s")
    add("--seconds", type=float, default=5.0, help="per offered load, and flat out")
    add("--drain", type=float, default=15.0, help="how long to wait for stragglers after each phase")
    add("--max-in-flight", type=int, default=2000)
    rising = [400, 500, 600, 750, 1000, 1250]
    add("--sustain", type=lambda v: [int(x) for x in v.split(",")], default=rising, help="rising req/s")
    add("--sustain-seconds", type=float, default=10.0)
    add("--sustain-p99-ms", type=float, default=500.0, help="a load is kept up with only if p99 stays within this")
    add("--msg-bytes", type=int, default=300, help="ceiling message size")
    add("--partitions", type=int, default=4)
    add("--port", type=int, default=29392, help="local broker port (controller: port + 1)")
    add("--out", default=str(REPO / "bench" / "results" / "pipeline.json"), help="and the markdown beside it (.md)")
    add("--single-group", action="store_true", help="the worker runs its roles as one app (SLUICE_SINGLE_GROUP)")
    add("--json", action="store_true", help="print the JSON object as the last stdout line")
    args = parser.parse_args()
    if args.single_group:
        os.environ["BENCH_SLUICE_SINGLE_GROUP"] = "true"  # start_worker passes BENCH_SLUICE_X on as SLUICE_X
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    measured: dict[str, Any] = {}

    def measure_ceiling(settings: Settings) -> None:
        print(f"broker {settings.bootstrap}, prefix {settings.topic_prefix}: measuring the ceiling", file=sys.stderr)
        measured["ceiling"] = asyncio.run(run_ceiling(settings, args))
        print("starting the all-roles worker; measuring exact hits", file=sys.stderr)

    async def exact_hits(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
        measured["sluice"] = await run_sluice(settings, args, worker)
        measured["memory"] = memory(worker.pid)
        measured["bootstrap"] = settings.bootstrap

    ceiling_topic = TopicSpec("ceiling", "none", "raw produce/consume ceiling")
    run_with_worker("pb", args.port, args.partitions, exact_hits, (ceiling_topic,), measure_ceiling)
    ceiling, sluice, mem, bootstrap = (measured[k] for k in ("ceiling", "sluice", "memory", "bootstrap"))
    result: dict[str, Any] = dict(started=started, broker=bootstrap, partitions=args.partitions, seconds=args.seconds)
    result["single_group"] = os.environ.get("BENCH_SLUICE_SINGLE_GROUP", "").lower() in ("1", "true", "yes")
    result.update(ceiling=ceiling, sluice=sluice, memory=mem, **analyse(ceiling, sluice, mem))
    result["wall_s"] = round(time.monotonic() - wall0, 1)
    write_results(result, args.out, markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
