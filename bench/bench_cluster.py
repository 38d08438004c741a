"""The benches' Kafka and worker lifecycle: a broker (``KAFKA_BOOTSTRAP``'s cluster, or one started here), fresh
topics under a new prefix, one all-roles ``sluice worker`` process, and the cleanup after a run. Shared by the
pipeline, hot-path, latency-legs, local and restart benches."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.broker import LocalBroker  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tiers import DEFAULT_TIERS_PATH  # noqa: E402
from streams.topics import TOPICS, TopicSpec, create_topics, delete_prefixed_topics  # noqa: E402


def bench_kafka(tmp: Path, port: int, partitions: int, prefix: str, start: bool = True) -> tuple[Settings, Any]:
    """The benches' Kafka: ``KAFKA_BOOTSTRAP``'s cluster, or (``start``) a broker started here on ``port`` and
    ``port + 1`` (returned, for the caller to stop); settings with a fresh topic prefix (new topics and groups)."""
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
    if not bootstrap and start:
        local = Settings(data_dir=str(tmp), kafka_port=port, kafka_controller_port=port + 1)
        (broker := LocalBroker(local)).start()
        bootstrap = local.bootstrap
    settings = Settings(kafka_bootstrap=bootstrap, data_dir=str(tmp / "sluice"), partitions=partitions)
    return settings.with_overrides(topic_prefix=prefix + uuid.uuid4().hex[:10]), broker


def release_kafka(settings: Settings | None, broker: LocalBroker | None) -> None:
    """After a run: stop the broker ``bench_kafka`` started, or delete the run's topics from ``KAFKA_BOOTSTRAP``'s
    cluster (leave it as it was). After ~15 runs on one dev broker, runs showed recurring 80-190 ms stalls of the
    whole worker process (its event loop and a sampling thread both stopped), absent on fresh brokers (README)."""
    if broker is not None:
        broker.stop()
        return
    if settings is None or not settings.kafka_bootstrap:
        return
    try:
        asyncio.run(delete_prefixed_topics(settings))
    except Exception as exc:  # cleanup must not hide the run's result
        print(f"could not delete the run's topics ({settings.topic_prefix}*): {exc}", file=sys.stderr)


def start_worker(settings: Settings, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """One ``sluice worker`` process with every role; the tiers file routes everything to the local tier."""
    tiers = {**yaml.safe_load(DEFAULT_TIERS_PATH.read_text()), "router": {"knob": 0.0}}
    (tmp / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(KAFKA_BOOTSTRAP=settings.bootstrap, SLUICE_TOPIC_PREFIX=settings.topic_prefix)
    env.update(SLUICE_PARTITIONS=str(settings.partitions), SLUICE_DATA_DIR=settings.data_dir)
    env.update(SLUICE_LOCAL_THREADS=str(settings.local_threads))
    env.update(SLUICE_LOCAL_CONCURRENCY=str(settings.local_instances))
    env.update(SLUICE_LOG_LEVEL="warning", SLUICE_BREAKER_ENABLED="false", SLUICE_TIERS_FILE=str(tmp / "tiers.yaml"))
    # Experiments: BENCH_SLUICE_X=v sets SLUICE_X=v in the worker, over the defaults above.
    env.update({k[len("BENCH_") :]: v for k, v in os.environ.items() if k.startswith("BENCH_SLUICE_")})
    cmd = [sys.executable, "-m", "streams.cli", "worker"]
    cmd += [a for role in ("admit", "cache", "local", "cloud", "meter") for a in ("--role", role)]
    log = tmp / "worker.log"
    with open(log, "ab") as fh:
        io: dict[str, Any] = dict(stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True, **io), log


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group; SIGKILL after 30 s."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


T = TypeVar("T")


def run_with_worker(
    prefix: str,
    port: int,
    partitions: int,
    drive: Callable[[Settings, subprocess.Popen[bytes]], Coroutine[Any, Any, T]],
    extra_topics: tuple[TopicSpec, ...] = (),
    before_worker: Callable[[Settings], None] | None = None,
) -> T:
    """The benches' lifecycle: a broker (unless ``KAFKA_BOOTSTRAP``), fresh topics, ``before_worker`` (a
    measurement that must not share the machine with a worker), one all-roles worker; run ``drive`` against them
    (the worker's log tail is printed if it fails); then stop both and clean up."""
    tmp = Path(tempfile.mkdtemp(prefix=f"sluice-{prefix}-"))
    broker: LocalBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    settings: Settings | None = None
    try:
        settings, broker = bench_kafka(tmp, port, partitions, prefix)
        asyncio.run(create_topics(settings, (*TOPICS, *extra_topics)))
        if before_worker is not None:
            before_worker(settings)
        worker, log = start_worker(settings, tmp)
        try:
            return asyncio.run(drive(settings, worker))
        except BaseException:
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
            raise
    finally:
        if worker is not None:
            stop_worker(worker)
        release_kafka(settings, broker)
        shutil.rmtree(tmp, ignore_errors=True)
