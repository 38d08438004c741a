"""aiokafka's consumer on incremental fetch sessions (streams/fetch_sessions.py) against a real broker: every
record arrives once and in order while fetches name only moved partitions; a seek back, an assignment change
a broker-forgotten session and an idle partition's fetch time are each handled."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.fetch_sessions import SessionClient, use_sessions
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PARTITIONS = 4


async def read(consumer: AIOKafkaConsumer, want: int, timeout_s: float = 30.0) -> dict[TopicPartition, list[bytes]]:
    got: dict[TopicPartition, list[bytes]] = {}

    async def loop() -> None:
        while sum(map(len, got.values())) < want:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got.setdefault(tp, []).extend(r.value for r in records)

    await asyncio.wait_for(loop(), timeout_s)
    return got


async def test_sessions_deliver_every_record_once_through_seeks_and_assignment_changes(settings: Settings) -> None:
    first, second = settings.topic("fs-a"), settings.topic("fs-b")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (first, second)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        client: SessionClient = use_sessions(consumer._fetcher)
        tps = [TopicPartition(t, p) for t in (first, second) for p in range(PARTITIONS)]
        consumer.assign(tps)

        async def publish(topic: str, partitions: range, n: int, tag: str) -> None:
            for i in range(n):  # in bursts, so the consumer fetches many times with few partitions moving
                await producer.send(topic, f"{tag}{i}".encode(), partition=partitions[i % len(partitions)])
                if i % 25 == 0:
                    await producer.flush()
                    await asyncio.sleep(0.01)
            await producer.flush()

        reader = asyncio.create_task(read(consumer, 400))
        await publish(first, range(PARTITIONS), 200, "a")
        await publish(second, range(1), 200, "b")  # one partition of the second topic only
        got = await reader
        assert sorted(got[TopicPartition(second, 0)]) == sorted(f"b{i}".encode() for i in range(200))
        for p in range(PARTITIONS):
            assert got[TopicPartition(first, p)] == [f"a{i}".encode() for i in range(p, 200, PARTITIONS)]
        session = client.sessions[next(iter(client.sessions))]
        assert session.session_id != 0 and session.supported
        assert client.fetches["incremental"] > client.fetches["full"] >= 1

        # An idle partition is in no answer of the session, but still counts as fetched (Faust's livelock check
        # reads aiokafka's per-partition fetch time and logs an error when it is old).
        idle = consumer._fetcher._subscriptions.subscription.assignment.state_value(TopicPartition(second, 3))
        before = idle.timestamp
        await asyncio.sleep(2.5)  # empty fetches return every fetch_max_wait_ms (500)
        assert idle.timestamp >= before + 1000

        # A seek back: the moved offset is named again, and the partition is read again from there.
        consumer.seek(TopicPartition(first, 1), 10)
        again = await read(consumer, 40)
        assert again == {TopicPartition(first, 1): [f"a{i}".encode() for i in range(1 + 4 * 10, 200, PARTITIONS)]}

        # Fewer partitions: the dropped ones are forgotten, and their new records are not delivered.
        consumer.assign([TopicPartition(second, 2)])
        reader = asyncio.create_task(read(consumer, 50))
        await publish(first, range(PARTITIONS), 40, "late")
        await publish(second, range(2, 3), 50, "c")
        got = await reader
        assert got == {TopicPartition(second, 2): [f"c{i}".encode() for i in range(50)]}

        # The broker forgets the session (as it does when its cache evicts it): the next fetch is refused, and
        # the one after starts a new session; nothing is lost.
        for s in client.sessions.values():
            s.session_id += 1  # a session id the broker does not know
        reader = asyncio.create_task(read(consumer, 30))
        await publish(second, range(2, 3), 30, "d")
        got = await reader
        assert got == {TopicPartition(second, 2): [f"d{i}".encode() for i in range(30)]}
        assert all(s.session_id != 0 for s in client.sessions.values())
    finally:
        await consumer.stop()
        await producer.stop()
