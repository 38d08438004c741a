"""The broker stopped and restarted mid-run (its own broker, on ports and a data dir of its own — never the shared
one): every request gets exactly one final response at the client, none is lost, and each has exactly one usage
record equal to the response it got. Requests keep being published through the outage; a send the broker did not
acknowledge is retried by the client with the same id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import LocalBroker
from streams.client import SluiceClient
from streams.settings import Settings
from streams.topics import create_topics
from tests.fixtures.provider_sim import ProviderSim
from tests.integration.faults import (
    Clock,
    Load,
    Pipeline,
    cheap_requests,
    check_exactly_once,
    free_port_block,
    warm_up,
    worker_env,
)

# Bounded well under this on a quiet 2-core machine; the margin is for a loaded one (no timing is asserted).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

N = 3_000


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Settings, LocalBroker]]:
    base = free_port_block(2)
    settings = Settings(
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_heap_mb=384,
        topic_prefix="t" + uuid.uuid4().hex[:10],
        partitions=2,
        data_dir=str(tmp_path / "sluice"),
        reply_timeout_s=90.0,
    )
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings, broker
    finally:
        broker.stop()


async def test_requests_survive_a_broker_stop_and_restart(
    own_broker: tuple[Settings, LocalBroker], tmp_path: Path
) -> None:
    settings, broker = own_broker
    clock = Clock()
    await create_topics(settings)
    async with ProviderSim() as sim:
        layout = {"front": ("admit", "cache"), "back": ("cloud", "meter")}
        pipeline = Pipeline(settings, tmp_path, worker_env(tmp_path, sim), layout)
        pipeline.start_all()
        try:
            await warm_up(settings, pipeline)
            clock.mark("warm")
            async with SluiceClient(settings) as client:
                load = Load(client, cheap_requests(N))
                publishing = asyncio.create_task(load.publish(rate_per_s=300))
                await load.wait_answered(N // 5, 600, pipeline.tails)
                before = load.answered()
                clock.mark("stop")
                await asyncio.to_thread(broker.stop)  # graceful: SIGTERM, controlled shutdown
                await asyncio.sleep(2.0)
                await asyncio.to_thread(broker.start)
                clock.mark("restarted")
                await publishing
                delivered = await load.responses(600, pipeline.tails)
                clock.mark("answered")
                verdict = await check_exactly_once(settings, load, delivered)
                clock.mark("checked")
                exited = {n: p.proc.poll() for n, p in pipeline.procs.items() if p.proc.poll() is not None}
        finally:
            pipeline.stop_all()
    assert before < N, "the restart came after the run: nothing was tested"
    assert not exited, f"workers exited during the outage: {exited}\n{pipeline.tails()}"
    print(f"broker restarted after {before} answers; {verdict}; {clock}")
