"""Kafka SASL/TLS settings reach every client Sluice builds: Faust's producer and consumers, and each aiokafka
producer, consumer and admin client in the CLI, the Python client and the tooling.

The client classes are replaced by recorders (fault-injection fakes: no SASL_SSL cluster runs here) that keep
the constructor's keyword arguments and stop the caller at its first network call. A static check also reads
every module's source, so a client added later without ``Settings.kafka_client_options()`` fails too.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENT_CLASSES = ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient")
PASSWORD = "pw-Sasl-0451"


class Stop(Exception):
    """Raised by a recorder at the first real network call: construction is what the test is about."""


class Recorder:
    made: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Recorder.made.append((self.kind, kwargs))

    kind = "client"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise Stop(name)


def _recorder(kind: str) -> type[Recorder]:
    return type(kind, (Recorder,), {"kind": kind})


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA certificate, so the test can tell that *this* file is what the TLS context trusts."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(folder / "ca.key"),
            "-out",
            str(folder / "ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=sluice-test-ca",
        ],
        check=True,
        capture_output=True,
    )
    return folder / "ca.pem"


@pytest.fixture
def secure(ca_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap="kafka-1.internal:9094",
        topic_prefix="sec",
        data_dir=str(tmp_path),
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="sluice",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=str(ca_file),
    )


def _assert_secure(kind: str, kwargs: dict[str, Any]) -> None:
    assert kwargs.get("security_protocol") == "SASL_SSL", (kind, kwargs)
    assert kwargs.get("sasl_mechanism") == "SCRAM-SHA-512", kind
    assert (kwargs.get("sasl_plain_username"), kwargs.get("sasl_plain_password")) == ("sluice", PASSWORD), kind
    ctx = kwargs.get("ssl_context")
    assert isinstance(ctx, ssl.SSLContext), kind
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname, kind
    subjects = [dict(pair[0] for pair in cert["subject"]) for cert in ctx.get_ca_certs()]
    assert subjects == [{"commonName": "sluice-test-ca"}], (kind, subjects)  # exactly the configured CA


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every Sluice module's (and aiokafka's own) client classes replaced by recorders."""
    import aiokafka
    import aiokafka.admin

    import streams

    Recorder.made = []
    fakes = {name: _recorder(name) for name in CLIENT_CLASSES}
    for info in pkgutil.walk_packages(streams.__path__, "streams."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # a module that cannot import here builds no client here (the static check covers it)
            continue
        for name, fake in fakes.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, fake)
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", fakes["AIOKafkaProducer"])
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", fakes["AIOKafkaConsumer"])
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", fakes["AIOKafkaAdminClient"])
    yield Recorder.made


async def _until_stop(call: Callable[[], Awaitable[Any]]) -> None:
    try:
        await call()
    except (Stop, LookupError):
        pass


async def test_every_tooling_client_gets_the_sasl_ssl_options(
    secure: Settings, recorded: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import broker, cache_admin, report, top, topics
    from streams.client import SluiceClient
    from streams.ingress.metrics import Feeds, Telemetry
    from streams.lag import LagReader

    async def two_partitions(settings: Settings, names: list[str]) -> dict[str, int]:
        return dict.fromkeys(names, 2)

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "client (submit, backfill)": SluiceClient(secure).start,
        "lag": LagReader(secure).start,
        "top tail": top.Tail(secure, secure.topic("usage"), None)._start,
        "report": lambda: report.read_usage(secure, None),
        "topics create": lambda: topics.create_topics(secure),
        "topics list": lambda: topics.list_topics(secure),
        "broker probe": lambda: broker._probe(secure),
        "ingress feeds": lambda: Feeds(secure, Telemetry())._consume("usage", None, lambda usage: None),
    }
    counts = []
    for name, call in calls.items():
        before = len(recorded)
        await _until_stop(call)
        counts.append((name, len(recorded) - before))
    monkeypatch.setattr(cache_admin, "partition_counts", two_partitions)
    before = len(recorded)
    await _until_stop(lambda: cache_admin.request_purge(secure, "acme"))
    counts.append(("cache purge", len(recorded) - before))
    assert all(n >= 1 for _, n in counts), counts
    kinds = {kind for kind, _ in recorded}
    assert kinds == set(CLIENT_CLASSES)
    for kind, kwargs in recorded:
        _assert_secure(kind, kwargs)
        assert kwargs["bootstrap_servers"] == "kafka-1.internal:9094"


def test_faust_producer_and_consumers_get_the_sasl_ssl_options(
    secure: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import faust.transport.drivers.aiokafka as driver

    from streams.app import create_app, faust_credentials

    made: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def fake(kind: str) -> Callable[..., None]:
        return lambda *a, **kw: made.append((kind, kw))

    monkeypatch.setattr(driver.aiokafka, "AIOKafkaProducer", fake("producer"))
    monkeypatch.setattr(driver.aiokafka, "AIOKafkaConsumer", fake("consumer"))
    assert faust_credentials(Settings()) is None  # PLAINTEXT stays plain

    async def build() -> None:
        app = create_app(secure, "admit")
        assert app.conf.broker_credentials is not None
        app.producer._new_producer()  # the producer behind app.send and the tables' changelogs
        thread = app.consumer._thread
        thread._create_worker_consumer(app.transport)  # the consumer group member
        thread._create_client_consumer(app.transport)

    asyncio.run(build())
    assert [k for k, _ in made] == ["producer", "consumer", "consumer"]
    for kind, kwargs in made:
        _assert_secure(kind, kwargs)


def _passes_options(call: ast.Call, assigned: dict[str, str]) -> bool:
    for keyword in call.keywords:
        if keyword.arg is None:  # **expr
            source = ast.unparse(keyword.value)
            if "kafka_client_options" in source or "kafka_client_options" in assigned.get(source, ""):
                return True
            if isinstance(keyword.value, ast.Dict):  # {"bootstrap_servers": ..., **settings.kafka_client_options()}
                if "kafka_client_options" in source:
                    return True
    return False


def test_every_client_constructed_in_the_code_passes_kafka_client_options() -> None:
    """A static check over streams/ and workers/: a Kafka client built without the options would connect in
    plaintext (or not at all) on a secured cluster."""
    missing, seen = [], 0
    for path in sorted([*REPO.glob("streams/**/*.py"), *REPO.glob("workers/**/*.py")]):
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            assigned = {
                ast.unparse(t): ast.unparse(n.value)
                for n in ast.walk(func)
                if isinstance(n, ast.Assign)
                for t in n.targets
            }
            for node in ast.walk(func):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func).rsplit(".", 1)[-1]
                    if name in CLIENT_CLASSES:
                        seen += 1
                        if not _passes_options(node, assigned):
                            missing.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert seen >= 10, seen
    assert missing == [], missing
