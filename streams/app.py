"""Faust app factory: one app (one consumer group) per role.

A role's app id is ``<prefix>-<role>``, so every process running that role, whether ``sluice up`` (all roles
in one process) or ``sluice worker --role ROLE``, joins the same consumer group and Kafka spreads the
partitions across them. Topics carry raw bytes: stages decode them, so bad input is dead-lettered with a
reason instead of failing inside Faust's deserializer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from streams import drain_fast_path, faust_patches, fetch_sessions, lost_event_guard, producer_fast_path
from streams.kafka_clients import back_off_failed_metadata_updates
from streams.settings import Settings


def faust_credentials(settings: Settings) -> Any:
    """SASL/TLS settings for Faust's clients (``None`` for PLAINTEXT)."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ssl_context = settings.kafka_client_options().get("ssl_context")
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def idempotent_producers() -> None:
    """Make Faust's producers idempotent (faust-streaming enables it only inside transactions). With acks=all, a
    send retried after a lost acknowledgement (a leader failover, a broker restart) is then written once, not
    twice, and in order."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.Producer._settings_extra
    if getattr(original, "sluice_idempotent", False):
        return

    def settings_extra(self: Any) -> Any:
        return {**original(self), "enable_idempotence": True}

    settings_extra.sluice_idempotent = True  # type: ignore[attr-defined]
    driver.Producer._settings_extra = settings_extra


def quiet_library_debug(settings: Settings) -> None:
    """Faust's worker sets the root logger to DEBUG (for its terminal spinner), so every ``log.debug`` in Faust and
    mode (one per message sent) builds a record, and the redaction factory scrubs it, only for the handler to
    drop it: a quarter of a busy worker's CPU. Their loggers get the configured level: what is printed is the
    same, records below it are never made."""
    level = logging.getLevelName(settings.log_level.upper())
    if isinstance(level, int) and level > logging.DEBUG:
        for name in ("faust", "mode"):
            logging.getLogger(name).setLevel(level)


def create_app(settings: Settings, role: str) -> faust.App:
    faust_patches.apply()  # skipped events must not be acked (see streams/faust_patches.py)
    drain_fast_path.apply()  # no tasks per fetched record when its delivery cannot block
    producer_fast_path.apply()  # no task per message Faust publishes (table changelog writes)
    back_off_failed_metadata_updates()  # no busy loop while the broker is down
    if settings.consumer_fetch_sessions:
        fetch_sessions.apply()  # fetches name only the partitions that moved (KIP-227)
    quiet_library_debug(settings)
    idempotent_producers()
    app_id = settings.group(role)  # "worker" with SLUICE_SINGLE_GROUP (streams/roles.py)
    datadir = Path(settings.data_dir) / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=faust_credentials(settings),
        datadir=str(datadir),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        # Sluice declares its own topics (streams/topics.py); Faust must not create or reshape them.
        topic_allow_declare=False,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_commit_interval=1.0,
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=settings.producer_max_batch_bytes,
    )
    lost_event_guard.install(app, settings.lost_event_check_s)
    without_faust_monitor(app)
    app.sluice_fetch = (settings.consumer_fetch_min_bytes, settings.consumer_fetch_max_wait_ms)
    fetch_batching()
    return app


def without_faust_monitor(app: faust.App) -> None:
    """Faust adds its Monitor sensor to every app at start: per-event timing and counters for Faust's web views,
    which Sluice does not run (it has its own metrics, streams/ingress/metrics.py). Each consumed event called it
    five times or more (a few per cent of a busy worker's CPU); the app's sensor set is left empty."""
    original = app.on_init_dependencies

    def on_init_dependencies() -> Any:
        dependencies = original()
        app.sensors.remove(app.monitor)
        return dependencies

    app.on_init_dependencies = on_init_dependencies


def fetch_batching() -> None:
    """Faust builds its consumers with fetch_max_wait_ms=1500 and aiokafka's fetch_min_bytes=1, and takes neither
    from its settings: set both from the app's Sluice settings (``app.sluice_fetch``) on every worker consumer."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "sluice_batching", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        fetch = getattr(self.app, "sluice_fetch", None)
        if fetch is not None and hasattr(consumer, "_fetch_min_bytes"):  # an aiokafka consumer (tests fake it)
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = fetch
        return consumer

    create.sluice_batching = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create


def raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
