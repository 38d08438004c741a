"""A single-node Apache Kafka broker (KRaft, combined broker+controller) from Maven Central's jars.

No Docker: ``infra/kafka/pom.xml`` copies Kafka's own jars into ``infra/kafka/libs``; this module formats
the log directory once, starts ``kafka.Kafka`` in the background and waits until a real client call
(metadata request) succeeds. When ``KAFKA_BOOTSTRAP`` is set nothing is started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = REPO_ROOT / "infra" / "kafka"


class BrokerError(RuntimeError):
    """The local broker could not be prepared or did not become ready."""


def ensure_jars(kafka_dir: Path = KAFKA_DIR) -> Path:
    """Fetch Kafka's jars with Maven unless they are already there; returns the libs folder."""
    libs = kafka_dir / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch Kafka's jars; install it or set KAFKA_BOOTSTRAP")
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(kafka_dir / "pom.xml"), "dependency:copy-dependencies"],
        check=True,
    )
    return libs


class LocalBroker:
    """Lifecycle of one KRaft broker process whose state lives under ``<data_dir>/kafka``."""

    def __init__(self, settings: Settings, kafka_dir: Path = KAFKA_DIR) -> None:
        self.settings = settings
        self.kafka_dir = kafka_dir
        self.home = Path(settings.data_dir) / "kafka"
        self.log_dirs = self.home / "data"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"

    # -- configuration -------------------------------------------------------------------------
    def server_properties(self) -> str:
        s = self.settings
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.log_dirs}",
                # Sluice creates every topic itself; never rely on auto-creation.
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "log.segment.bytes=67108864",
                "",
            ]
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("a JDK (java) is needed to run the local Kafka broker")
        log4j = self.kafka_dir / "log4j2.properties"
        return [
            java,
            f"-Xms{min(256, self.settings.kafka_heap_mb)}m",
            f"-Xmx{self.settings.kafka_heap_mb}m",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            str(self.kafka_dir / "libs" / "*"),
            main,
            *args,
        ]

    def _format_storage(self, config: Path) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        cluster_id = kafka_cluster_id()
        subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def start(self, timeout_s: float = 90.0) -> bool:
        """Start the broker unless one of ours is running; return True if this call started it."""
        if self.settings.uses_external_cluster:
            return False
        if self.running_pid() is not None:
            wait_ready(self.settings, timeout_s)
            return False
        proc = self.launch()
        try:
            wait_ready(self.settings, timeout_s, proc=proc)
        except BrokerError:
            self.stop()
            raise
        return True

    def launch(self) -> subprocess.Popen[bytes]:
        """Write the config, format the log directory once and start the JVM, without waiting for it (the
        nodes of a cluster only become ready together: see streams/cluster.py)."""
        ensure_jars(self.kafka_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self.server_properties())
        self._format_storage(config)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop our broker (SIGTERM, then SIGKILL); True if one was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault injection in tests)."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
            time.sleep(0.2)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kafka_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A random cluster id in Kafka's format (base64url of 16 bytes, no padding).

    Like Kafka's own ``Uuid.randomUuid``, it never starts with ``-``: the storage tool's argument parser would
    read such an id as an option (1 in 64 ids did, and failed CI with "expected one argument").
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def wait_ready(settings: Settings, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the cluster answers a metadata request (a real client call, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    # Refused connections are expected while the broker boots; keep them out of the log.
    client_log = logging.getLogger("aiokafka")
    saved_level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        _wait(settings, deadline, proc)
    finally:
        client_log.setLevel(saved_level)


def _wait(settings: Settings, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"Kafka exited with code {proc.returncode}; see its log")
        try:
            asyncio.run(_probe(settings))
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.5)
    raise BrokerError(f"Kafka at {settings.bootstrap} not ready in time: {last_error}")


async def _probe(settings: Settings) -> None:
    from streams.kafka_clients import admin_client

    async with admin_client(settings, request_timeout_ms=3000) as admin:
        await admin.describe_cluster()
