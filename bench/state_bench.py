"""Per-request state: what the meter and the admit stage hold for each request, and that it stops growing.

Every metered request stays in the meter's dedup ledger for the horizon (plus its session's running totals), and
every session keeps a breaker/budget row in the admit stage until it is forgotten. With a new session per request
(the pipeline bench's traffic, and many real services') that state grows with the request rate times how long it
is kept, so it decides whether a worker's memory is bounded at all. This drives the real stages
(``MeterStage.handle``, ``SessionGuard.admit``/``settle``; tables are dicts, as Faust's ``memory://`` store holds
them) through simulated time at ``--rate`` requests/s for three horizons, and measures with tracemalloc:

- bytes held per request in the horizon, and whether the ledger and the session table stop growing (plateau:
  the size after three horizons over the size after two);
- the steady state this implies at 500 and 1,000 requests/s with the configured (default) horizons.

    .venv/bin/python bench/state_bench.py [--rate 500] [--horizon-s 60] [--session-size 1] [--json]

``--horizon-s`` scales the simulation (the meter's horizon and the guard's clock); the projection uses the
settings' defaults. ``--session-size``: requests per session (1: a new session per request, the worst case).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_output import goal, md_table, targets_table, write_results  # noqa: E402

import streams.stages.guard as guard_module  # noqa: E402
from schemas.records import Request, Response, Usage, dumps  # noqa: E402
from streams.policy.token_count import count_tokens  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.stages.guard import SessionGuard  # noqa: E402
from streams.stages.meter import MeterStage  # noqa: E402
from streams.stages.outgoing import Outgoing, Source  # noqa: E402
from streams.tiers import load_tiers  # noqa: E402

T0 = 1_800_000_000_000
PARTITIONS = 8
PROJECTED_RATES = (500, 1000)


async def _drop(messages: list[Outgoing]) -> None:
    del messages


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def meter_run(args: argparse.Namespace) -> dict[str, Any]:
    """Responses at ``rate``/s of stream time for three horizons through the meter stage."""
    settings = Settings(topic_prefix="bench", meter_dedup_horizon_s=args.horizon_s)
    ledger: dict[str, Any] = {}
    frontier = load_tiers().frontier
    stage = MeterStage(settings, ledger, lambda: frontier, count_tokens, {})
    per_horizon = int(args.rate * args.horizon_s)
    step_ms = 1000.0 / args.rate
    base = traced()
    sizes, held, cpu = [], [], 0.0
    for h in range(3):
        raws = [
            dumps(
                Response(
                    id=f"r{i}",
                    tenant="acme",
                    session=f"s{i // args.session_size}",
                    status="ok",
                    text="the answer",
                    tier="cache",
                    model="gpt-4o-mini",
                    usage=Usage(40, 60),
                    latency_ms=3.0,
                    created_at=T0 + int(i * step_ms),
                )
            )
            for i in range(h * per_horizon, (h + 1) * per_horizon)
        ]
        started = time.process_time()
        for i, raw in enumerate(raws, start=h * per_horizon):
            await stage.handle(raw, Source("bench.responses", i % PARTITIONS, i), _drop)
        cpu += time.process_time() - started
        del raws
        sizes.append(len(ledger))
        held.append(traced() - base)
    return {
        "requests": 3 * per_horizon,
        "ledger_entries_per_horizon": sizes,
        "bytes_held_per_horizon": held,
        "bytes_per_request_in_horizon": round(held[-1] / max(sizes[-1], 1)),
        "plateau": round(sizes[2] / max(sizes[1], 1), 3),
        "cpu_us_per_response": round(cpu / (3 * per_horizon) * 1e6, 1),
        "session_totals": sum(1 for k in stage.aggregates.running if k[0] == "session"),
    }


async def guard_run(args: argparse.Namespace) -> dict[str, Any]:
    """Requests at ``rate``/s of simulated wall time for three quiet TTLs through the admit stage's guard, each
    settled at once (an exact hit); ``now_ms`` in the guard module follows the simulated clock."""
    settings = Settings(topic_prefix="bench")
    sessions: dict[str, Any] = {}
    priciest = load_tiers().priciest
    guard = SessionGuard(settings, sessions, lambda: priciest, {})
    clock = [T0]
    guard_module.now_ms = lambda: clock[0]
    window = guard.rows.quiet_ttl_ms / 1000
    per_window = int(args.rate * window)
    step_ms = 1000.0 / args.rate
    base = traced()
    sizes, held = [], []
    for w in range(3):
        for i in range(w * per_window, (w + 1) * per_window):
            clock[0] = T0 + int(i * step_ms)
            request = Request(
                id=f"r{i}", tenant="acme", session=f"s{i // args.session_size}", prompt=f"what is {i} times 7?"
            )
            guard.admit(request, i % PARTITIONS, settle_usd=0.0)
        sizes.append(len(sessions) + len(guard.rows.memory))
        held.append(traced() - base)
    return {
        "quiet_ttl_s": window,
        "sessions_written": 3 * per_window // args.session_size,
        "rows_per_window": sizes,
        "bytes_held_per_window": held,
        "bytes_per_session_row": round(held[-1] / max(sizes[-1], 1)),
        "plateau": round(sizes[2] / max(sizes[1], 1), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rate", type=float, default=500.0, help="simulated requests per second")
    add("--horizon-s", type=float, default=60.0, help="the meter's horizon in the simulation")
    add("--session-size", type=int, default=1, help="requests per session")
    add("--out", default=str(REPO / "bench" / "results" / "state.json"), help="and the markdown beside it (.md)")
    add("--json", action="store_true", help="print the JSON object as the last stdout line")
    args = parser.parse_args()
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    tracemalloc.start()
    meter = asyncio.run(meter_run(args))
    guard = asyncio.run(guard_run(args))
    tracemalloc.stop()
    defaults = Settings()
    projected = {}
    for rate in PROJECTED_RATES:
        meter_bytes = meter["bytes_per_request_in_horizon"] * rate * defaults.meter_dedup_horizon_s
        guard_bytes = guard["bytes_per_session_row"] * rate / args.session_size * guard["quiet_ttl_s"]
        projected[str(rate)] = {"meter_bytes": round(meter_bytes), "admit_bytes": round(guard_bytes)}
    result: dict[str, Any] = {
        "started": started,
        "rate": args.rate,
        "horizon_s": args.horizon_s,
        "session_size": args.session_size,
        "meter": meter,
        "admit": guard,
        "default_meter_horizon_s": defaults.meter_dedup_horizon_s,
        "projected_steady_state": projected,
        "targets": {
            # Bounded: after three horizons the state is the size it was after two (within 10%); after one, the
            # ledger has not been pruned yet (it holds the horizon plus up to two prune intervals once it is).
            "meter_ledger_plateau": goal(meter["plateau"], 1.1),
            "admit_sessions_plateau": goal(guard["plateau"], 1.1),
        },
        "wall_s": round(time.monotonic() - wall0, 1),
    }
    write_results(result, args.out, markdown, args.json)
    return 0


def markdown(r: dict[str, Any]) -> str:
    m, g = r["meter"], r["admit"]
    rows = [
        ("meter: bytes per request in the horizon (ledger entry, its index, session totals)",
         m["bytes_per_request_in_horizon"]),
        ("meter: ledger entries after 1, 2, 3 horizons", ", ".join(map(str, m["ledger_entries_per_horizon"]))),
        ("meter: CPU µs per response (stage only, under tracemalloc)", m["cpu_us_per_response"]),
        ("admit: bytes per session row", g["bytes_per_session_row"]),
        (f"admit: session rows after 1, 2, 3 quiet TTLs ({g['quiet_ttl_s']:g} s)",
         ", ".join(map(str, g["rows_per_window"]))),
    ]  # fmt: skip
    for rate, p in r["projected_steady_state"].items():
        rows.append(
            (
                f"steady state at {rate} req/s, default horizon {r['default_meter_horizon_s']:g} s: meter / admit",
                f"{p['meter_bytes'] / 2**20:.0f} MiB / {p['admit_bytes'] / 2**20:.0f} MiB",
            )
        )
    return (
        "\n".join(
            [
                "# Per-request state\n",
                f"{r['started']}, {r['wall_s']} s. Simulated {r['rate']:g} requests/s, {r['session_size']} per"
                f" session, meter horizon {r['horizon_s']:g} s in the simulation.\n",
                *md_table(("", "value"), rows),
                "",
                *targets_table(r["targets"]),
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
