"""Meter role: ``sluice.responses`` → one ``sluice.usage`` record per request id, and ``sluice.costs``."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

import faust
from faust.streams import _current_event

from schemas.records import now_ms
from streams.agents.emit import emit, emit_acked, source_of
from streams.app import raw_topic
from streams.policy.token_count import count_tokens
from streams.settings import Settings
from streams.stages.meter import MeterStage
from streams.tiers import DEFAULT_TIERS_PATH, TierConfigWatcher


def make_current(events: Sequence[faust.EventT], index: int) -> None:
    """Make ``events[index]`` the current event of *this task*: Faust writes a table key to the changelog partition of
    the current event, and after ``take_events`` there is none. Only the context variable is set: the stream's
    ``current_event`` attribute belongs to the task that fills the take buffer (setting it loses events)."""
    _current_event.set(weakref.ref(events[index]))


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

    send = partial(emit_acked, app)

    @app.agent(raw_topic(app, settings.topic("responses")), name="meter")
    async def meter_agent(stream: faust.StreamT) -> None:
        if settings.meter_batch <= 1:
            async for event in stream.events():
                await stage.handle(event.value, source_of(event), send)
            return
        # Opt-in batches: one broker acknowledgement covers every usage record of a batch (MeterStage.handle_batch).
        async for events in stream.take_events(settings.meter_batch, within=settings.meter_batch_wait_s):
            batch = [(e.value, source_of(e)) for e in events]
            await stage.handle_batch(batch, send, partial(make_current, events))

    @app.timer(settings.costs_interval_s)
    async def publish_costs() -> None:
        await emit(app, stage.snapshot(now_ms()))

    return stage
