"""A topic send finds the app's started producer without a task and a turn of the event loop (Faust's
``maybe_start_producer`` is a mode ``@stampede``: one task per call); an unstarted producer still goes Faust's
way. Real Faust objects, no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.app import create_app, raw_topic
from streams.settings import Settings


async def _turns_of_the_loop_while(coro: object) -> tuple[object, bool]:
    turned = [False]
    asyncio.get_running_loop().call_soon(lambda: turned.__setitem__(0, True))
    result = await coro  # type: ignore[misc]
    return result, turned[0]


async def test_a_started_producer_is_returned_without_a_turn_of_the_loop(tmp_path: Path) -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0), "meter")
    topic = raw_topic(app, "x.responses")
    producer = app.producer
    starts: list[int] = []

    async def start() -> None:  # stands in for connecting to a broker
        starts.append(1)
        producer._started.set()

    producer.start = start  # type: ignore[method-assign]
    got, turned = await _turns_of_the_loop_while(topic._get_producer())
    assert got is producer and starts == [1] and turned  # not started: Faust's way (a task), which starts it

    for _ in range(3):
        got, turned = await _turns_of_the_loop_while(topic._get_producer())
        assert got is producer and not turned  # started: returned at once
    assert starts == [1]
