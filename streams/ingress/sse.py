"""``stream: true`` on the OpenAI-compatible ingress: a streamed Sluice reply as server-sent events.

Events are OpenAI's ``chat.completion.chunk`` objects: a role delta, one content delta per Sluice chunk, a
finish chunk (carrying Sluice's facts in ``sluice``), a usage chunk when ``stream_options.include_usage`` is
set (``choices: []``, the same usage the meter bills), then ``data: [DONE]``. A rejection or failure before
any text is an ordinary HTTP error, as for a non-streamed call. A client that disconnects (noticed within
``DISCONNECT_POLL_S`` even while no chunk arrives) makes the ingress publish a cancel on ``sluice.cancel``:
the worker stops generating and its final response, ``cancelled``, is metered for the tokens produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from schemas.records import Request, Response
from schemas.streaming import Chunk
from streams.ingress.openai_api import ApiError, rejection, sluice_headers

if TYPE_CHECKING:
    from streams.ingress.server import Ingress

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.25


class ChunkStream(Protocol):
    response: Response | None

    async def open(self) -> None: ...

    def __aiter__(self) -> ChunkStream: ...

    async def __anext__(self) -> Chunk: ...

    async def aclose(self) -> None: ...


class ClientGone(Exception):
    """The HTTP client closed the connection."""


def include_usage(body: Any) -> bool:
    options = body.get("stream_options") if isinstance(body, Mapping) else None
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _gone(http: web.Request) -> bool:
    transport = http.transport
    return transport is None or transport.is_closing()


async def _next(reply: ChunkStream, http: web.Request) -> Chunk | None:
    """The next chunk (None at the end), watching the HTTP connection while waiting."""
    task = asyncio.ensure_future(reply.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                try:
                    return task.result()
                except StopAsyncIteration:
                    return None
            if _gone(http):
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class _Events:
    def __init__(self, http: web.StreamResponse, request: Request, model: str) -> None:
        self.http = http
        self.id = f"chatcmpl-{request.id}"
        self.created = int(time.time())
        self.model = model

    async def send(self, choices: list[dict[str, Any]], **extra: Any) -> None:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        await self.http.write(b"data: " + orjson.dumps(body) + b"\n\n")

    async def delta(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        await self.send([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra)


async def stream_reply(
    ingress: Ingress, http: web.Request, request: Request, model: str, usage: bool, timeout: float
) -> web.StreamResponse:
    client: Any = ingress.client
    if not hasattr(client, "stream"):
        raise ApiError(400, "streaming is not available on this ingress", param="stream", code="unsupported")
    reply: ChunkStream = client.stream(request, timeout)
    out: web.StreamResponse | None = None
    try:
        await reply.open()
        try:
            first = await _next(reply, http)
        except TimeoutError:
            msg = f"no answer within {timeout:g} s"
            raise ApiError(504, msg, type_="timeout", code="timeout", headers={"X-Request-Id": request.id}) from None
        if first is None and reply.response is not None and reply.response.status != "ok":
            raise rejection(reply.response, ingress.settings.breaker_cooldown_s)
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Request-Id": request.id}
        )
        await out.prepare(http)
        events = _Events(out, request, model)
        await events.delta({"role": "assistant", "content": ""})
        chunk = first
        while chunk is not None:
            await events.delta({"content": chunk.text})
            try:
                chunk = await _next(reply, http)
            except TimeoutError:
                await events.send([], error={"message": f"no chunk within {timeout:g} s", "type": "timeout"})
                break
        final = reply.response
        if final is not None:
            await _finish(events, final, request, usage)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out
    except (ClientGone, ConnectionResetError) as exc:
        log.info("streaming client of %s went away (%s): cancelling", request.id, type(exc).__name__)
        await reply.aclose()  # publishes the cancel
        return out if out is not None else web.Response(status=499)
    finally:
        await reply.aclose()  # no-op once the reply is complete


async def _finish(events: _Events, final: Response, request: Request, usage: bool) -> None:
    if final.status not in ("ok", "cancelled"):
        error = {"message": f"the model failed: {final.reason}", "type": "server_error", "code": final.reason}
        await events.send([], error=error)
    saved = (final.route.get("cache") or {}).get("saved_usage") if final.tier == "cache" else None
    produced = int((saved or {}).get("completion_tokens") or final.usage.completion_tokens)
    finish = "length" if produced >= request.max_tokens else "stop"
    facts = {"tier": final.tier, "cost_usd": final.cost_usd, "status": final.status, **sluice_headers(final)}
    await events.delta({}, finish, sluice=facts)
    if usage:
        u = final.usage
        counts = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
        await events.send([], usage={**counts, "total_tokens": u.total_tokens})
