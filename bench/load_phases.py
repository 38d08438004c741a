"""Load phases shared by the benches: paced or flat-out requests with latency records, the worker's CPU while
they run, and the sustained rate (rising paced loads until one is not kept up with)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_output import md_table

Record = tuple[float, float, bool]  # (done at, latency s, ok: the expected kind of reply)
One = Callable[[list[Record]], Awaitable[None]]


async def phase(one: One, seconds: float, drain_s: float, rate: float = math.inf, in_flight: int = 0) -> dict[str, Any]:
    """Start ``rate`` requests/s (or flat out), at most ``in_flight`` unanswered; then drain up to ``drain_s``."""
    recs: list[Record] = []
    tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(in_flight or 1 << 30)

    async def task() -> None:
        try:
            await one(recs)
        finally:
            gate.release()

    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = len(tasks) + 1 if rate == math.inf else min(int(elapsed * rate) + 1, int(rate * seconds))
        while len(tasks) < due:
            await gate.acquire()
            tasks.append(asyncio.create_task(task()))
        await asyncio.sleep(0 if rate == math.inf else max(0.0, t0 + len(tasks) / rate - time.perf_counter()))
    send_s = time.perf_counter() - t0
    for t in (await asyncio.wait(tasks, timeout=drain_s))[1] if tasks else ():
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat, last = [r[1] for r in recs], max((r[0] for r in recs), default=t0 + send_s)
    out: dict[str, Any] = {"offered_per_s": None if rate == math.inf else rate, "max_in_flight": in_flight or None}
    out.update(sent=len(tasks), achieved_send_per_s=round(len(tasks) / send_s, 1), answered=len(recs))
    out.update(answered_ok=sum(r[2] for r in recs), answered_per_s=round(len(recs) / max(last - t0, 1e-9), 1))
    out.update(answered_in_window_per_s=round(sum(r[0] <= t0 + seconds for r in recs) / seconds, 1))
    out["p99_ms_by_second"] = _p99_by_second(recs, t0, seconds)
    return {**out, **{f"p{q}_ms": round(float(np.percentile(lat, q)) * 1000, 2) if lat else None for q in (50, 99)}}


def _p99_by_second(recs: list[Record], t0: float, seconds: float) -> list[float | None]:
    """p99 of the requests sent in each second of the phase: a tail that is a start-up backlog or a periodic
    pause shows where it is, which one p99 over the phase hides."""
    by: list[list[float]] = [[] for _ in range(max(1, math.ceil(seconds)))]
    for done, latency, _ in recs:
        second = int(done - latency - t0)
        if 0 <= second < len(by):
            by[second].append(latency)
    return [round(float(np.percentile(b, 99)) * 1000, 1) if b else None for b in by]


def memory(pid: int) -> dict[str, Any]:
    """VmRSS and VmHWM (bytes) and CPU seconds of ``pid`` (llama_cpp, the default backend, runs in-process)."""
    fields = (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    vm = {k: int(v.split()[0]) * 1024 for k, _, v in fields if k in ("VmRSS", "VmHWM")}  # kB in the file
    ticks = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[11:13]  # utime, stime
    cpu_s = round(sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK"), 2)
    return {"vm_rss_bytes": vm.get("VmRSS"), "vm_hwm_bytes": vm.get("VmHWM"), "cpu_s": cpu_s}


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


async def with_cpu(pid: int | None, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``run``'s result plus, while it ran, the worker's CPU share and CPU ms per answer, this (client) process's
    CPU share, and the busy cores of the whole machine (the broker's, the client's and the worker's together):
    on a small machine they compete for the same cores."""
    cpu0, t0 = memory(pid)["cpu_s"] if pid else 0.0, time.perf_counter()
    client0, busy0 = time.process_time(), machine_busy_s()
    row = await run
    wall = time.perf_counter() - t0
    row.update(client_cpu_share=round((time.process_time() - client0) / wall, 2))
    row.update(machine_busy_cores=round((machine_busy_s() - busy0) / wall, 2), machine_cores=os.cpu_count())
    if pid:
        cpu = memory(pid)["cpu_s"] - cpu0
        row.update(worker_cpu_share=round(cpu / wall, 2))
        row.update(worker_cpu_ms_per_answer=round(cpu * 1e3 / max(row["answered"], 1), 2))
    return row


async def sustain(one: One, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    """Rising paced loads until one is not kept up with: the highest kept up is the sustained rate. Kept up: every
    request answered, p99 within the bound, and >= 95% answered inside the window (a growing queue fails both)."""
    rows: list[dict[str, Any]] = []
    for rate in args.sustain:
        row = await with_cpu(pid, phase(one, args.sustain_seconds, args.drain, rate=rate))
        p99 = row["p99_ms"]
        row["kept_up"] = bool(
            row["answered_ok"] == row["sent"]
            and p99 is not None
            and p99 <= args.sustain_p99_ms
            and row["answered_in_window_per_s"] >= 0.95 * rate
        )
        rows.append(row)
        if not row["kept_up"]:
            break
    kept = [r["offered_per_s"] for r in rows if r["kept_up"]]
    return {"loads": rows, "max_kept_up_per_s": max(kept, default=None), "p99_bound_ms": args.sustain_p99_ms}


def sustained_row(r: dict[str, Any]) -> tuple[Any, ...]:
    cpu = (r.get("worker_cpu_share"), r.get("worker_cpu_ms_per_answer"), r.get("client_cpu_share"))
    cpu += (f"{r.get('machine_busy_cores')} of {r.get('machine_cores')}",)
    latency, answered = f"{r['p50_ms']} / {r['p99_ms']}", f"{r['answered_ok']}/{r['sent']}"
    return (r["offered_per_s"], r["achieved_send_per_s"], r["answered_per_s"], latency, answered, *cpu, r["kept_up"])


def sustained_lines(sus: dict[str, Any] | None) -> list[str]:
    if not sus:
        return []
    head = ("offered/s", "sent/s", "answered/s", "p50/p99 ms", "answered/sent", "worker cores", "CPU ms/answer")
    head += ("client cores", "machine busy cores")
    rows = [sustained_row(r) for r in sus["loads"]]
    intro = (
        f"Sustained (rising paced loads until one is not kept up with: every request answered, p99 <="
        f" {sus['p99_bound_ms']} ms, >= 95% inside the window): {sus['max_kept_up_per_s']} req/s.\n"
    )
    return [intro, *md_table((*head, "kept up"), rows), ""]
