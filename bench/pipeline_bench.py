"""End-to-end pipeline benchmark, measured in one run against a genuine Kafka broker:

(d) the ceiling: raw aiokafka produce -> consume on a fresh topic (the publish timestamp travels in a ~300-byte
    value; a consumer in the same process measures end-to-end latency), at the offered loads and flat out;
(a) Sluice exact hits: SluiceClient.send -> reply consumed, through ONE ``sluice worker`` process with every role
    (admit, cache, local, cloud, meter), same prompt from distinct sessions, at the same offered loads and flat out;
(e) resident memory (VmRSS, VmHWM) of that all-roles worker after the run.

    .venv/bin/python bench/pipeline_bench.py [--loads 100,250,500] [--seconds 5] [--max-in-flight 2000] [--json]

Starts a broker on 29392/29393 unless KAFKA_BOOTSTRAP is set. Latency = publish call -> reply consumed.
Writes --out (JSON) and --md (markdown); with --json the last stdout line is the JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from schemas.records import dumps  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.client import SluiceClient, make_request  # noqa: E402
from streams.kafka_clients import assign_all, stop_consumer  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tiers import DEFAULT_TIERS_PATH  # noqa: E402
from streams.topics import TopicSpec, create_topics  # noqa: E402

PROMPT = "In one short sentence, what does a write-ahead log guarantee to a database after a crash?"
TARGETS = {"p50_ms_at_500": 10.0, "p99_ms_at_500": 50.0, "sustained_per_s": 1000.0, "rss_bytes": 1.5e9}
Record = tuple[float, float, bool]  # (done at, latency s, ok: the expected kind of reply)
One = Callable[[list[Record]], Awaitable[None]]


def pct_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)) * 1000, 2) if values else None


def summary(recs: list[Record], sent: int, t0: float, send_s: float, window_s: float | None = None) -> dict[str, Any]:
    lat = [r[1] for r in recs]
    last = max((r[0] for r in recs), default=t0 + send_s)
    out: dict[str, Any] = {
        "sent": sent,
        "achieved_send_per_s": round(sent / send_s, 1),
        "answered": len(recs),
        "answered_ok": sum(r[2] for r in recs),
        "answered_per_s": round(len(recs) / max(last - t0, 1e-9), 1),
        "p50_ms": pct_ms(lat, 50),
        "p99_ms": pct_ms(lat, 99),
    }
    if window_s is not None:  # flat out: replies that came back inside the sending window
        out["answered_in_window_per_s"] = round(sum(r[0] <= t0 + window_s for r in recs) / window_s, 1)
    return out


async def settle(tasks: list[asyncio.Task[None]], drain_s: float) -> None:
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def paced(rate: float, seconds: float, one: One, drain_s: float) -> dict[str, Any]:
    """Start ``rate`` requests a second for ``seconds`` (each its own task), then wait for the replies."""
    recs: list[Record] = []
    tasks: list[asyncio.Task[None]] = []
    n, i = int(rate * seconds), 0
    t0 = time.perf_counter()
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            tasks.append(asyncio.create_task(one(recs)))
            i += 1
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
    send_s = time.perf_counter() - t0
    await settle(tasks, drain_s)
    return {"offered_per_s": rate, **summary(recs, n, t0, send_s)}


async def flat_out(seconds: float, in_flight: int, one: One, drain_s: float) -> dict[str, Any]:
    """Send as fast as possible for ``seconds`` with at most ``in_flight`` requests unanswered."""
    recs: list[Record] = []
    gate = asyncio.Semaphore(in_flight)
    tasks: list[asyncio.Task[None]] = []

    async def bounded() -> None:
        try:
            await one(recs)
        finally:
            gate.release()

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await gate.acquire()
        tasks.append(asyncio.create_task(bounded()))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0)
    send_s = time.perf_counter() - t0
    await settle(tasks, drain_s)
    return {"max_in_flight": in_flight, **summary(recs, len(tasks), t0, send_s, window_s=seconds)}


async def measure(one: One, args: argparse.Namespace) -> dict[str, Any]:
    await paced(100, args.warmup, one, args.drain)  # untimed: connections, JIT-free but cold paths warmed
    loads = [await paced(rate, args.seconds, one, args.drain) for rate in args.loads]
    return {"loads": loads, "max": await flat_out(args.seconds, args.max_in_flight, one, args.drain)}


async def run_ceiling(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    spec = TopicSpec("ceiling", "none", "raw produce/consume ceiling")
    await create_topics(settings, (spec,))
    topic = spec.full_name(settings)
    opts = settings.kafka_client_options()
    producer = AIOKafkaProducer(  # the same producer settings as SluiceClient
        bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=1, **opts
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None, **opts)
    await producer.start()
    await consumer.start()
    tps = await assign_all(consumer, settings, topic)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    waiters: dict[int, asyncio.Future[float]] = {}
    seqs = itertools.count()

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    ts, seq = struct.unpack_from("<dQ", record.value or b"")
                    fut = waiters.pop(seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(now - ts)

    async def one(recs: list[Record]) -> None:
        seq = next(seqs)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiters[seq] = fut
        value = struct.pack("<dQ", time.perf_counter(), seq).ljust(args.msg_bytes, b"x")
        await producer.send_and_wait(topic, value)
        latency = await fut
        recs.append((time.perf_counter(), latency, True))

    reader = asyncio.create_task(read())
    try:
        return {"message_bytes": args.msg_bytes, **await measure(one, args)}
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await stop_consumer(consumer)
        await producer.stop()


async def run_sluice(settings: Settings, args: argparse.Namespace, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    async with SluiceClient(settings) as client:
        warm = asyncio.create_task(client.submit(make_request(PROMPT, tenant="bench", session="warm", max_tokens=16)))
        while not warm.done():  # first answer: model load + one generation, then it is in the exact cache
            if worker.poll() is not None:
                warm.cancel()
                raise RuntimeError(f"worker exited with code {worker.returncode}")
            await asyncio.sleep(0.5)
        first = warm.result()
        if first.status != "ok":
            raise RuntimeError(f"warm-up request failed: {first.status} {first.error}")
        sample = make_request(PROMPT, tenant="bench", session=uuid.uuid4().hex, max_tokens=16)

        async def one(recs: list[Record]) -> None:
            request = make_request(PROMPT, tenant="bench", session=uuid.uuid4().hex, max_tokens=16)
            t = time.perf_counter()
            response = await (await client.send(request))
            now = time.perf_counter()
            recs.append(
                (now, now - t, response.tier == "cache" and response.route.get("cache", {}).get("kind") == "exact")
            )

        return {"request_bytes": len(dumps(sample)), "warm_tier": first.tier, **await measure(one, args)}


def memory(pid: int) -> dict[str, Any]:
    """VmRSS/VmHWM of ``pid`` (and the summed RSS of any descendants), in bytes."""

    def status(p: int) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
        return out

    def children(p: int) -> list[int]:
        kids = []
        for task in Path(f"/proc/{p}/task").iterdir():
            kids += [int(c) for c in (task / "children").read_text().split()]
        return kids + [g for k in kids for g in children(k)]

    main, kids = status(pid), children(pid)
    return {
        "vm_rss_bytes": main.get("VmRSS"),
        "vm_hwm_bytes": main.get("VmHWM"),
        "descendants": len(kids),
        "descendants_rss_bytes": sum(status(k).get("VmRSS", 0) for k in kids),
    }


def start_worker(settings: Settings, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    tiers = yaml.safe_load(DEFAULT_TIERS_PATH.read_text())
    tiers["router"] = {"knob": 0.0}  # everything routes to the local tier
    (tmp / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        KAFKA_BOOTSTRAP=settings.bootstrap,
        SLUICE_TOPIC_PREFIX=settings.topic_prefix,
        SLUICE_PARTITIONS=str(settings.partitions),
        SLUICE_DATA_DIR=settings.data_dir,
        SLUICE_LOG_LEVEL="warning",
        SLUICE_BREAKER_ENABLED="false",
        SLUICE_TIERS_FILE=str(tmp / "tiers.yaml"),
    )
    roles = [a for role in ("admit", "cache", "local", "cloud", "meter") for a in ("--role", role)]
    log = tmp / "worker.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", *roles],
            env=env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, log


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def verdicts(ceiling: dict[str, Any], sluice: dict[str, Any], mem: dict[str, Any]) -> dict[str, Any]:
    at500 = next((row for row in sluice["loads"] if row["offered_per_s"] == 500), None)

    def at_most(value: float | None, target: float) -> dict[str, Any]:
        met = value is not None and value <= target
        return {"value": value, "target": f"<= {target:g}", "met": met, "value_over_target": _ratio(value, target)}

    sustained = sluice["max"]["answered_in_window_per_s"]
    rss = mem.get("vm_rss_bytes")
    return {
        "exact_hit_p50_ms_at_500": at_most(at500 and at500["p50_ms"], TARGETS["p50_ms_at_500"]),
        "exact_hit_p99_ms_at_500": at_most(at500 and at500["p99_ms"], TARGETS["p99_ms_at_500"]),
        "sustained_per_s_one_worker": {
            "value": sustained,
            "target": f">= {TARGETS['sustained_per_s']:g}",
            "met": sustained >= TARGETS["sustained_per_s"],
            "value_over_target": _ratio(sustained, TARGETS["sustained_per_s"]),
        },
        "all_roles_rss_bytes": at_most(rss, TARGETS["rss_bytes"]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def markdown(r: dict[str, Any]) -> str:
    c, s = r["ceiling"], r["sluice"]
    lines = [
        "# Pipeline benchmark",
        "",
        f"{r['started']}, {r['wall_s']} s, broker {r['broker']}, {r['partitions']} partitions. Latency: publish call "
        f"-> reply consumed. Ceiling: raw aiokafka, {c['message_bytes']}-byte values; Sluice: exact hits through one "
        f"all-roles worker, {s['request_bytes']}-byte requests.",
        "",
        "| offered/s | ceiling sent/s | ceiling p50 ms | ceiling p99 ms | Sluice sent/s | Sluice answered/s "
        "| Sluice p50 ms | Sluice p99 ms | exact hits | p50 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cr, sr in zip(c["loads"], s["loads"], strict=True):
        lines.append(
            f"| {sr['offered_per_s']} | {cr['achieved_send_per_s']} | {cr['p50_ms']} | {cr['p99_ms']} "
            f"| {sr['achieved_send_per_s']} | {sr['answered_per_s']} | {sr['p50_ms']} | {sr['p99_ms']} "
            f"| {sr['answered_ok']}/{sr['sent']} | {_ratio(sr['p50_ms'], cr['p50_ms'])} |"
        )
    cm, sm = c["max"], s["max"]
    lines += [
        "",
        f"Max sustained ({sm['max_in_flight']} in flight): ceiling {cm['answered_in_window_per_s']}/s "
        f"(p50 {cm['p50_ms']} ms), Sluice {sm['answered_in_window_per_s']}/s (p50 {sm['p50_ms']} ms, p99 "
        f"{sm['p99_ms']} ms); Sluice/ceiling = {r['sluice_over_ceiling_throughput']}.",
        "",
        f"All-roles worker memory: VmRSS {r['memory']['vm_rss_bytes'] / 1e6:.0f} MB, VmHWM "
        f"{r['memory']['vm_hwm_bytes'] / 1e6:.0f} MB.",
        "",
        "| target | value | goal | met | value/target |",
        "|---|---|---|---|---|",
    ]
    for name, v in r["targets"].items():
        lines.append(
            f"| {name} | {v['value']} | {v['target']} | {'yes' if v['met'] else 'no'} | {v['value_over_target']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=lambda v: [int(x) for x in v.split(",")], default=[100, 250, 500])
    parser.add_argument("--seconds", type=float, default=5.0, help="per offered load, and flat out")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds at 100/s before measuring")
    parser.add_argument("--drain", type=float, default=15.0, help="how long to wait for stragglers")
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--msg-bytes", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--port", type=int, default=29392, help="local broker port (controller: port + 1)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline.json"))
    parser.add_argument("--md", default=str(REPO / "bench" / "results" / "pipeline.md"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-pipeline-"))
    broker: LocalBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
        if not bootstrap:
            local = Settings(data_dir=str(tmp), kafka_port=args.port, kafka_controller_port=args.port + 1)
            broker = LocalBroker(local)
            broker.start()
            bootstrap = local.bootstrap
        settings = Settings(
            kafka_bootstrap=bootstrap,
            topic_prefix="pb" + uuid.uuid4().hex[:10],
            partitions=args.partitions,
            data_dir=str(tmp / "sluice"),
            reply_timeout_s=180.0,
        )
        asyncio.run(create_topics(settings))
        print(f"broker {bootstrap}, prefix {settings.topic_prefix}: measuring the ceiling", file=sys.stderr)
        ceiling = asyncio.run(run_ceiling(settings, args))
        print("starting the all-roles worker and measuring exact hits", file=sys.stderr)
        worker, log = start_worker(settings, tmp)
        sluice = asyncio.run(run_sluice(settings, args, worker))
        mem = memory(worker.pid)
    except BaseException:
        if log is not None and log.exists():
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        if worker is not None:
            stop_worker(worker)
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "started": started,
        "broker": bootstrap,
        "partitions": args.partitions,
        "ceiling": ceiling,
        "sluice": sluice,
        "memory": mem,
        "sluice_over_ceiling_throughput": _ratio(
            sluice["max"]["answered_in_window_per_s"], ceiling["max"]["answered_in_window_per_s"]
        ),
        "targets": verdicts(ceiling, sluice, mem),
    }
    result["wall_s"] = round(time.monotonic() - wall0, 1)
    for path, text in ((args.out, json.dumps(result, indent=2) + "\n"), (args.md, markdown(result))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    print(markdown(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
