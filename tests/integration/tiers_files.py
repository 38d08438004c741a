"""Tier files for integration tests: the shipped default with the router knob and providers overridden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streams.tiers import DEFAULT_TIERS_PATH


def write_tiers(
    path: Path,
    *,
    knob: float,
    openai_base_url: str | None = None,
    fallback: list[Any] | None = None,
    local_price: float | None = None,
) -> Path:
    """knob 0.0 sends every request to the local tier, 1.01 every request to the frontier (cloud) tier."""
    doc = yaml.safe_load(DEFAULT_TIERS_PATH.read_text())
    doc["router"] = {"knob": knob}
    if local_price is not None:
        doc["local_compute_usd_per_1m"] = local_price
    if openai_base_url is not None:
        doc["providers"] = {
            "openai": {"kind": "openai", "base_url": openai_base_url, "api_key_env": "SLUICE_TEST_OPENAI_KEY"}
        }
    if fallback is not None:
        doc["fallback"] = fallback
    path.write_text(yaml.safe_dump(doc))
    return path
