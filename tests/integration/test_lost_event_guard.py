"""An input event lost inside a worker process is read again (streams/lost_event_guard.py).

The meter role's consumer is made to drop one fetched ``sluice.responses`` record (fault injection: a
sitecustomize on the worker's PYTHONPATH, tests/fixtures/drop_fetched). Faust's commit then stops before it.
When a later record of the partition arrives, the fetch order check (streams/ordered_fetch.py) sees the offset
it skipped and reads the partition again at once. When none does (the last record was dropped), the guard sees
the stuck head while the log goes on past it, and seeks back. Without either the dropped response is never
metered; with them every response gets its usage record.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from schemas.records import Response, Usage, dumps
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.kafka_util import read_topic
from tests.integration.procs import SluiceProcess, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAULT = Path(__file__).parents[1] / "fixtures" / "drop_fetched"
N = 12


def _start_meter(settings: Settings, tmp_path: Path, check_s: float, nth: int, level: str = "warning") -> SluiceProcess:
    env = {
        "SLUICE_LOG_LEVEL": level,
        "PYTHONPATH": os.pathsep.join(p for p in (str(FAULT), os.environ.get("PYTHONPATH", "")) if p),
        "SLUICE_FAULT_DROP_FETCHED": f".responses:{nth}",
        "SLUICE_LOST_EVENT_CHECK_S": str(check_s),
    }
    return start_worker(settings, tmp_path, "meter", name="meter", env=env)


async def _publish_responses(settings: Settings) -> set[str]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        responses = [
            Response(f"r{i}", "acme", f"s{i}", "ok", "Paris.", "local", "smollm2", Usage(7, 2)) for i in range(N)
        ]
        for r in responses:
            await producer.send_and_wait(settings.topic("responses"), dumps(r), key=r.id.encode())
    finally:
        await producer.stop()
    return {r.id for r in responses}


async def _metered(settings: Settings, timeout_s: float) -> set[str]:
    usage = await read_topic(settings, settings.topic("usage"), until=N, timeout_s=timeout_s, distinct_ids=True)
    return {u["id"] for u in usage}


async def _drop_one_and_meter(
    settings: Settings, tmp_path: Path, *, check_s: float, nth: int, level: str
) -> tuple[set[str], set[str], str]:
    """Publish N responses to a meter that drops the ``nth`` fetched one: (published ids, metered ids, its log)."""
    await create_topics(settings)
    meter = _start_meter(settings, tmp_path, check_s=check_s, nth=nth, level=level)
    try:
        ids = await _publish_responses(settings)
        metered = await _metered(settings, timeout_s=120)
    finally:
        meter.stop()
    return ids, metered, (tmp_path / "meter.log").read_text(errors="replace")


async def test_a_response_skipped_by_the_fetch_is_read_again_at_once_when_a_later_one_arrives(
    settings: Settings, tmp_path: Path
) -> None:
    # no guard: the fetch order check alone
    ids, metered, log = await _drop_one_and_meter(settings, tmp_path, check_s=0, nth=3, level="info")
    assert "fault injection: dropped" in log  # the fault happened...
    assert "is due" in log  # ...the offset it skipped was seen...
    assert metered == ids  # ...and nothing stayed unmetered


async def test_a_last_response_dropped_inside_the_meter_is_read_again_by_the_guard(
    settings: Settings, tmp_path: Path
) -> None:
    ids, metered, log = await _drop_one_and_meter(settings, tmp_path, check_s=1.0, nth=N, level="warning")
    assert "fault injection: dropped" in log  # the fault happened...
    assert "was lost in this process" in log  # ...the guard saw it...
    assert metered == ids  # ...and nothing stayed unmetered


async def test_without_the_guard_the_dropped_response_is_never_metered(settings: Settings, tmp_path: Path) -> None:
    """The fault is real: Faust alone does not read a dropped last record again (if an upgrade fixes that, this
    fails, and the guard may be retired)."""
    await create_topics(settings)
    meter = _start_meter(settings, tmp_path, check_s=0, nth=N)
    try:
        ids = await _publish_responses(settings)
        metered = await _metered(settings, timeout_s=60)
        await asyncio.sleep(5)  # several commit intervals after the rest were metered
        metered = await _metered(settings, timeout_s=5)
    finally:
        meter.stop()
    assert "fault injection: dropped" in (tmp_path / "meter.log").read_text(errors="replace")
    assert len(ids - metered) == 1
