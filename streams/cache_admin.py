"""``sluice cache purge``: a purge command published to every partition of ``sluice.lookup``.

Going through the log (rather than reaching into a running process) lets every cache process, whichever
partitions it owns, drop the tenant's entries, and leaves a record of who purged what in the topic.
"""

from __future__ import annotations

import re

from aiokafka import AIOKafkaProducer

from schemas.records import CachePurge, dumps, new_id, now_ms
from streams.settings import Settings
from streams.topics import partition_counts

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use a number with s, m, h, d or w (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


async def request_purge(settings: Settings, tenant: str, older_than_s: float | None = None) -> tuple[CachePurge, int]:
    """Publish the command on every lookup partition; returns it and the number of partitions reached."""
    cutoff = None if older_than_s is None else now_ms() - int(older_than_s * 1000)
    command = CachePurge(id=new_id(), tenant=tenant, older_than_ms=cutoff)
    topic = settings.topic("lookup")
    count = (await partition_counts(settings, [topic])).get(topic, 0)
    if not count:
        raise LookupError(f"topic {topic} does not exist: run `sluice topics create`")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", **settings.kafka_client_options())
    await producer.start()
    try:
        for partition in range(count):
            await producer.send_and_wait(topic, dumps(command), key=tenant.encode(), partition=partition)
    finally:
        await producer.stop()
    return command, count
