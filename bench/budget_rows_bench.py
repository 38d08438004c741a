"""A hot tenant's budget row: changelog bytes and CPU per request, settled ids kept in the row vs spilled.

Every budgeted request rewrites its tenant's ledger row twice (reserve, settle), and a Faust table sends each
write whole to the changelog. This drives ``TenantBudgetStage.handle`` directly (no broker: the table is a dict
that counts the JSON bytes each write would send) with one tenant and ``--requests`` requests, twice in one run:
**row**, the settled ids all kept in the row (up to 10,000, the layout before streams/stages/spilled_ids.py),
and **spill**, the row keeping ``SLUICE_BUDGET_ROW_IDS`` ids and moving older ones to a row each.

    .venv/bin/python bench/budget_rows_bench.py [--requests 20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_output import md_table, ratio, write_results  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.stages.admit import AdmitStage  # noqa: E402
from streams.stages.guard import SessionGuard  # noqa: E402
from streams.stages.outgoing import Source  # noqa: E402
from streams.stages.tenant_budget import TenantBudgetStage  # noqa: E402
from streams.tiers import load_tiers  # noqa: E402


class CountingTable(dict[str, Any]):
    """A table stand-in that counts the bytes of every write (a Faust table sends each one to its changelog)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.written += len(key) + len(orjson.dumps(value))
        super().__setitem__(key, value)


async def one_way(settings: Settings, n: int, spill: bool) -> dict[str, Any]:
    frontier = load_tiers().frontier
    admit = AdmitStage(settings, guard=SessionGuard(settings, {}, lambda: frontier))
    rows, ids = CountingTable(), CountingTable()
    stage = TenantBudgetStage(settings, rows, lambda: admit.tenant_budgets, lambda: frontier, ids if spill else None)
    jobs, usages = [], []
    for i in range(n):
        rid = f"req-{i:08d}-0123456789abcdef"  # request ids are typically 20-36 characters
        raw = orjson.dumps({"id": rid, "tenant": "acme", "session": f"s{i}", "prompt": "hi", "max_tokens": 8})
        jobs += [o.value for o in await admit.handle(raw, Source("b.requests", 0, i)) if o.topic == "b.tenant"]
        usage = {"id": rid, "tenant": "acme", "cost_usd": 0.001}
        usages.append(orjson.dumps({"v": 1, "kind": "usage", "usage": usage}))
    source = Source("b.tenant", 0, 0)
    started = time.perf_counter()
    for job, usage in zip(jobs, usages, strict=True):
        await stage.handle(job, source)
        await stage.handle(usage, source)
    seconds = time.perf_counter() - started
    spent = rows["acme"]["spent"]
    return {
        "requests": n,
        "us_per_request": round(seconds / n * 1e6, 1),
        "changelog_kib_per_request": round((rows.written + ids.written) / n / 1024, 2),
        "row_kib_at_end": round(len(orjson.dumps(rows["acme"])) / 1024, 2),
        "spilled_rows": len(ids),
        "spent_usd": round(spent, 6),
    }


def render(r: dict[str, Any]) -> str:
    keys = ("us_per_request", "changelog_kib_per_request", "row_kib_at_end", "spilled_rows", "spent_usd")
    rows = [(k, r["row"][k], r["spill"][k]) for k in keys]
    lines = [f"# Budget rows: one tenant, {r['row']['requests']} requests (reserve + settle each)", ""]
    lines += md_table(("", "ids in the row", "ids spilled"), rows)
    lines += ["", f"spill/row: CPU {r['cpu_ratio']}, changelog bytes {r['bytes_ratio']}", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "budget_rows.json"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tenants = Path(tmp) / "tenants.yaml"
        tenants.write_text("tenants:\n  acme: {budget_hard_usd: 1000000}\n")
        settings = Settings.from_env(topic_prefix="b", tenants_file=str(tenants), breaker_enabled=False)
        row = asyncio.run(one_way(settings, args.requests, spill=False))
        spill = asyncio.run(one_way(settings, args.requests, spill=True))
    result = {
        "row": row,
        "spill": spill,
        "budget_row_ids": settings.budget_row_ids,
        "cpu_ratio": ratio(spill["us_per_request"], row["us_per_request"]),
        "bytes_ratio": ratio(spill["changelog_kib_per_request"], row["changelog_kib_per_request"]),
    }
    write_results(result, args.out, render, args.json)
    return 0 if row["spent_usd"] == spill["spent_usd"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
