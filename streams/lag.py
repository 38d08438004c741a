"""Consumer lag: how many messages a role's consumer group has not yet processed, per partition.

Used by the router for spill-over (the local pool's backlog) and by operators' views. Reads committed
offsets (admin API) and end offsets (a group-less consumer); both are cheap metadata calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_clients import stop_consumer
from streams.settings import Settings
from streams.topics import partition_counts

log = logging.getLogger(__name__)


@dataclass
class GroupLag:
    group: str
    topic: str
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> lag

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


class LagReader:
    """Keeps one admin client and one consumer open; ``read`` is safe to call every second."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, int] = {}

    async def start(self) -> None:
        opts = self.settings.kafka_client_options()
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap, **opts)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None, **opts)
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        if self._admin is not None:
            await self._admin.close()

    async def read(self, group: str, topic: str) -> GroupLag:
        if self._admin is None or self._consumer is None:
            await self.start()
        assert self._admin is not None and self._consumer is not None
        if topic not in self._partitions:
            self._partitions[topic] = (await partition_counts(self.settings, [topic])).get(topic, 0)
        tps = [TopicPartition(topic, p) for p in range(self._partitions[topic])]
        ends = await self._consumer.end_offsets(tps)
        committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        lag = GroupLag(group, topic)
        for tp in tps:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            lag.partitions[tp.partition] = max(0, ends.get(tp, 0) - position)
        return lag


class BacklogMonitor:
    """The local pool's backlog, refreshed by a timer; the router reads ``backlog`` synchronously."""

    def __init__(self, settings: Settings, role: str = "local", topic: str = "tier.local") -> None:
        self.reader = LagReader(settings)
        self.group = settings.group(role)
        self.topic = settings.topic(topic)
        self.backlog = 0

    async def refresh(self) -> None:
        try:
            self.backlog = (await self.reader.read(self.group, self.topic)).total
        except Exception as exc:  # a failed read keeps the last value; routing must not stop
            log.debug("lag read failed: %s", exc)
