from __future__ import annotations

import pytest

from streams.settings import Settings


def test_reads_prefixed_environment_and_coerces_types() -> None:
    s = Settings.from_env({"SLUICE_PARTITIONS": "8", "SLUICE_LOCAL_TEMPERATURE": "0.5", "SLUICE_TOPIC_PREFIX": "x"})
    assert (s.partitions, s.local_temperature, s.topic_prefix) == (8, 0.5, "x")
    assert s.topic("requests") == "x.requests"


def test_kafka_bootstrap_points_at_an_existing_cluster() -> None:
    assert Settings.from_env({}).uses_external_cluster is False
    assert Settings.from_env({}).bootstrap == "127.0.0.1:9092"
    s = Settings.from_env({"KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092"})
    assert s.uses_external_cluster and s.bootstrap == "kafka-1:9092,kafka-2:9092"
    # The prefixed name wins over the plain one.
    s = Settings.from_env({"KAFKA_BOOTSTRAP": "a:1", "SLUICE_KAFKA_BOOTSTRAP": "b:2"})
    assert s.bootstrap == "b:2"


def test_bad_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SLUICE_PARTITIONS"):
        Settings.from_env({"SLUICE_PARTITIONS": "many"})


def test_security_options_pass_through_and_password_is_not_in_repr() -> None:
    s = Settings.from_env(
        {
            "SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SLUICE_KAFKA_SASL_MECHANISM": "PLAIN",
            "SLUICE_KAFKA_SASL_USERNAME": "svc",
            "SLUICE_KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    opts = s.kafka_client_options()
    assert opts["security_protocol"] == "SASL_PLAINTEXT"
    assert opts["sasl_mechanism"] == "PLAIN" and opts["sasl_plain_username"] == "svc"
    assert opts["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(s)


def test_local_instances_default_to_one_per_core_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Settings().local_instances == 2  # 1 thread each: the throughput default on 2 cores
    assert Settings(local_threads=2).local_instances == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert Settings().local_instances == 4  # capped: each instance holds its own weights and KV cache
    assert Settings.from_env({"SLUICE_LOCAL_CONCURRENCY": "3"}).local_instances == 3


def test_consumer_group_per_role_or_one_per_worker() -> None:
    from streams.one_group import other_mode_groups

    per_role = Settings.from_env({"SLUICE_TOPIC_PREFIX": "x"})
    single = Settings.from_env({"SLUICE_TOPIC_PREFIX": "x", "SLUICE_SINGLE_GROUP": "true"})
    assert (per_role.group("local"), single.group("local"), single.group("meter")) == (
        "x-local",
        "x-worker",
        "x-worker",
    )
    # The groups a worker must not run beside: the other mode's, for the same roles.
    assert other_mode_groups(per_role, ["admit", "meter"]) == ["x-worker"]
    assert other_mode_groups(single, ["admit", "meter"]) == ["x-admit", "x-meter"]
