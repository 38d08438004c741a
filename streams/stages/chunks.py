"""Chunk records of streamed replies: built here so workers and cache hits stream the same way.

A streamed request's text goes to ``sluice.chunks`` (key: request id) and, when it named one, to its
``reply_to`` topic; the final response (usage, cost) follows on ``sluice.responses`` as for any request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas.records import Request, dumps
from schemas.streaming import Chunk
from streams.stages.outgoing import Outgoing

Send = Callable[[list[Outgoing]], Awaitable[None]]
CACHED_CHUNK_CHARS = 200  # a cached answer is streamed in pieces of about this size, cut at whitespace


def chunk_messages(
    request_id: str, tenant: str, session: str, reply_to: str | None, seq: int, text: str, topic: str
) -> list[Outgoing]:
    value = dumps(Chunk(id=request_id, seq=seq, text=text, tenant=tenant, session=session).to_dict())
    key = request_id.encode()
    out = [Outgoing(topic, key, value)]
    if reply_to and reply_to != topic:
        out.append(Outgoing(reply_to, key, value))
    return out


def split_text(text: str, size: int = CACHED_CHUNK_CHARS) -> list[str]:
    """Pieces of about ``size`` characters, cut after whitespace, that join back to ``text`` exactly."""
    pieces: list[str] = []
    while len(text) > size:
        cut = text.rfind(" ", 0, size) + 1 or size
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


def cached_chunks(who: dict[str, object], text: str, topic: str) -> list[Outgoing]:
    """The chunks that stream an already known answer (cache hit, coalesced waiter) to ``who``."""
    reply_to = who.get("reply_to")
    out: list[Outgoing] = []
    for seq, piece in enumerate(split_text(text)):
        out += chunk_messages(
            str(who["id"]),
            str(who.get("tenant") or ""),
            str(who.get("session") or ""),
            reply_to if isinstance(reply_to, str) else None,
            seq,
            piece,
            topic,
        )
    return out


class ChunkWriter:
    """Sends one request's text as it is generated, numbering the chunks from 0."""

    def __init__(self, request: Request, topic: str, send: Send) -> None:
        self.request = request
        self.topic = topic
        self._send = send
        self.seq = 0
        self.chars = 0

    async def __call__(self, text: str) -> None:
        if not text:
            return
        r = self.request
        messages = chunk_messages(r.id, r.tenant, r.session, r.reply_to, self.seq, text, self.topic)
        self.seq += 1
        self.chars += len(text)
        await self._send(messages)
