"""Cancel commands for streamed replies: ``sluice.cancel`` (key: request id), read whole by every worker.

The ingress (or a client) publishes one when a streamed consumer goes away. Each worker process reads every
partition without a consumer group, so whichever process is generating the request sees it; the generating
thread polls its flag between tokens and stops. Ids are remembered for a while, so a job that starts after
its cancel arrived stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.parse import InvalidMessage, parse_cancel
from schemas.records import dumps
from schemas.streaming import Cancel
from streams.kafka_clients import assign_all, stop_consumer
from streams.settings import Settings

log = logging.getLogger(__name__)


class CancelRegistry:
    """Cancel flags of the requests this process is generating (``threading.Event``: read on model threads)."""

    def __init__(self, remember_s: float = 600.0, max_remembered: int = 100_000) -> None:
        self.remember_s = remember_s
        self.max_remembered = max_remembered
        self._active: dict[str, threading.Event] = {}
        self._recent: OrderedDict[str, float] = OrderedDict()  # cancelled ids -> monotonic time
        self.cancelled = 0

    def watch(self, request_id: str) -> threading.Event:
        flag = self._active.get(request_id) or threading.Event()
        seen = self._recent.get(request_id)
        if seen is not None and time.monotonic() - seen <= self.remember_s:
            flag.set()
        self._active[request_id] = flag
        return flag

    def done(self, request_id: str) -> None:
        self._active.pop(request_id, None)

    def cancel(self, request_id: str) -> bool:
        """Set the request's flag; True when it is being generated here."""
        self._recent[request_id] = time.monotonic()
        self._recent.move_to_end(request_id)
        while len(self._recent) > self.max_remembered:
            self._recent.popitem(last=False)
        flag = self._active.get(request_id)
        if flag is None:
            return False
        flag.set()
        self.cancelled += 1
        return True


class CancelWatcher:
    """Reads all of ``sluice.cancel`` from the end into a registry (poll interval bounds the notice time)."""

    def __init__(self, settings: Settings, registry: CancelRegistry, poll_ms: int = 100) -> None:
        self.settings = settings
        self.registry = registry
        self.poll_ms = poll_ms
        self.ready = asyncio.Event()

    async def run(self) -> None:
        topic = self.settings.topic("cancel")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            **self.settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            try:
                tps = await assign_all(consumer, self.settings, topic)
            except LookupError:
                log.warning("%s does not exist: streamed replies cannot be cancelled", topic)
                return
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=self.poll_ms)
                for records in batches.values():
                    for record in records:
                        self._apply(record.value)
        finally:
            await stop_consumer(consumer)

    def _apply(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            command = parse_cancel(raw)
        except InvalidMessage:
            return
        if self.registry.cancel(command.id):
            log.info("cancelling generation of %s (%s)", command.id, command.reason)


async def publish_cancel(
    producer: AIOKafkaProducer, settings: Settings, request_id: str, reason: str = "client_disconnected"
) -> None:
    """Tell every worker to stop generating ``request_id``."""
    value = dumps(Cancel(id=request_id, reason=reason).to_dict())
    try:
        await producer.send_and_wait(settings.topic("cancel"), key=request_id.encode(), value=value)
    except Exception as exc:  # best effort: a lost cancel costs the tokens of one reply, nothing else
        log.warning("cannot publish the cancel of %s: %s", request_id, exc)
