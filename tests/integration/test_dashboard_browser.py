"""The dashboard in a real browser: headless Chromium loads ``/``, its script polls ``/api/summary`` and draws the
SVG charts; the dumped DOM must hold data points and the figures from the traffic.

The traffic is usage and breaker records published to the genuine broker's ``sluice.usage``/``sluice.control``
(what the meter and admit roles write), so the test needs no model and the expected figures are exact; the
path from real requests to those topics is covered by test_ingress.py."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from schemas.records import now_ms
from streams.ingress.keys import KeyMap
from streams.ingress.server import create_app
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.kafka_util import produce_raw
from tests.integration.test_ingress import serve

pytestmark = pytest.mark.integration

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def usage(i: int, tenant: str, cost: float, cache: str | None = None) -> dict[str, object]:
    return {
        "v": 1, "id": f"u{i}", "tenant": tenant, "session": f"s{i}", "tier": "cache" if cache else "cloud",
        "model": "gpt-4o", "prompt_tokens": 20, "completion_tokens": 10, "cost_usd": cost, "latency_ms": 300.0 + i,
        "cache": cache, "feature": None, "attempts": 0 if cache else 1, "baseline_cost_usd": 0.002,
        "status": "ok", "created_at": now_ms(),
    }  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
async def test_dashboard_renders_live_charts(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    records = [
        usage(1, "acme", 0.002),
        usage(2, "acme", 0.0, cache="exact"),
        usage(3, "acme", 0.0, cache="semantic"),
        usage(4, "beta", 0.002),
        usage(5, "beta", 0.0, cache="exact"),
    ]
    await produce_raw(settings, settings.topic("usage"), [(b"s", orjson.dumps(u)) for u in records])
    breaker = {"v": 1, "type": "breaker", "session": "agent-7", "tenant": "acme", "state": "open"}
    breaker |= {"reason": "repeat", "at_ms": now_ms(), "until_ms": now_ms() + 600_000}
    await produce_raw(settings, settings.topic("control"), [(b"agent-7", orjson.dumps(breaker))])

    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"sk-test": "acme"}))
    app = create_app(settings, KeyMap(keys), interval_s=0.5, usage_from="beginning")
    runner, base = await serve(app)
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                async with http.get(f"{base}/api/summary") as r:
                    summary = await r.json()
                if summary["requests"] == 5 and len(summary["series"]) >= 3 and summary["breakers_open"]:
                    break
                await asyncio.sleep(0.3)
        assert summary["requests"] == 5 and summary["cache_hit_rate"] == pytest.approx(0.6)
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=6000",
            "--dump-dom",
            f"{base}/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    finally:
        await runner.cleanup()
    dom = out.decode()
    assert 'data-loaded="1"' in dom, err.decode()[-2000:]

    def chart(name: str) -> str:
        found = re.search(rf'<svg id="{name}"[^>]*>.*?</svg>', dom, re.S)
        assert found, f"{name} missing"
        return found.group(0)

    bars = dict(re.findall(r'<rect[^>]*data-tenant="([^"]+)"[^>]*data-value="([^"]+)"', chart("chart-tenant-cost")))
    assert {k: float(v) for k, v in bars.items()} == {"acme": pytest.approx(0.002), "beta": pytest.approx(0.002)}
    for name in ("chart-tenant-series", "chart-savings", "chart-hitrate", "chart-lag"):
        svg = chart(name)
        assert "<polyline" in svg and int(re.search(r'data-points="(\d+)"', svg).group(1)) >= 3, name  # type: ignore[union-attr]
    savings = [float(v) for v in re.findall(r'<circle[^>]*data-value="([^"]+)"', chart("chart-savings"))]
    assert savings and savings[-1] == pytest.approx(5 * 0.002 - 0.004)
    hit_rates = [float(v) for v in re.findall(r'<circle[^>]*data-value="([^"]+)"', chart("chart-hitrate"))]
    assert hit_rates[-1] == pytest.approx(0.6)
    assert re.search(r'id="kpi-requests">5<', dom) and re.search(r'id="kpi-hitrate">60\.0%<', dom)
    assert "agent-7" in dom and re.search(r'id="kpi-breakers">1<', dom)
