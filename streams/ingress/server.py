"""OpenAI-compatible HTTP ingress: ``POST /v1/chat/completions`` and ``GET /v1/models`` over Kafka.

Existing OpenAI SDK code switches to Sluice by changing ``base_url``: the API key names the tenant, the request
becomes a ``sluice.requests`` record (published and awaited with :class:`SluiceClient`), and the reply comes
back as a ``chat.completion`` with Sluice's routing facts in an extra ``sluice`` field and ``X-Sluice-*`` headers.
The same app serves ``/metrics`` (Prometheus) and the dashboard (``/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from schemas.records import Request, Response
from streams.ingress import dashboard
from streams.ingress.keys import ApiKey, KeyMap
from streams.ingress.metrics import Feeds, Telemetry
from streams.ingress.openai_api import ApiError, build_request, completion_body, rejection, sluice_headers
from streams.ingress.sse import include_usage, stream_reply
from streams.settings import Settings
from streams.tiers import TierConfig, TierConfigWatcher, load_tiers

log = logging.getLogger(__name__)


class Submitter(Protocol):
    """What the ingress needs of a client (:class:`~streams.client.SluiceClient`, or a fake in tests)."""

    async def submit(self, request: Request, timeout: float | None = None) -> Response: ...


@dataclass
class Ingress:
    settings: Settings
    keys: KeyMap
    client: Submitter | None
    telemetry: Telemetry
    tiers: Callable[[], TierConfig]
    timeout_s: float | None = None
    feeds: Feeds | None = None

    def authenticate(self, request: web.Request) -> ApiKey:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("api-key", "")
        key = self.keys.lookup(token) if token else None
        if key is None:
            msg = "Incorrect API key provided." if token else "Missing API key: send 'Authorization: Bearer <key>'."
            raise ApiError(401, msg, code="invalid_api_key")
        return key

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        key = self.authenticate(request)
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        sluice_request, model = build_request(body, key, request.headers, self.tiers(), self.settings)
        assert self.client is not None, "the ingress has no Kafka client"
        timeout = self.timeout_s or self.settings.reply_timeout_s
        if sluice_request.stream:  # server-sent events (streams/ingress/sse.py)
            return await stream_reply(self, request, sluice_request, model, include_usage(body), timeout)
        try:
            response = await self.client.submit(sluice_request, timeout)
        except TimeoutError:
            msg = f"no answer within {timeout:g} s"
            raise ApiError(
                504, msg, type_="timeout", code="timeout", headers={"X-Request-Id": sluice_request.id}
            ) from None
        if response.status != "ok":
            until = self.telemetry.breaker_until_ms(response.session)
            wait = (until - time.time() * 1000) / 1000 if until else self.settings.breaker_cooldown_s
            raise rejection(response, wait)
        return web.json_response(completion_body(response, sluice_request, model), headers=sluice_headers(response))

    async def models(self, request: web.Request) -> web.Response:
        self.authenticate(request)
        data: list[dict[str, Any]] = [{"id": "auto", "object": "model", "created": 0, "owned_by": "sluice"}]
        for t in self.tiers().tiers:
            if t.kind == "cache":
                continue
            facts: dict[str, Any] = {"tier": t.name, "kind": t.kind, "model": t.model}
            facts |= {"input_usd_per_1m": t.input_per_1m, "output_usd_per_1m": t.output_per_1m}
            for ident in dict.fromkeys((t.name, t.model)):
                data.append({"id": ident, "object": "model", "created": 0, "owned_by": t.provider, "sluice": facts})
        return web.json_response({"object": "list", "data": data})

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.telemetry.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})


INGRESS = web.AppKey("sluice_ingress", Ingress)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """OpenAI-shaped errors for every failure, and the HTTP metrics."""
    started = time.monotonic()
    resource = request.match_info.route.resource
    name = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = ApiError(exc.status, exc.reason, code=str(exc.status)).response()
    except Exception as exc:
        log.exception("ingress handler %s failed", name)
        response = ApiError(500, f"internal error: {type(exc).__name__}", type_="server_error").response()
    telemetry = request.app[INGRESS].telemetry
    telemetry.http.labels(name, str(response.status)).inc()
    telemetry.http_latency.labels(name).observe(time.monotonic() - started)
    return response


def create_app(
    settings: Settings,
    keys: KeyMap,
    *,
    client: Submitter | None = None,
    feeds: bool = True,
    timeout_s: float | None = None,
    interval_s: float = 2.0,
    usage_from: str = "end",
) -> web.Application:
    """The ingress app. Without ``client`` it starts its own :class:`SluiceClient`; ``feeds=False`` skips the
    Kafka readers behind the metrics and dashboard (tests with a fake client)."""
    if settings.tiers_file:
        tiers = TierConfigWatcher(settings.tiers_file).current  # follows edits, as the router does
    else:
        shipped = load_tiers(None)

        def tiers() -> TierConfig:
            return shipped

    ingress = Ingress(settings, keys, client, Telemetry(), tiers, timeout_s)
    app = web.Application(middlewares=[_errors], client_max_size=settings.max_message_bytes + 65536)
    app[INGRESS] = ingress
    app.router.add_post("/v1/chat/completions", ingress.chat_completions)
    app.router.add_get("/v1/models", ingress.models)
    app.router.add_get("/metrics", ingress.metrics)
    app.router.add_get("/healthz", ingress.health)
    dashboard.add_routes(app, ingress.telemetry)

    async def lifecycle(_: web.Application) -> Any:
        from streams.client import SluiceClient

        own = SluiceClient(settings) if ingress.client is None else None
        if own is not None:
            await own.start()
            ingress.client = own
        if feeds:
            ingress.feeds = Feeds(settings, ingress.telemetry, interval_s=interval_s, usage_from=usage_from)
            await ingress.feeds.start()
        yield
        if ingress.feeds is not None:
            await ingress.feeds.close()
        if own is not None:
            await own.close()

    app.cleanup_ctx.append(lifecycle)
    return app
