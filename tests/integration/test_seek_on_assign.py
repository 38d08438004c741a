"""Where a worker's consumer starts reading each assigned partition (streams/faust_patches.py's seek): at the
group's committed offset, 0 included; an input partition with no commit at the log's start (not offset 0, which
retention may have deleted); a table changelog, which Faust positions itself, is left alone."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from streams import faust_patches
from streams.kafka_clients import stop_consumer
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_partitions_start_at_their_commit_or_the_log_start(settings: Settings) -> None:
    source, changelog = settings.topic("requests"), f"{settings.topic_prefix}-admit-sessions-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 4, 1) for t in (source, changelog)])
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            for p in range(4):
                for i in range(10):
                    await producer.send_and_wait(source, b"x%d" % i, partition=p)
        finally:
            await producer.stop()
        # Partition 1 has lost its first four records to retention (as delete-records does).
        await admin.delete_records({TopicPartition(source, 1): RecordsToDelete(4)})
    finally:
        await admin.close()

    group = f"{settings.topic_prefix}-seek"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (source, changelog) for p in range(4)]
        consumer.assign(tps)
        await consumer.commit({TopicPartition(source, 0): 7, TopicPartition(source, 3): 0})
        sought = await faust_patches._seek_every_partition(consumer, lambda topic: topic == source)
        # Partition 3 committed at 0: a commit like any other. 1 and 2 have none: the log's start.
        assert {tp.partition: o for tp, o in sought.items() if tp.topic == source} == {0: 7, 1: 4, 2: 0, 3: 0}
        assert all(sought[TopicPartition(changelog, p)] is None for p in range(4))
        for p, expected in {0: 7, 1: 4, 2: 0, 3: 0}.items():
            assert await consumer.position(TopicPartition(source, p)) == expected
        # Fetching really starts there: the first record read from each source partition is at that offset.
        consumer.pause(*[TopicPartition(changelog, p) for p in range(4)])
        first: dict[int, int] = {}
        while len(first) < 4:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                first.setdefault(tp.partition, records[0].offset)
        assert first == {0: 7, 1: 4, 2: 0, 3: 0}
    finally:
        await stop_consumer(consumer)
