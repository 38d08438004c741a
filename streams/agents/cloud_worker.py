"""Cloud worker agent: ``sluice.tier.cloud`` → provider fallback chain → ``sluice.results``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import faust

from schemas.records import Message
from streams.agents.emit import emit, emit_acked, source_of
from streams.app import raw_topic
from streams.cancels import CancelRegistry, CancelWatcher
from streams.providers import ChainFactory, read_chain_spec
from streams.settings import Settings
from streams.stages.cloud_tier import CloudTierStage
from streams.stages.streaming import StreamingCloudStage
from streams.tiers import DEFAULT_TIERS_PATH, PriceTable, TierConfigWatcher, UnknownModelError
from workers.cloud.fallback import FallbackChain
from workers.local.factory import build_pool
from workers.ports import Completion

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings) -> CloudTierStage:
    path = settings.tiers_file or DEFAULT_TIERS_PATH
    watcher = TierConfigWatcher(path)
    prices = PriceTable.load()
    pool = build_pool(settings)  # the chain's last resort; loaded on first use only

    async def local(messages: Sequence[Message], max_tokens: int) -> Completion:
        return await pool.generate(messages, max_tokens)

    factory = ChainFactory(local)

    def chain() -> FallbackChain:
        return factory.chain(read_chain_spec(path, watcher.current()))

    def price(model: str, prompt_tokens: int, completion_tokens: int) -> float:
        try:
            return prices.cost_usd(model, prompt_tokens, completion_tokens)
        except UnknownModelError:
            frontier = watcher.current().frontier
            log.warning("no price for model %r; charging the frontier tier's price", model)
            return frontier.cost_usd(prompt_tokens, completion_tokens)

    stage = CloudTierStage(settings, chain, price)
    cancels = CancelRegistry()
    streaming = StreamingCloudStage(stage, cancels)  # stream: true jobs relay the provider's events

    @app.task
    async def watch_cancels() -> None:
        await CancelWatcher(settings, cancels).run()  # sluice.cancel, every partition, no group

    @app.agent(
        raw_topic(app, settings.topic("tier.cloud")), name="cloud-worker", concurrency=settings.cloud_concurrency
    )
    async def cloud_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await streaming.handle(event.value, source_of(event), partial(emit_acked, app), partial(emit, app))

    return stage
