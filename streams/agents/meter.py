"""Meter role: ``sluice.responses`` → one ``sluice.usage`` record per request id, and ``sluice.costs``."""

from __future__ import annotations

import asyncio
import weakref
from itertools import islice
from typing import Any

import faust
from faust.streams import _current_event

from schemas.records import now_ms
from streams.agents.ack_pipeline import AckPipeline
from streams.agents.emit import emit, emit_unacked, source_of
from streams.app import raw_topic
from streams.policy.token_count import count_tokens
from streams.settings import Settings
from streams.stages.meter import Billing, MeterStage
from streams.tiers import DEFAULT_TIERS_PATH, TierConfigWatcher

IN_FLIGHT = 2048  # responses billed and awaiting the broker's acknowledgement before the agent waits
# A snapshot goes out in small chunks spread over most of the interval: a chunk's sends run on the event loop,
# and its bytes share the producer's one in-flight request per broker with the replies (see publish_costs).
COSTS_CHUNK = 32
COSTS_SPREAD = 0.8  # share of the interval a snapshot is spread over


def register(app: faust.App, settings: Settings) -> MeterStage:
    watcher = TierConfigWatcher(settings.tiers_file or DEFAULT_TIERS_PATH)
    stage: MeterStage | None = None

    async def rebuild() -> None:
        if stage is not None:
            stage.rebuild()  # the ledger came back from its changelog: recompute totals from it

    # Both tables are restored before either's on_recover runs (Faust calls them once recovery is complete).
    ledger: Any = app.Table("ledger", default=None, partitions=settings.partitions, on_recover=rebuild)
    rollups: Any = app.Table("rollup", default=None, partitions=settings.partitions)
    stage = MeterStage(settings, ledger, lambda: watcher.current().frontier, count_tokens, rollups)

    @app.agent(raw_topic(app, settings.topic("responses")), name="meter")
    async def meter_agent(stream: faust.StreamT) -> None:
        # Manual acks: a response is acked (its offset may be committed) only once its usage record is on the
        # broker and its id is in the ledger; the agent does not wait for that (streams/agents/ack_pipeline.py).
        manual = stream.noack()
        try:
            async with AckPipeline(IN_FLIGHT) as pipeline:
                async for event in manual.events():
                    billing = stage.prepare([(event.value, source_of(event))])
                    futures = await emit_unacked(app, billing.out)
                    await pipeline.submit(futures, _finisher(manual, event, billing))
        finally:
            stage.forget_pending()

    def _finisher(manual: faust.StreamT, event: faust.EventT, billing: Billing) -> Any:
        async def finish() -> None:
            # The ledger write goes to the changelog partition of the current event: make it this one (the
            # pipeline's task has none of its own).
            _current_event.set(weakref.ref(event))
            stage.record(billing)
            await manual.ack(event)

        return finish

    @app.timer(settings.costs_interval_s)
    async def publish_costs() -> None:
        # With a session per request a snapshot holds thousands of totals. Sent at once (0.13 s of CPU for 10,000
        # sessions, plus the sends), it delayed every answer in that second by 0.2-0.4 s (bench/pipeline_bench.py
        # p99 per second). In chunks of 256 over half the interval, each chunk (~110 kB) still showed in the
        # answers' p99 at 250-500/s; in chunks of 32 over most of it, it is a steady few per cent.
        chunks = max(1, stage.changed_totals() // COSTS_CHUNK)
        gap_s = settings.costs_interval_s * COSTS_SPREAD / chunks
        records = stage.snapshot_records(now_ms())
        while chunk := list(islice(records, COSTS_CHUNK)):
            await emit(app, chunk)
            await asyncio.sleep(gap_s)

    return stage
