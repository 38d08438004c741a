"""Worker consumers take Sluice's fetch batching settings (Faust hard-codes fetch_max_wait_ms=1500 and leaves
aiokafka's fetch_min_bytes=1). No broker: an aiokafka consumer connects only when started."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app
from streams.settings import Settings


async def test_worker_consumers_take_the_fetch_batching_settings(tmp_path: Path) -> None:
    base = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0)
    tuned = base.with_overrides(topic_prefix="tuned", consumer_fetch_min_bytes=4096, consumer_fetch_max_wait_ms=20)
    made = {}
    for name, settings in (("default", base), ("tuned", tuned)):
        app = create_app(settings, "admit")
        made[name] = app.consumer._thread._create_worker_consumer(app.transport)
    assert (made["tuned"]._fetch_min_bytes, made["tuned"]._fetch_max_wait_ms) == (4096, 20)
    assert (made["default"]._fetch_min_bytes, made["default"]._fetch_max_wait_ms) == (1, 1500)


def test_worker_apps_run_without_fausts_monitor_sensor(tmp_path: Path) -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0), "meter")
    app.on_init_dependencies()  # where Faust adds its Monitor to the app's sensors
    assert app.monitor not in set(app.sensors)


def test_worker_producers_take_the_batch_size_setting(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0)
    for size in (settings.producer_max_batch_bytes, 65_536):
        app = create_app(settings.with_overrides(producer_max_batch_bytes=size, topic_prefix=f"b{size}"), "admit")
        assert app.producer._settings_default()["max_batch_size"] == size
    assert settings.producer_max_batch_bytes > 16_384  # Faust's default stalled a flooded worker


def test_worker_consumers_fetch_in_sessions_by_default(tmp_path: Path) -> None:
    from aiokafka.consumer.fetcher import Fetcher

    from streams import fetch_sessions

    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=str(tmp_path), lost_event_check_s=0)
    assert settings.consumer_fetch_sessions
    create_app(settings.with_overrides(topic_prefix="fs"), "admit")
    assert fetch_sessions._applied and Fetcher.__init__.__module__ == "streams.fetch_sessions"
