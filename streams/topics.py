"""Sluice's topics: names, keys, partition counts, and explicit creation.

Faust does not create source topics and the local broker has auto-creation off, so every topic is
created here before any role starts (``sluice topics create``; ``sluice up`` does it too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.kafka_clients import admin_client
from streams.settings import Settings

log = logging.getLogger(__name__)


COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name: the full name is ``<prefix>.<name>``, or the name with ``{prefix}`` filled in
    key: str  # what the message key is (documentation and partitioning contract)
    doc: str
    configs: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None  # None: Settings.partitions
    retention_setting: str = ""  # a Settings field holding this topic's retention.ms (e.g. decisions_retention_ms)

    def topic_configs(self, settings: Settings) -> dict[str, str]:
        configs = dict(self.configs)
        if self.retention_setting:
            configs["retention.ms"] = str(int(getattr(settings, self.retention_setting)))
        return configs

    def full_name(self, settings: Settings) -> str:
        if "{prefix}" in self.name:
            return self.name.format(prefix=settings.topic_prefix)
        return settings.topic(self.name)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("requests", "session", "inference requests from services, backfills and the HTTP ingress"),
    TopicSpec("tenant", "tenant", "requests and usage of tenants with a tenant-wide budget (one owner each)"),
    TopicSpec("lookup", "dedup key", "admitted requests for the cache stage (one partition owns each key)"),
    TopicSpec("tier.local", "dedup key", "routed work for the local GGUF worker pool"),
    TopicSpec("tier.local.batch", "dedup key", "batch-priority work for the local pool (interactive goes first)"),
    TopicSpec("tier.cloud", "dedup key", "routed work for the cloud forwarders"),
    TopicSpec("results", "dedup key", "a tier's answer, for the complete stage (co-partitioned with lookup)"),
    TopicSpec("responses", "request id", "one final response per request"),
    TopicSpec("usage", "session", "one priced usage record per request id (the meter's output)"),
    TopicSpec("costs", "dimension:value:window:instance", "cost aggregates per tenant/session/tier/feature"),
    TopicSpec("control", "session", "breaker state changes and budget alerts (compacted)", COMPACTED),
    TopicSpec(
        "chunks",
        "request id",
        "ordered parts of streamed replies (never metered; the final response follows on responses)",
        configs={"retention.ms": str(3600 * 1000)},
    ),
    TopicSpec(
        "cancel",
        "request id",
        "stop generating a streamed reply whose consumer left (every worker reads all of it, no group)",
        configs={"retention.ms": str(600 * 1000)},
    ),
    TopicSpec(
        "decisions",
        "request id",
        "every stage's verdict per request: the audit trail and replay's input",
        retention_setting="decisions_retention_ms",
    ),
    TopicSpec(
        "deadletter",
        "source message key (or none)",
        "messages that could not be accepted, with the reason",
        configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
    ),
    # Changelogs of the cache role's Faust tables (Faust may not declare topics here; see streams/app.py).
    TopicSpec("{prefix}-cache-exact-changelog", "dedup key", "exact-cache table changelog", COMPACTED),
    TopicSpec("{prefix}-cache-inflight-changelog", "dedup key", "in-flight (coalescing) table changelog", COMPACTED),
    TopicSpec("{prefix}-admit-sessions-changelog", "session", "breaker and budget state per session", COMPACTED),
    TopicSpec("{prefix}-admit-tenants-changelog", "tenant", "tenant-wide budget ledgers", COMPACTED),
    TopicSpec(
        "{prefix}-admit-session-settled-changelog",
        "session + request id",
        "settled ids the session rows no longer hold (streams/stages/spilled_ids.py)",
        COMPACTED,
    ),
    TopicSpec(
        "{prefix}-admit-tenant-settled-changelog",
        "tenant + request id",
        "settled ids the tenant rows no longer hold (streams/stages/spilled_ids.py)",
        COMPACTED,
    ),
    TopicSpec(
        "{prefix}-meter-ledger-changelog", "request id", "metered usage per request id (dedup ledger)", COMPACTED
    ),
    TopicSpec(
        "{prefix}-meter-rollup-changelog",
        "partition",
        "totals of the usage pruned from the ledger, per partition (see streams/stages/meter_horizon.py)",
        COMPACTED,
    ),
)


def topic_names(settings: Settings) -> list[str]:
    return [t.full_name(settings) for t in TOPICS]


def new_topics(settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS) -> list[NewTopic]:
    return [
        NewTopic(
            name=spec.full_name(settings),
            num_partitions=spec.partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=_replication_configs(settings) | spec.topic_configs(settings),
        )
        for spec in specs
    ]


def _replication_configs(settings: Settings) -> dict[str, str]:
    """With replicas, an acks=all write must reach ``min.insync.replicas`` of them (see README, clusters)."""
    if settings.replication_factor <= 1:
        return {}
    return {"min.insync.replicas": str(settings.effective_min_insync_replicas)}


async def create_topics(settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS) -> list[str]:
    """Create missing topics; returns the names created (existing ones are left as they are)."""
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        wanted = [t for t in new_topics(settings, specs) if t.name not in existing]
        if not wanted:
            return []
        created = []
        response = await admin.create_topics(wanted)
        for topic, code, *_ in getattr(response, "topic_errors", []) or getattr(response, "topics", []):
            name = topic if isinstance(topic, str) else topic[0]
            if code in (0, TopicAlreadyExistsError.errno):
                created.append(name)
            else:
                raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
        log.info("created topics: %s", ", ".join(created))
        await _wait_for_leaders(admin, [t.name for t in wanted])
        return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """A new topic is usable once every partition has a leader; until then clients see it as missing."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            d["error_code"] == 0 and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
            for d in described
        )
        if ready or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Partitions per topic (0 for a topic that does not exist)."""
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(names)
    return {d["topic"]: (len(d["partitions"]) if d["error_code"] == 0 else 0) for d in described}


async def list_topics(settings: Settings) -> set[str]:
    async with admin_client(settings) as admin:
        return set(await admin.list_topics())


async def delete_prefixed_topics(settings: Settings) -> list[str]:
    """Delete every topic of ``settings.topic_prefix``: Sluice's own (those of ``TOPICS``, and any other
    ``<prefix>.<name>``) and Faust's (changelogs, repartitions: ``<prefix>-...``). For prefixes made for one run
    (a replay's shadow, a bench), not for a deployment."""
    prefix, existing = settings.topic_prefix, await list_topics(settings)
    ours = set(topic_names(settings)) & existing
    names = sorted(ours | {n for n in existing if n.startswith((prefix + ".", prefix + "-"))})
    if names:
        async with admin_client(settings) as admin:
            await admin.delete_topics(names)
    return names
