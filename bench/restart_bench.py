"""How long a worker takes to be useful: from process start to the first answer, and from a restart (after
SIGKILL, and after SIGTERM) to the last answer of a backlog published while it was down; and what a second
worker joining and leaving under load does to latency (adding a process adds capacity, at a rebalance's cost).

An SRE's question after a deploy or a crash, and where Faust's start-up costs show: each role is a Faust app
that joins its group, recovers its tables and seeks its partitions before it reads anything. Exact hits are
the backlog, so the numbers are the pipeline's, not the model's.

    .venv/bin/python bench/restart_bench.py [--backlog 500] [--rate 150] [--seconds 40] [--json] [--out F]

Needs KAFKA_BOOTSTRAP (or starts a broker on 29392/29393 like pipeline_bench).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_cluster import bench_kafka, release_kafka, start_worker, stop_worker  # noqa: E402
from bench_output import md_table, write_results  # noqa: E402
from load_phases import Record, phase  # noqa: E402
from pipeline_bench import PROMPT  # noqa: E402

from streams.broker import LocalBroker  # noqa: E402
from streams.client import SluiceClient, make_request  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import TOPICS, create_topics  # noqa: E402


def _request(session: str) -> Any:
    return make_request(PROMPT, tenant="bench", session=session, max_tokens=16)


async def _backlog_after_restart(
    client: SluiceClient, settings: Settings, tmp: Path, worker: subprocess.Popen[bytes], sig: int, n: int
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Stop the worker with ``sig``, publish ``n`` exact hits while it is down, start a new one, time the answers."""
    if sig == signal.SIGKILL:
        os.killpg(worker.pid, sig)
        worker.wait()
    else:
        stop_worker(worker)
    futures = [await client.send(_request(uuid.uuid4().hex)) for _ in range(n)]
    worker, _ = start_worker(settings, tmp)
    t0 = time.perf_counter()
    times: list[float] = []
    tiers: dict[str, int] = {}

    async def wait(future: Any) -> None:
        response = await asyncio.wait_for(future, 300)
        times.append(time.perf_counter() - t0)
        tiers[response.tier or response.status] = tiers.get(response.tier or response.status, 0) + 1

    await asyncio.gather(*(wait(f) for f in futures), return_exceptions=True)
    times.sort()
    stats: dict[str, Any] = dict(published=n, answered=len(times), tiers=tiers)
    if times:
        stats.update(first_s=round(times[0], 2), median_s=round(times[len(times) // 2], 2), last_s=round(times[-1], 2))
    return worker, stats


def _window(recs: list[Record], t0: float, start: float, end: float) -> dict[str, Any]:
    """Latency of the requests *sent* in [start, end) seconds after t0 (a record is (done at, latency, ok))."""
    lat = sorted(r[1] for r in recs if start <= r[0] - r[1] - t0 < end)
    if not lat:
        return dict(answered=0)
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)  # noqa: E731
    return dict(answered=len(lat), p50_ms=pick(0.5), p99_ms=pick(0.99), max_ms=round(lat[-1] * 1000, 1))


async def _scale_out_and_in(
    client: SluiceClient, settings: Settings, tmp: Path, rate: float, seconds: float
) -> dict[str, Any]:
    """Paced exact hits on the running worker; a second worker joins at 30% of the run and leaves (SIGTERM) at 65%:
    two rebalances under load. Latency by when a request was sent: before, while two, after."""
    join_at, leave_at = 0.3 * seconds, 0.65 * seconds
    recs: list[Record] = []

    async def one(out: list[Record]) -> None:
        t = time.perf_counter()
        response = await (await client.send(_request(uuid.uuid4().hex)))
        now = time.perf_counter()
        out.append((now, now - t, response.status == "ok"))
        recs.append(out[-1])

    async def second_worker() -> None:
        await asyncio.sleep(join_at)
        own = settings.with_overrides(data_dir=str(tmp / "second"))  # its own vector store files
        worker, _ = start_worker(own, tmp / "second-log")
        await asyncio.sleep(leave_at - join_at)
        await asyncio.to_thread(stop_worker, worker)

    (tmp / "second-log").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    result, _ = await asyncio.gather(phase(one, seconds, 60.0, rate=rate), second_worker())
    windows = {
        "one_worker": _window(recs, t0, 0.0, join_at),
        "second_joins": _window(recs, t0, join_at, leave_at),
        "second_left": _window(recs, t0, leave_at, seconds),
    }
    return dict(rate=rate, seconds=seconds, sent=result["sent"], answered_ok=result["answered_ok"], **windows)


async def drive(settings: Settings, tmp: Path, backlog: int, rate: float, seconds: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    worker, _ = start_worker(settings, tmp)
    try:
        async with SluiceClient(settings) as client:
            first = await client.submit(_request("cold"), timeout=300)
            cold = dict(first_answer_s=round(time.perf_counter() - t0, 2), tier=first.tier, status=first.status)
            if first.status != "ok":
                raise RuntimeError(f"first request failed: {first.status} {first.reason}")
            for i in range(20):  # the prompt is cached now: every later request is an exact hit
                await client.submit(_request(f"warm{i}"), timeout=60)
            worker, killed = await _backlog_after_restart(client, settings, tmp, worker, signal.SIGKILL, backlog)
            worker, stopped = await _backlog_after_restart(client, settings, tmp, worker, signal.SIGTERM, backlog)
            scaling = await _scale_out_and_in(client, settings, tmp, rate, seconds) if seconds > 0 else None
    finally:
        stop_worker(worker)
    return dict(cold_start=cold, after_sigkill=killed, after_sigterm=stopped, scale_out_and_in=scaling)


def render(r: dict[str, Any]) -> str:
    cold = r["cold_start"]
    rows = [
        (
            name,
            r[key]["published"],
            r[key]["answered"],
            r[key].get("first_s"),
            r[key].get("median_s"),
            r[key].get("last_s"),
        )
        for name, key in (("SIGKILL", "after_sigkill"), ("SIGTERM", "after_sigterm"))
    ]
    lines = [
        "# Restart benchmark",
        "",
        f"{r['started']}, broker {r['broker']}, {r['partitions']} partitions, one all-roles worker.",
        "",
        f"Cold start (fresh topics and groups) to the first answer: {cold['first_answer_s']} s "
        f"(it includes one local generation of 16 tokens).",
        "",
        "A backlog of exact hits published while the worker was down; seconds from the new process's start:",
        "",
        *md_table(("stopped by", "published", "answered", "first s", "median s", "last s"), rows),
        "",
        "After SIGKILL the dead member stays in its groups until the broker's session timeout "
        f"({r['session_timeout_s']} s) ends it; after SIGTERM it left them.",
    ]
    scaling = r.get("scale_out_and_in")
    if scaling:
        rows = [
            (name, w["answered"], w.get("p50_ms"), w.get("p99_ms"), w.get("max_ms"))
            for name, w in (
                ("one worker", scaling["one_worker"]),
                ("two workers (the second starting, joining: a rebalance)", scaling["second_joins"]),
                ("the second worker left (SIGTERM)", scaling["second_left"]),
            )
        ]
        lines += [
            "",
            f"Scaling out and in under load: {scaling['rate']:g} exact hits/s for {scaling['seconds']:g} s; a second "
            "all-roles worker starts at 30% of the run and is stopped at 65%. "
            f"Answered {scaling['answered_ok']} of {scaling['sent']}; latency by when the request was sent:",
            "",
            *md_table(("while", "answered", "p50 ms", "p99 ms", "max ms"), rows),
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--backlog", type=int, default=500, help="exact hits published while the worker is down")
    add("--partitions", type=int, default=4)
    add("--rate", type=float, default=150.0, help="exact hits/s while a second worker joins and leaves")
    add("--seconds", type=float, default=40.0, help="length of that run (0: skip it)")
    add("--port", type=int, default=29392)
    add("--out", default=str(REPO / "bench" / "results" / "restart.json"))
    add("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-restart-"))
    broker: LocalBroker | None = None
    settings: Settings | None = None
    try:
        settings, broker = bench_kafka(tmp, args.port, args.partitions, "rs")
        asyncio.run(create_topics(settings, TOPICS))
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        result = asyncio.run(drive(settings, tmp, args.backlog, args.rate, args.seconds))
        result.update(
            started=started,
            broker=settings.bootstrap,
            partitions=args.partitions,
            session_timeout_s=settings.broker_session_timeout,
        )
        write_results(result, args.out, render, args.json)
        return 0
    finally:
        release_kafka(settings, broker)


if __name__ == "__main__":
    sys.exit(main())
