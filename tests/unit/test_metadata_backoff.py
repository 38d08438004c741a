"""A failed metadata update paces its callers (streams/kafka_clients.py): with no broker reachable, aiokafka's
update fails at once, and the loops asking for it asked again at once (a worker at 95% CPU during a broker outage).
The client points at a closed loopback port, a real refusal: no broker is needed."""

from __future__ import annotations

import time

from aiokafka.client import AIOKafkaClient

from streams.kafka_clients import back_off_failed_metadata_updates


async def test_a_failed_metadata_update_waits_the_retry_backoff_before_returning() -> None:
    back_off_failed_metadata_updates()
    back_off_failed_metadata_updates()  # idempotent: one wrapper, one wait
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1", retry_backoff_ms=200)
    try:
        started = time.perf_counter()
        updates = 0
        while time.perf_counter() - started < 0.5:
            assert await client._metadata_update(client.cluster, set()) is False
            updates += 1
        assert updates <= 4  # 0.5 s at 200 ms each; unpaced, thousands
    finally:
        await client.close()
