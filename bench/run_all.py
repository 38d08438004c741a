"""Every benchmark in one command: runs each bench in its own process (so one's memory never counts in another's),
collects their JSON, and writes ``bench/results/all.json`` and ``all.md``: one table of every target from the
issue, the measured value, met or not, and by how much.

    .venv/bin/python bench/run_all.py [--quick] [--only pipeline,cache,...] [--json]

``--only`` re-runs some benches and keeps the others' results from the existing all.json (each bench records
when it ran), so one bench re-measured after a change does not cost a full run.

Uses KAFKA_BOOTSTRAP when set; otherwise starts one broker on 29392/29393 for the benches that need one and
stops it at the end. ``--quick`` runs every bench at a small size (minutes; numbers only show the code works).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.broker import LocalBroker  # noqa: E402
from streams.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
QUICK_PIPELINE = ["--loads", "100,500", "--seconds", "3", "--drain", "5", "--sustain", "1000", "--sustain-seconds", "3"]
# name -> (script, full-size arguments, quick arguments, needs a broker)
BENCHES: dict[str, tuple[str, list[str], list[str], bool]] = {
    "pipeline": (
        "pipeline_bench.py",
        [],
        QUICK_PIPELINE,
        True,
    ),
    # The same worker with SLUICE_SINGLE_GROUP (one consumer group for all its roles): the one-process
    # targets are also read from it.
    "pipeline-single-group": (
        "pipeline_bench.py",
        ["--single-group"],
        ["--single-group", *QUICK_PIPELINE],
        True,
    ),
    "cache": ("cache_bench.py", [], ["--n", "300", "--preload", "2000"], False),
    "vector_store": ("vector_store_bench.py", [], ["--large", "20000", "--queries", "50"], False),
    "local": ("local_bench.py", [], ["--requests", "2", "--rounds", "1", "--max-tokens", "48"], True),
    "memory": ("memory_bench.py", [], ["--entries", "10000"], False),
    "state": ("state_bench.py", [], ["--horizon-s", "20"], False),
    "restart": ("restart_bench.py", [], ["--backlog", "100"], True),
}
# The targets: (name, bench, how to read the value, goal, at least?, unit)
TARGETS: list[tuple[str, str, tuple[str, ...], float, bool, str]] = [
    ("exact-hit p50 at 500 req/s", "pipeline", ("targets", "exact_hit_p50_ms_at_500", "value"), 10, False, "ms"),
    ("exact-hit p99 at 500 req/s", "pipeline", ("targets", "exact_hit_p99_ms_at_500", "value"), 50, False, "ms"),
    (
        "sustained exact hits, one worker",
        "pipeline",
        ("targets", "sustained_per_s_one_worker", "value"),
        1000,
        True,
        "req/s",
    ),
    (
        "exact-hit p50 at 500 req/s, one group",
        "pipeline-single-group",
        ("targets", "exact_hit_p50_ms_at_500", "value"),
        10,
        False,
        "ms",
    ),
    (
        "exact-hit p99 at 500 req/s, one group",
        "pipeline-single-group",
        ("targets", "exact_hit_p99_ms_at_500", "value"),
        50,
        False,
        "ms",
    ),
    (
        "sustained exact hits, one worker, one group",
        "pipeline-single-group",
        ("targets", "sustained_per_s_one_worker", "value"),
        1000,
        True,
        "req/s",
    ),
    ("semantic lookup / raw fastembed", "cache", ("semantic_ratio",), 0.70, True, ""),
    (
        "local tier tokens/s: worker / bare llama-cpp",
        "local",
        ("targets", "local_tokens_per_s_ratio", "value"),
        0.90,
        True,
        "",
    ),
    ("all-roles process resident (models loaded)", "*rss", (), 1.5e9, False, "B"),
    # The same process after running at 500 req/s with a new session per request until its state stops growing:
    # projected, the measured resident size plus the per-request state bench/state_bench.py measured at that rate.
    ("all-roles resident at 500 req/s, steady state (projected)", "*steady", (), 1.5e9, False, "B"),
    ("meter ledger stops growing (rows after 3 horizons / 2)", "state", ("meter", "plateau"), 1.1, False, ""),
    ("admit sessions stop growing (rows after 3 windows / 2)", "state", ("admit", "plateau"), 1.1, False, ""),
    (
        "cached entry, resident, beyond response text",
        "memory",
        ("targets", "cached_entry_resident_bytes_beyond_text", "value"),
        4096,
        False,
        "B",
    ),
    (
        "cached entry, on disk, beyond response text",
        "memory",
        ("targets", "cached_entry_disk_bytes_beyond_text", "value"),
        4096,
        False,
        "B",
    ),
]


def dig(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def run_bench(name: str, quick: bool, env: dict[str, str], log_dir: Path) -> dict[str, Any]:
    script, full, small = BENCHES[name][:3]
    out = log_dir / f"{name}.json"
    cmd = [sys.executable, str(REPO / "bench" / script), *(small if quick else full), "--json"]
    if name in ("pipeline", "pipeline-single-group", "local", "memory", "restart", "state"):
        cmd += ["--out", str(out)]  # the full-size results in bench/results are kept unless this is a full run
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0, at = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S")
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    run = {"bench_wall_s": round(time.monotonic() - t0, 1), "ran_at": at}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit code {proc.returncode}", "stdout_tail": lines[-10:], **run}
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON on the last stdout line", "stdout_tail": lines[-10:], **run}
    return {**result, **run}


def rss_value(benches: dict[str, Any]) -> tuple[Any, str]:
    """The larger all-roles VmRSS of the pipeline bench (after exact hits) and the local bench (after
    generating): both models are loaded in either."""
    seen = [
        (dig(benches.get(b), path), b)
        for b, path in (("pipeline", ("memory", "vm_rss_bytes")), ("local", ("worker_memory", "vm_rss_bytes")))
    ]
    seen = [(v, b) for v, b in seen if isinstance(v, int | float)]
    return max(seen) if seen else (None, "")


def steady_value(benches: dict[str, Any]) -> tuple[Any, str]:
    rss, bench = rss_value(benches)
    state = dig(benches.get("state"), ("projected_steady_state", "500"))
    if not isinstance(rss, int | float) or not isinstance(state, dict):
        return None, f"{bench}+state"
    return rss + state["meter_bytes"] + state["admit_bytes"], f"{bench}+state"


def verdicts(benches: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, bench, path, target, at_least, unit in TARGETS:
        if bench == "*rss":
            value, bench = rss_value(benches)
        elif bench == "*steady":
            value, bench = steady_value(benches)
        else:
            value = dig(benches.get(bench), path)
        row: dict[str, Any] = dict(
            target=label, bench=bench, goal=f"{'>=' if at_least else '<='} {target:g} {unit}".strip()
        )
        if not isinstance(value, int | float):
            rows.append({**row, "value": None, "met": False, "margin": "not measured"})
            continue
        met = value >= target if at_least else value <= target
        factor = value / target if target else None
        diff = abs(value - target)
        gap = f"{diff:.0f} {unit}".strip() if diff >= 100 else f"{diff:.3g} {unit}".strip()
        if met:
            margin = f"met, {abs(value - target) / target:.0%} headroom"
        else:
            margin = f"missed: {value / target:.2f}x the target ({gap} {'short' if at_least else 'over'})"
        rows.append(
            {
                **row,
                "value": value,
                "unit": unit,
                "met": met,
                "value_over_target": round(factor, 3) if factor else None,
                "margin": margin,
            }
        )
    return rows


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "B" and value >= 1e6:
        return f"{value / 1e6:.0f} MB"
    return f"{value:g} {unit}".strip() if isinstance(value, float) else f"{value} {unit}".strip()


QUICK_NOTE = " (--quick: small sizes, the numbers only show that the code runs)"


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Sluice benchmarks\n",
        f"{doc['started']}, {doc['wall_s']} s{QUICK_NOTE if doc['quick'] else ''},"
        f" broker {doc['broker']}, {doc['cpus']} CPUs. Per-bench results: bench/results/<bench>.json / .md.\n",
        *(
            [f"Re-run since with --only: {', '.join(f'{n} at {t}' for n, t in doc['rerun'].items())}.\n"]
            if doc.get("rerun")
            else []
        ),
        "| target | goal | measured | met | by how much | bench |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["targets"]:
        met = "yes" if r["met"] else "no"
        value = fmt(r["value"], r.get("unit", ""))
        lines.append(f"| {r['target']} | {r['goal']} | {value} | {met} | {r['margin']} | {r['bench']} |")
    lines += ["", "| bench | ran at | wall s | status |", "| --- | --- | --- | --- |"]
    for name, res in doc["benches"].items():
        ran = res.get("ran_at") or "in the run above"
        lines.append(f"| {name} | {ran} | {res.get('bench_wall_s')} | {res.get('error') or 'ok'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: verifies the benches, not the targets")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--port", type=int, default=29392, help="broker port when KAFKA_BOOTSTRAP is unset")
    parser.add_argument("--out", help="default bench/results/all.json (--quick: all-quick.json); .md beside it")
    parser.add_argument("--json", action="store_true", help="print the JSON object as the last stdout line")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    if unknown := [n for n in names if n not in BENCHES]:
        parser.error(f"unknown bench(es): {', '.join(unknown)}")
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    env = dict(os.environ)
    broker: LocalBroker | None = None
    with tempfile.TemporaryDirectory(prefix="sluice-bench-all-") as tmp:
        try:
            if not env.get("KAFKA_BOOTSTRAP") and any(BENCHES[n][3] for n in names):
                local = Settings(data_dir=tmp, kafka_port=args.port, kafka_controller_port=args.port + 1)
                (broker := LocalBroker(local)).start()
                env["KAFKA_BOOTSTRAP"] = local.bootstrap
            log_dir = RESULTS if not args.quick else Path(tmp)  # a quick run never overwrites full results
            benches = {name: run_bench(name, args.quick, env, log_dir) for name in names}
        finally:
            if broker is not None:
                broker.stop()
    out = Path(args.out or RESULTS / ("all-quick.json" if args.quick else "all.json"))
    doc: dict[str, Any] = dict(
        started=started, quick=args.quick, broker=env.get("KAFKA_BOOTSTRAP"), cpus=os.cpu_count()
    )
    wall = round(time.monotonic() - wall0, 1)
    if set(names) != set(BENCHES) and out.is_file():  # a partial run: the other benches' results stay
        kept = json.loads(out.read_text())
        if bool(kept.get("quick")) == args.quick:
            benches = {**kept.get("benches", {}), **benches}
            doc.update(  # the header stays the full run's; ``rerun`` says what was measured since
                {k: kept[k] for k in ("started", "broker", "cpus", "wall_s") if k in kept},
                rerun={**kept.get("rerun", {}), **{n: started for n in names}},
            )
    doc.update(targets=verdicts(benches), benches=benches)
    doc.setdefault("wall_s", wall)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    if args.json:
        print(json.dumps(doc))
    return 0 if all("error" not in b for b in benches.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
