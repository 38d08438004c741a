"""Streamed replies for :class:`~streams.client.SluiceClient`: ``async for chunk in client.stream(request)``.

Chunks (``sluice.chunks``, key: request id, so one partition and in order) are yielded as they arrive; the
final response (``sluice.responses``) ends the stream and is kept in ``.response`` (usage, cost, status).
The two topics are read by one consumer, so the response may be read before the last chunks: whatever part
of the response's text was not yet yielded is yielded as one last chunk, so the chunks always join to the
final text. Repeated chunks (redelivery) are dropped by ``seq``. Leaving early (``aclose()``, ``break``
inside ``async with``) publishes a cancel, so the worker stops generating.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.records import Request, Response
from schemas.streaming import Chunk
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.client import SluiceClient


async def assign_with_chunks(
    consumer: AIOKafkaConsumer, settings: Settings, tps: list[TopicPartition]
) -> list[TopicPartition]:
    """Add every partition of ``sluice.chunks`` (when it exists) to a group-less consumer's assignment."""
    from streams.topics import partition_counts

    topic = settings.topic("chunks")
    count = (await partition_counts(settings, [topic])).get(topic, 0)
    chunk_tps = [TopicPartition(topic, p) for p in range(count)]
    if chunk_tps:
        consumer.assign([*tps, *chunk_tps])
    return [*tps, *chunk_tps]


class ReplyStream:
    """One streamed request: an async iterator of :class:`Chunk`, then ``.response``."""

    def __init__(self, client: SluiceClient, request: Request, timeout: float | None = None) -> None:
        self.client = client
        self.request = request if request.stream else replace(request, stream=True)
        self.timeout = timeout or client.settings.reply_timeout_s  # for the first chunk, and between chunks
        self.response: Response | None = None
        self.text = ""  # what was yielded so far
        self._future: asyncio.Future[Response] | None = None
        self._ready: deque[Chunk] = deque()
        self._held: dict[int, Chunk] = {}  # chunks that arrived ahead of a gap
        self._next_seq = 0
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def id(self) -> str:
        return self.request.id

    async def open(self) -> None:
        """Publish the request (``__anext__`` does it on first use)."""
        if self._future is None:
            self.client._streams[self.id] = self
            self._future = await self.client.send(self.request)
            self._future.add_done_callback(lambda _: self._wake.set())

    def add(self, chunk: Chunk) -> None:
        """A chunk read from Kafka (called by the client's reader)."""
        if chunk.seq < self._next_seq or self._closed:
            return  # a repeat (redelivery) or late
        self._held[chunk.seq] = chunk
        while self._next_seq in self._held:
            self._ready.append(self._held.pop(self._next_seq))
            self._next_seq += 1
        self._wake.set()

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._closed and not self._ready:
            raise StopAsyncIteration  # closed early (aclose) or already finished
        await self.open()
        assert self._future is not None
        while True:
            if self._ready:
                return self._yield(self._ready.popleft())
            if self._future.done():
                if self.response is None:
                    self.response = self._future.result()
                    rest = self._rest(self.response.text)
                    if rest:
                        return self._yield(
                            Chunk(self.id, self._next_seq, rest, self.request.tenant, self.request.session)
                        )
                self._finish()
                raise StopAsyncIteration
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.timeout)
            except TimeoutError:
                await self.aclose()
                raise

    def _yield(self, chunk: Chunk) -> Chunk:
        self.text += chunk.text
        self._next_seq = max(self._next_seq, chunk.seq + 1)
        return chunk

    def _rest(self, final: str) -> str:
        return final[len(self.text) :] if final.startswith(self.text) else ""

    def _finish(self) -> None:
        self._closed = True
        self.client._streams.pop(self.id, None)
        self.client._waiters.pop(self.id, None)

    async def aclose(self) -> None:
        """Stop listening; if the reply is not complete, ask the workers to stop generating it."""
        if self._closed:
            return
        self._finish()
        if self._future is not None and not self._future.done():
            self._future.cancel()
            await self.client.cancel(self.id)

    async def __aenter__(self) -> ReplyStream:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def print_stream(client: SluiceClient, request: Request, timeout: float | None, *, echo: bool = True) -> Response:
    """``sluice submit --stream``: write each chunk to stdout as it arrives; returns the final response."""
    import sys

    async with client.stream(request, timeout) as reply:
        async for chunk in reply:
            if echo:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
    assert reply.response is not None
    return reply.response
