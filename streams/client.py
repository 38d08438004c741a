"""Python client: publish requests to ``sluice.requests`` and await their responses.

The client reads ``sluice.responses`` (key: request id) from the end, starting before it publishes so no
reply can slip past; answers for ids it did not send are ignored. Delivery is at-least-once (a worker or broker
restart may publish a response twice), so the client delivers exactly one final response per id: the first one
in the partition's order, which is also the one the meter bills (it keeps the first per id too); later copies
are dropped by id and counted in ``duplicates_suppressed``. ``SyncClient`` wraps it for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.parse import InvalidMessage, parse_chunk, parse_response
from schemas.records import Message, Request, Response, dumps, new_id
from streams.cancels import publish_cancel
from streams.kafka_clients import assign_all, back_off_failed_metadata_updates, stop_consumer
from streams.settings import Settings
from streams.streaming_client import ReplyStream, assign_with_chunks

ANSWERED_IDS_KEPT = 200_000  # ids remembered for dedup; a redelivered copy arrives within a restart, not days


class SluiceClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests_topic = settings.topic("requests")
        self.responses_topic = settings.topic("responses")
        self.chunks_topic = settings.topic("chunks")
        self._streams: dict[str, ReplyStream] = {}  # streamed requests awaiting chunks
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._waiters: dict[str, asyncio.Future[Response]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._answered: OrderedDict[str, None] = OrderedDict()  # ids delivered, oldest first (bounded)
        self.delivered = 0
        self.duplicates_suppressed = 0

    async def start(self) -> None:
        back_off_failed_metadata_updates()  # a broker outage must not spin the client's loops
        opts = self.settings.kafka_client_options()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.settings.producer_linger_s * 1000,
            **opts,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, group_id=None, **opts
        )
        await self._producer.start()
        await self._consumer.start()
        tps = await assign_all(self._consumer, self.settings, self.responses_topic)
        tps = await assign_with_chunks(self._consumer, self.settings, tps)  # streamed replies' chunks
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is published
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> SluiceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.topic == self.chunks_topic:
                        self._deliver_chunk(record.value)
                    else:
                        self._deliver(record.value)

    def _deliver_chunk(self, raw: bytes | None) -> None:
        try:
            chunk = parse_chunk(raw or b"")
        except InvalidMessage:
            return
        stream = self._streams.get(chunk.id)
        if stream is not None:
            stream.add(chunk)

    def stream(self, request: Request, timeout: float | None = None) -> ReplyStream:
        """``async for chunk in client.stream(request)``: the reply's text as it is generated, then the final
        response in ``.response`` (see streams/streaming_client.py). ``request.stream`` is set for you."""
        return ReplyStream(self, request, timeout)

    async def cancel(self, request_id: str, reason: str = "client_disconnected") -> None:
        """Ask every worker to stop generating ``request_id`` (``sluice.cancel``)."""
        assert self._producer is not None, "call start() first"
        await publish_cancel(self._producer, self.settings, request_id, reason)

    def _deliver(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            response = parse_response(raw)
        except InvalidMessage:
            return
        if response.id in self._answered:
            self.duplicates_suppressed += 1  # a redelivered copy: the first response was the final one
            return
        waiter = self._waiters.pop(response.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
            self._remember(response.id)

    def _remember(self, request_id: str) -> None:
        self.delivered += 1
        self._answered[request_id] = None
        if len(self._answered) > ANSWERED_IDS_KEPT:
            self._answered.popitem(last=False)

    async def send(self, request: Request) -> asyncio.Future[Response]:
        """Publish ``request``; the returned future resolves with its response."""
        assert self._producer is not None, "call start() first"
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request.id] = future
        self._answered.pop(request.id, None)  # sent again on purpose: its next response is wanted
        await self._producer.send_and_wait(self.requests_topic, key=request.session.encode(), value=dumps(request))
        return future

    async def expect(self, request_id: str) -> asyncio.Future[Response]:
        """Await the response for an id published by other means (e.g. :meth:`publish_raw`)."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        self._answered.pop(request_id, None)
        return future

    async def submit(self, request: Request, timeout: float | None = None) -> Response:
        future = await self.send(request)
        try:
            return await asyncio.wait_for(future, timeout or self.settings.reply_timeout_s)
        finally:
            self._waiters.pop(request.id, None)

    async def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Publish arbitrary bytes (tests and tooling that exercise the dead-letter path)."""
        assert self._producer is not None, "call start() first"
        await self._producer.send_and_wait(self.requests_topic, key=key, value=value)


def make_request(
    prompt: str | None = None,
    *,
    tenant: str,
    session: str,
    messages: list[dict[str, str]] | None = None,
    max_tokens: int = 128,
    priority: str = "interactive",
    metadata: dict[str, Any] | None = None,
    request_id: str | None = None,
    reply_to: str | None = None,
    stream: bool = False,
) -> Request:
    return Request(
        id=request_id or new_id(),
        tenant=tenant,
        session=session,
        prompt=prompt if messages is None else None,
        messages=tuple(Message(m["role"], m["content"]) for m in messages or ()),
        max_tokens=max_tokens,
        priority=priority,
        metadata=metadata or {},
        reply_to=reply_to,
        stream=stream,
    )


class SyncClient:
    """Blocking wrapper for scripts: ``with SyncClient(settings) as c: c.submit(req)``."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = SluiceClient(settings)

    def __enter__(self) -> SyncClient:
        self._loop.run_until_complete(self._client.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def submit(self, request: Request, timeout: float | None = None) -> Response:
        return self._loop.run_until_complete(self._client.submit(request, timeout))
