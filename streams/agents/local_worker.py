"""Local worker agent: ``sluice.tier.local`` → local GGUF model → ``sluice.responses`` (+ reply_to)."""

from __future__ import annotations

from functools import partial

import faust

from streams.agents.emit import emit, emit_acked, source_of
from streams.app import raw_topic
from streams.cancels import CancelRegistry, CancelWatcher
from streams.settings import Settings
from streams.stages.local_tier import LocalTierStage
from streams.stages.streaming import StreamingLocalStage
from streams.tiers import DEFAULT_TIERS_PATH, TierConfigWatcher
from workers.local.factory import build_pool


def register(app: faust.App, settings: Settings) -> LocalTierStage:
    watcher = TierConfigWatcher(settings.tiers_file or DEFAULT_TIERS_PATH)
    stage = LocalTierStage(settings, build_pool(settings), lambda p, c: watcher.current().weak.cost_usd(p, c))
    cancels = CancelRegistry()
    streaming = StreamingLocalStage(stage, cancels)  # stream: true jobs send chunks while generating

    @app.task
    async def watch_cancels() -> None:
        await CancelWatcher(settings, cancels).run()  # sluice.cancel, every partition, no group

    @app.task
    async def load_model() -> None:
        await stage.pool.start()  # load weights at startup, in the pool's executor

    @app.agent(
        raw_topic(app, settings.topic("tier.local")),
        name="local-worker",
        concurrency=settings.local_instances,
    )
    async def local_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await streaming.handle(event.value, source_of(event), partial(emit_acked, app), partial(emit, app))

    @app.agent(raw_topic(app, settings.topic("tier.local.batch")), name="local-worker-batch")
    async def local_batch_agent(stream: faust.StreamT) -> None:
        # Batch jobs wait for a model instance behind every interactive one (see ModelPool).
        async for event in stream.events():
            await streaming.handle(event.value, source_of(event), partial(emit_acked, app), partial(emit, app))

    return stage
