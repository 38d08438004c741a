"""The operator dashboard: a static page whose script polls ``/api/summary`` every 2 s and draws SVG charts.

Plain HTML and JS shipped in the package (no CDN: Sluice often runs on machines without internet access). The
summary is what :class:`~streams.ingress.metrics.Telemetry` has folded in from ``sluice.usage``, lag and breakers.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from streams.ingress.metrics import Telemetry

STATIC = Path(__file__).resolve().parent / "static"
NO_STORE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application, telemetry: Telemetry) -> None:
    """``/`` (the page), ``/static/*`` (its script and styles) and ``/api/summary`` (its data)."""

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "dashboard.html", headers=NO_STORE)

    async def summary(_: web.Request) -> web.Response:
        body = orjson.dumps(telemetry.summary(), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type="application/json", headers=NO_STORE)

    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary)
    app.router.add_static("/static/", STATIC, append_version=False)
