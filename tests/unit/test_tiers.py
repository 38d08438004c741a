"""Tier config: the shipped default chain, prices from the shipped table, validation, hot reload."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from streams.tiers import (
    DEFAULT_TIERS_PATH,
    PriceTable,
    TierConfigError,
    TierConfigWatcher,
    UnknownModelError,
    load_tiers,
    parse_tiers,
)


def test_price_table_lookup_and_cost() -> None:
    table = PriceTable.load()
    assert len(table) > 1000
    assert table.price("gpt-4o") == (2.5, 10.0)
    assert table.cost_usd("gpt-4o", 1000, 500) == pytest.approx((1000 * 2.5 + 500 * 10.0) / 1e6)
    with pytest.raises(UnknownModelError, match="no-such-model"):
        table.price("no-such-model")


def test_default_config_loads_with_table_prices() -> None:
    config = load_tiers(None)
    assert config.names() == ("cache", "local-small", "cloud-frontier")
    assert config.source == str(DEFAULT_TIERS_PATH)
    local, frontier = config.weak, config.frontier
    assert local.name == "local-small" and local.kind == "local" and local.model == "SmolLM2-135M-Instruct-Q4_1"
    assert (local.input_per_1m, local.output_per_1m) == (0.0, 0.0)
    assert frontier.kind == "cloud" and frontier.provider == "openai"
    assert (frontier.input_per_1m, frontier.output_per_1m) == PriceTable.load().price(frontier.model)
    assert frontier.max_context == 128000  # from the table when the file gives none
    assert frontier.cost_usd(1_000_000, 0) == frontier.input_per_1m
    assert config.get("cache").kind == "cache" and config.router_knob is None


def _doc(**frontier: object) -> dict:
    doc = yaml.safe_load(DEFAULT_TIERS_PATH.read_text())
    doc["tiers"][2].update(frontier)
    return doc


def test_explicit_prices_and_local_compute_price() -> None:
    doc = _doc(model="my-private-model", input_usd_per_1m=1.0, output_usd_per_1m=2.0)
    doc["local_compute_usd_per_1m"] = 0.05
    config = parse_tiers(doc)
    assert (config.frontier.input_per_1m, config.frontier.output_per_1m) == (1.0, 2.0)
    assert (config.weak.input_per_1m, config.weak.output_per_1m) == (0.05, 0.05)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": None}, r"tiers\[2\] \(cloud-frontier\)\.model"),
        ({"model": "no-such-model"}, r"tiers\[2\] \(cloud-frontier\)\.model 'no-such-model' is not in the price"),
        ({"kind": "gpu"}, r"tiers\[2\] \(cloud-frontier\)\.kind must be one of"),
        ({"input_usd_per_1m": -1}, r"input_usd_per_1m must be >= 0"),
        ({"concurrency": 1.5}, r"concurrency must be a whole number"),
        ({"concurency": 4}, r"unknown field\(s\): concurency"),
        ({"name": "local-small"}, r"duplicate name 'local-small'"),
        ({"max_context": "big"}, r"max_context must be a number"),
    ],
)
def test_validation_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(TierConfigError, match=message):
        parse_tiers(_doc(**change))


def test_validation_top_level() -> None:
    with pytest.raises(TierConfigError, match="tiers must be a non-empty list"):
        parse_tiers({"tiers": []})
    with pytest.raises(TierConfigError, match=r"router\.knob must be a number"):
        parse_tiers({**_doc(), "router": {"knob": "high"}})
    assert parse_tiers({**_doc(), "router": {"knob": 1.01}}).router_knob == 1.01  # > 1: nothing goes small


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers: [")
    with pytest.raises(TierConfigError, match="not valid YAML"):
        load_tiers(bad)
    with pytest.raises(TierConfigError, match="cannot read"):
        load_tiers(tmp_path / "missing.yaml")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, doc: dict, bump: int) -> None:
    path.write_text(yaml.safe_dump(doc))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))  # mtime moves even within 1s


def test_watcher_reloads_on_change_and_keeps_old_on_bad_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tiers.yaml"
    doc = _doc()
    _write(path, doc, 0)
    clock = FakeClock()
    watcher = TierConfigWatcher(path, clock=clock)
    assert watcher.current().router_knob is None

    doc["router"] = {"knob": 0.7}
    _write(path, doc, 1)
    clock.now += 0.5
    assert watcher.current().router_knob is None  # checked at most once per second
    clock.now += 0.6
    assert watcher.current().router_knob == 0.7

    path.write_text("tiers: [ {name: broken")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2_000_000_000))
    clock.now += 1.1
    with caplog.at_level(logging.ERROR, logger="streams.tiers"):
        assert watcher.current().router_knob == 0.7  # the previous config stays
    assert watcher.last_error and "not valid YAML" in watcher.last_error
    assert any("reload failed" in r.message for r in caplog.records)

    doc["router"] = {"knob": 0.9}
    _write(path, doc, 3)
    clock.now += 1.1
    assert watcher.current().router_knob == 0.9 and watcher.last_error is None


def test_watcher_fails_fast_on_bad_initial_file(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump({"tiers": [{"name": "x", "kind": "cloud"}]}))
    with pytest.raises(TierConfigError, match=r"tiers\[0\] \(x\)\.model"):
        TierConfigWatcher(path)
