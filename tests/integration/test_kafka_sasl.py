"""A genuine SASL listener: a KRaft broker of this test's own with a SASL_PLAINTEXT (PLAIN) listener. Clients
without credentials, or with a wrong password, are refused; with Sluice's SASL settings the admin client, the
Python client and a Faust worker (the admit role) all work through it, end to end.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.broker import LocalBroker
from streams.client import SluiceClient
from streams.settings import Settings
from streams.topics import create_topics, list_topics
from tests.integration.procs import SluiceProcess

pytestmark = pytest.mark.integration

USER, PASSWORD = "sluice", "sluice-Sasl-pw-77"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class SaslBroker(LocalBroker):
    """The local broker plus a SASL_PLAINTEXT listener (PLAIN, users in the JAAS line); the broker's own traffic
    and the readiness probe stay on the plaintext listener."""

    def __init__(self, settings: Settings, sasl_port: int) -> None:
        super().__init__(settings)
        self.sasl_port = sasl_port

    def server_properties(self) -> str:
        s, port = self.settings, self.sasl_port
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="admin-pw" user_admin="admin-pw" user_{USER}="{PASSWORD}";'
        )
        lines = super().server_properties().splitlines()
        replaced = {
            "listeners": f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},SASL_PLAINTEXT://127.0.0.1:{port},"
            f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            "advertised.listeners": f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
            f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "listener.security.protocol.map="
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        }
        out = [replaced.get(line.split("=", 1)[0], line) for line in lines]
        out += [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
            "",
        ]
        return "\n".join(out)


@pytest.fixture(scope="module")
def sasl_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    plain, controller, sasl = _free_ports(3)
    settings = Settings(
        data_dir=str(tmp_path_factory.mktemp("sasl-broker")),
        kafka_port=plain,
        kafka_controller_port=controller,
        kafka_heap_mb=384,
    )
    broker = SaslBroker(settings, sasl)
    broker.start(timeout_s=120)
    try:
        yield sasl
    finally:
        broker.stop()


def _settings(port: int, tmp_path: Path, **security: str) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix="sasl", partitions=1, data_dir=str(tmp_path), **security
    )  # type: ignore[arg-type]


async def test_sasl_listener_refuses_strangers_and_serves_sluice(sasl_port: int, tmp_path: Path) -> None:
    secure = _settings(
        sasl_port,
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
    )
    for stranger in (
        _settings(sasl_port, tmp_path),  # no credentials at all
        _settings(
            sasl_port,
            tmp_path,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username=USER,
            kafka_sasl_password="wrong",
        ),
    ):
        with pytest.raises(Exception):  # noqa: B017 - refused: connection reset, auth failure or timeout
            await asyncio.wait_for(list_topics(stranger), 20)
    await create_topics(secure)
    assert secure.topic("requests") in await list_topics(secure)

    worker = SluiceProcess(
        secure,
        "worker",
        "--role",
        "admit",
        log=tmp_path / "sasl-admit.log",
        extra_env={
            "SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SLUICE_KAFKA_SASL_MECHANISM": "PLAIN",
            "SLUICE_KAFKA_SASL_USERNAME": USER,
            "SLUICE_KAFKA_SASL_PASSWORD": PASSWORD,
            "SLUICE_LOG_LEVEL": "info",
        },
    )
    try:
        async with SluiceClient(secure) as client:
            waiter = await client.expect("sasl-bad-1")
            await client.publish_raw(orjson.dumps({"id": "sasl-bad-1", "tenant": "t", "session": "s"}), key=b"s")
            rejected = await asyncio.wait_for(waiter, 120)
    finally:
        worker.stop()
    assert rejected.status == "rejected" and rejected.reason == "missing_field:prompt", worker.tail()
    assert PASSWORD not in worker.log.read_text(errors="replace")  # the worker logged at info: no password
