"""Cache role: the lookup agent (``sluice.lookup``) and the complete agent (``sluice.results``).

Both topics are keyed by dedup key with the same partition count, so Faust assigns partition *p* of both to
the same process, together with partition *p* of the ``exact`` and ``inflight`` tables' changelogs: the
process that claims a key is the one that completes it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import faust
from faust.types import TP

from streams.agents.emit import emit, emit_acked, source_of
from streams.app import raw_topic
from streams.lag import BacklogMonitor
from streams.settings import Settings
from streams.stages.cache_setup import build_cache_parts
from streams.stages.cache_state import CacheState
from streams.stages.complete import CompleteStage
from streams.stages.lookup import LookupStage, partition_for
from streams.stages.routing import build_router


def exact_owner(app: faust.App, table: Any, partitions: int) -> Callable[[str], bool]:
    """dedup key -> this app holds the key's partition of ``table`` as an active, recovered partition.

    Faust keeps standby partitions in the same store and fills a newly assigned one during recovery, so the
    table's contents alone prove nothing; the recovery service's set of active changelog partitions, outside a
    rebalance, does."""
    recovery = app.tables.recovery
    changelog = table.changelog_topic.get_topic_name()
    tps = [TP(changelog, p) for p in range(partitions)]

    def owns(key: str) -> bool:
        if app.rebalancing or app.in_recovery:
            return False
        return tps[partition_for(key, partitions)] in recovery.active_tps

    return owns


def register(app: faust.App, settings: Settings) -> LookupStage:
    tables: dict[str, Any] = {
        name: app.Table(name, default=None, partitions=settings.partitions) for name in ("exact", "inflight")
    }
    state = CacheState(exact=tables["exact"], inflight=tables["inflight"])
    parts = build_cache_parts(settings)
    backlog = BacklogMonitor(settings)
    router = build_router(settings, lambda: backlog.backlog)
    lookup = LookupStage(settings, state, parts.policy, parts.embedder, parts.store, parts.verify, router)
    complete = CompleteStage(settings, state, parts.policy, parts.embedder, parts.store)

    @app.agent(raw_topic(app, settings.topic("lookup")), name="lookup", concurrency=settings.lookup_concurrency)
    async def lookup_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await emit(app, await lookup.handle(event.value, source_of(event)))

    @app.agent(raw_topic(app, settings.topic("results")), name="complete")
    async def complete_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await complete.handle(event.value, source_of(event), partial(emit_acked, app))

    @app.timer(1.0)
    async def refresh_backlog() -> None:
        await backlog.refresh()  # the local pool's consumer lag, for spill-over

    @app.timer(60.0)
    async def maintain_store() -> None:
        await complete.maintain()  # build the vector index once enough new entries arrived

    return lookup
