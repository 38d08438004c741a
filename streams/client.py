"""Python client: publish requests to ``sluice.requests`` and await their responses.

The client reads ``sluice.responses`` (key: request id) from the end, starting before it publishes so no
reply can slip past; answers for ids it did not send, and repeats of ids already answered (redelivery),
are ignored. ``SyncClient`` wraps it for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.parse import InvalidMessage, parse_response
from schemas.records import Message, Request, Response, dumps, new_id
from streams.kafka_clients import assign_all, stop_consumer
from streams.settings import Settings


class SluiceClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests_topic = settings.topic("requests")
        self.responses_topic = settings.topic("responses")
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._waiters: dict[str, asyncio.Future[Response]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        opts = self.settings.kafka_client_options()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=1, **opts
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, group_id=None, **opts
        )
        await self._producer.start()
        await self._consumer.start()
        tps = await assign_all(self._consumer, self.settings, self.responses_topic)
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
                    self._deliver(record.value)

    def _deliver(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            response = parse_response(raw)
        except InvalidMessage:
            return
        waiter = self._waiters.pop(response.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    async def send(self, request: Request) -> asyncio.Future[Response]:
        """Publish ``request``; the returned future resolves with its response."""
        assert self._producer is not None, "call start() first"
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request.id] = future
        await self._producer.send_and_wait(self.requests_topic, key=request.session.encode(), value=dumps(request))
        return future

    async def expect(self, request_id: str) -> asyncio.Future[Response]:
        """Await the response for an id published by other means (e.g. :meth:`publish_raw`)."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
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
