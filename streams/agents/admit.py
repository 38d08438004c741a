"""Admit agent: ``sluice.requests`` → tier topics / dead-letter / rejections."""

from __future__ import annotations

import time
from typing import Any

import faust

from streams.agents.emit import emit, source_of
from streams.app import raw_topic
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.guard import SessionGuard
from streams.stages.tenant_budget import TenantBudgetStage
from streams.tiers import DEFAULT_TIERS_PATH, TierConfigWatcher
from streams.topics import list_topics


class TopicDirectory:
    """Which topics exist, refreshed on a miss at most once a second (reply_to validation)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._known: set[str] = set()
        self._refreshed = 0.0

    async def exists(self, name: str) -> bool:
        if name in self._known:
            return True
        if time.monotonic() - self._refreshed >= 1.0:
            self._known = await list_topics(self.settings)
            self._refreshed = time.monotonic()
        return name in self._known


def register(app: faust.App, settings: Settings) -> AdmitStage:
    # Breaker and budget state per session: requests and usage are both keyed by session, so the partition
    # owner is the single writer (see streams/stages/guard.py).
    # Settled request ids the budget rows no longer hold (streams/stages/spilled_ids.py): written in the same
    # partition's events as their rows, so they are co-partitioned with them.
    sessions: Any = app.Table("sessions", default=None, partitions=settings.partitions)
    session_ids: Any = app.Table("session-settled", default=None, partitions=settings.partitions)
    watcher = TierConfigWatcher(settings.tiers_file or DEFAULT_TIERS_PATH)
    guard = SessionGuard(settings, sessions, lambda: watcher.current().priciest, session_ids)
    stage = AdmitStage(settings, TopicDirectory(settings).exists, guard)

    requests_topic = settings.topic("requests")

    @app.on_partitions_assigned.connect
    async def forget_moved_sessions(_: Any, assigned: set[Any], **__: Any) -> None:
        # The full new assignment: in-memory session rows of partitions now owned elsewhere go.
        guard.rows.keep_partitions({tp.partition for tp in assigned if tp.topic == requests_topic})

    @app.agent(raw_topic(app, requests_topic), name="admit")
    async def admit_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await emit(app, await stage.handle(event.value, source_of(event)))

    # Tenant-wide budgets: one owner per tenant on sluice.tenant (see streams/stages/tenant_budget.py).
    tenants: Any = app.Table("tenants", default=None, partitions=settings.partitions)
    tenant_ids: Any = app.Table("tenant-settled", default=None, partitions=settings.partitions)
    tenant_stage = TenantBudgetStage(
        settings, tenants, lambda: stage.tenant_budgets, lambda: watcher.current().priciest, tenant_ids
    )

    @app.agent(raw_topic(app, settings.topic("tenant")), name="tenant-budget")
    async def tenant_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await emit(app, await tenant_stage.handle(event.value, source_of(event)))

    @app.agent(raw_topic(app, settings.topic("usage")), name="settle")
    async def settle_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await emit(app, await stage.settle(event.value, source_of(event)))

    return stage
