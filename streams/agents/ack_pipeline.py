"""Finish each event once the broker has its output, without holding the agent for the round trip.

Why: a stage that must write state only after its output is on the broker (the meter records a request id in
its ledger only once the usage record is acknowledged, else a crash between the two could lose the usage) would
otherwise wait a produce round trip per event. aiokafka keeps one produce request in flight per broker, so under
load a round trip took 2-8 ms and the meter handled 125-500 responses/s; its backlog filled its stream buffer,
and in a one-group worker that held every other stage too.

Here the agent sends an event's output, hands the send futures and a finishing step to the pipeline, and takes
the next event. One task awaits the futures in arrival order, then runs the step (state write, then the manual
Faust ack). Faust commits a partition's offset only up to its first unacked event, and flushes the producer
before committing, so a crash anywhere redelivers every event whose step did not run: nothing is lost, and the
stage's own dedup (the ledger) absorbs what is delivered twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Finish = Callable[[], Awaitable[None]]


class AckPipeline:
    """At most ``limit`` events between "sent" and "finished"; a full pipeline makes :meth:`submit` wait."""

    def __init__(self, limit: int = 2048) -> None:
        self._queue: asyncio.Queue[tuple[Sequence[asyncio.Future[Any]], Finish]] = asyncio.Queue(limit)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AckPipeline:
        self._task = asyncio.ensure_future(self._finish_in_order())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop without finishing what is pending: those events stay unacked, so Kafka delivers them again."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, futures: Sequence[asyncio.Future[Any]], finish: Finish) -> None:
        """Queue ``finish`` to run after ``futures`` (and after every earlier submission). A failed send surfaces
        here, in the agent, as the exception it failed with: the agent crashes as it did awaiting the send."""
        task = self._running()
        if self._queue.full():
            await self._until(self._queue.put((futures, finish)), task)
        else:
            self._queue.put_nowait((futures, finish))

    async def drain(self) -> None:
        """Wait until everything submitted so far has finished."""
        task = self._running()
        await self._until(self._queue.join(), task)

    def _running(self) -> asyncio.Task[None]:
        task = self._task
        if task is None:
            raise RuntimeError("AckPipeline used outside 'async with'")
        if task.done():
            task.result()  # raises what the finishing task failed with
            raise RuntimeError("AckPipeline stopped")
        return task

    async def _until(self, step: Awaitable[None], task: asyncio.Task[None]) -> None:
        """Await ``step``, unless the finishing task fails first (then raise its error instead of waiting forever)."""
        waiter = asyncio.ensure_future(step)
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            self._running()
        waiter.result()

    async def _finish_in_order(self) -> None:
        queue = self._queue
        while True:
            futures, finish = await queue.get()
            for future in futures:
                await future
            await finish()
            queue.task_done()
