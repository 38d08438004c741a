"""The meter's acknowledgement pipeline: finishing steps run in submission order, only after their sends are
acknowledged, a full pipeline holds the agent, and a failed send reaches the agent instead of being dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.agents.ack_pipeline import AckPipeline


def _recorder(done: list[int], i: int) -> Any:
    async def finish() -> None:
        done.append(i)

    return finish


async def test_steps_wait_for_their_acknowledgements_and_run_in_order() -> None:
    loop = asyncio.get_running_loop()
    acks = [loop.create_future() for _ in range(3)]
    done: list[int] = []
    async with AckPipeline(8) as pipeline:
        for i, ack in enumerate(acks):
            await pipeline.submit([ack], _recorder(done, i))
        await asyncio.sleep(0.01)
        assert done == []  # nothing acknowledged yet
        acks[1].set_result(None)  # a later one first: it still waits for the earlier
        await asyncio.sleep(0.01)
        assert done == []
        acks[0].set_result(None)
        await asyncio.sleep(0.01)
        assert done == [0, 1]
        await pipeline.submit([], _recorder(done, 3))  # nothing sent (a duplicate): behind the pending one
        await asyncio.sleep(0.01)
        assert done == [0, 1]
        acks[2].set_result(None)
        await pipeline.drain()
        assert done == [0, 1, 2, 3]


async def test_a_full_pipeline_holds_the_agent_until_a_step_finishes() -> None:
    loop = asyncio.get_running_loop()
    first = loop.create_future()
    done: list[int] = []
    async with AckPipeline(1) as pipeline:
        await pipeline.submit([first], _recorder(done, 0))
        await asyncio.sleep(0.01)  # the finishing task holds step 0 (waiting for its ack); the queue is empty
        await pipeline.submit([loop.create_future()], _recorder(done, 1))  # fills the queue
        third = asyncio.ensure_future(pipeline.submit([], _recorder(done, 2)))
        await asyncio.sleep(0.01)
        assert not third.done()  # held
        first.set_result(None)
        await asyncio.wait_for(third, 1)
        assert done == [0]


async def test_a_failed_send_surfaces_in_the_agent_and_its_step_never_runs() -> None:
    loop = asyncio.get_running_loop()
    failed = loop.create_future()
    done: list[int] = []
    async with AckPipeline(1) as pipeline:
        await pipeline.submit([failed], _recorder(done, 0))
        await pipeline.submit([], _recorder(done, 1))
        failed.set_exception(ConnectionError("broker gone"))
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(pipeline.submit([], _recorder(done, 2)), 1)  # blocked on a full queue, woken
        with pytest.raises(ConnectionError):
            await pipeline.drain()
    assert done == []  # unfinished events stay unacked: Kafka delivers them again
