"""Tier chain from a YAML file, priced from the shipped LiteLLM price table, hot-reloadable.

Routing and cost accounting both need to know which tiers exist and what each costs; keeping that in one
editable file (watched by :class:`TierConfigWatcher`) lets an operator change models or prices without a restart.
Pure: stdlib + PyYAML, no Kafka/Faust.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.prices import DEFAULT_PRICES_PATH, ModelPrice, PriceTable, UnknownModelError
from workers.errors import ConfigError

__all__ = [
    "DEFAULT_PRICES_PATH",
    "DEFAULT_TIERS_PATH",
    "ModelPrice",
    "PriceTable",
    "Tier",
    "TierConfig",
    "TierConfigError",
    "TierConfigWatcher",
    "UnknownModelError",
    "load_tiers",
    "parse_tiers",
]

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_TIERS_PATH = DATA_DIR / "tiers.default.yaml"
KINDS = ("cache", "local", "cloud")


class TierConfigError(ConfigError, ValueError):
    """The tier file cannot work; the message names the offending field."""


@dataclass(frozen=True)
class Tier:
    name: str
    kind: str  # cache | local | cloud
    model: str
    provider: str
    input_per_1m: float
    output_per_1m: float
    max_context: int | None
    topic: str
    concurrency: int

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass(frozen=True)
class TierConfig:
    tiers: tuple[Tier, ...]
    router_knob: float | None = None  # None: the router weights' recommended knob
    source: str = ""

    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def get(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def of_kind(self, kind: str) -> tuple[Tier, ...]:
        return tuple(t for t in self.tiers if t.kind == kind)

    @property
    def weak(self) -> Tier:
        """The cheapest model tier (first non-cache tier): where the router sends 'easy' requests."""
        return next(t for t in self.tiers if t.kind != "cache")

    @property
    def priciest(self) -> Tier:
        """The model tier with the highest price: budget reservations assume it (routing happens later)."""
        return max(self.of_kind("local") + self.of_kind("cloud"), key=lambda t: t.input_per_1m + t.output_per_1m)

    @property
    def frontier(self) -> Tier:
        """The last tier of the chain: the strongest and dearest."""
        return self.tiers[-1]


def _num(raw: Mapping[str, Any], key: str, where: str, default: float | None, *, minimum: float = 0.0) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TierConfigError(f"{where}.{key} must be a number, got {value!r}")
    if value < minimum:
        raise TierConfigError(f"{where}.{key} must be >= {minimum}, got {value!r}")
    return float(value)


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise TierConfigError(f"{where}.{key} is required and must be a non-empty string, got {value!r}")
    return value


def _tier(raw: Any, i: int, prices: PriceTable, local_price: float) -> Tier:
    where = f"tiers[{i}]"
    if not isinstance(raw, Mapping):
        raise TierConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    name = _str(raw, "name", where)
    where = f"tiers[{i}] ({name})"
    kind = _str(raw, "kind", where)
    if kind not in KINDS:
        raise TierConfigError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    known = {"name", "kind", "model", "provider", "input_usd_per_1m", "output_usd_per_1m"}
    known |= {"max_context", "topic", "concurrency"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TierConfigError(f"{where} has unknown field(s): {', '.join(map(str, unknown))}")
    model = "" if kind == "cache" else _str(raw, "model", where)
    provider = str(raw.get("provider") or ("local" if kind == "local" else ""))
    max_context = _num(raw, "max_context", where, None, minimum=1)
    inp = _num(raw, "input_usd_per_1m", where, None)
    out = _num(raw, "output_usd_per_1m", where, None)
    if kind == "cache":
        inp, out = inp or 0.0, out or 0.0
    elif kind == "local":
        inp = local_price if inp is None else inp
        out = local_price if out is None else out
    elif inp is None or out is None:
        if model not in prices:
            raise TierConfigError(
                f"{where}.model {model!r} is not in the price table: set input_usd_per_1m and output_usd_per_1m"
            )
        row = prices.get(model)
        inp = row.input_per_1m if inp is None else inp
        out = row.output_per_1m if out is None else out
        provider = provider or row.provider
        if max_context is None and row.max_input_tokens:
            max_context = float(row.max_input_tokens)
    concurrency = _num(raw, "concurrency", where, 1, minimum=1)
    if concurrency is None or concurrency != int(concurrency):
        raise TierConfigError(f"{where}.concurrency must be a whole number >= 1, got {raw.get('concurrency')!r}")
    return Tier(
        name=name,
        kind=kind,
        model=model,
        provider=provider,
        input_per_1m=inp,
        output_per_1m=out,
        max_context=int(max_context) if max_context is not None else None,
        topic=_str(raw, "topic", where, f"tier.{name}"),
        concurrency=int(concurrency),
    )


def parse_tiers(doc: Any, prices: PriceTable | None = None, source: str = "") -> TierConfig:
    """Validate a loaded YAML document into a :class:`TierConfig` (errors name the field)."""
    if not isinstance(doc, Mapping):
        raise TierConfigError(f"tier config must be a mapping at the top level, got {type(doc).__name__}")
    if doc.get("version", 1) != 1:
        raise TierConfigError(f"version must be 1, got {doc.get('version')!r}")
    prices = prices or _default_prices()
    local_price = _num(doc, "local_compute_usd_per_1m", "config", 0.0) or 0.0
    raw_tiers = doc.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise TierConfigError("tiers must be a non-empty list")
    tiers = tuple(_tier(t, i, prices, local_price) for i, t in enumerate(raw_tiers))
    seen: set[str] = set()
    for t in tiers:
        if t.name in seen:
            raise TierConfigError(f"tiers: duplicate name {t.name!r}")
        seen.add(t.name)
    if all(t.kind == "cache" for t in tiers):
        raise TierConfigError("tiers must include at least one local or cloud tier")
    router = doc.get("router") or {}
    if not isinstance(router, Mapping):
        raise TierConfigError(f"router must be a mapping, got {router!r}")
    knob = _num(router, "knob", "router", None)  # > 1 is allowed: nothing goes to the small tier
    return TierConfig(tiers=tiers, router_knob=knob, source=source)


_PRICES: PriceTable | None = None


def _default_prices() -> PriceTable:
    global _PRICES
    if _PRICES is None:
        _PRICES = PriceTable.load()
    return _PRICES


def load_tiers(path: str | Path | None = None, prices: PriceTable | None = None) -> TierConfig:
    """Load and validate a tier file; ``None`` loads the shipped default chain."""
    p = Path(path) if path else DEFAULT_TIERS_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TierConfigError(f"cannot read tier config {p}: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TierConfigError(f"tier config {p} is not valid YAML: {exc}") from exc
    try:
        return parse_tiers(doc, prices, source=str(p))
    except TierConfigError as exc:
        raise TierConfigError(f"{p}: {exc}") from None


class TierConfigWatcher:
    """Serves the current tier config, reloading the file when its mtime changes (checked ≤ once per interval).

    A file that fails to load is logged and ignored (the previous config stays) until it changes again.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        prices: PriceTable | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._prices = prices
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._config = load_tiers(self.path, prices)  # no previous config: a bad file fails here
        self._checked = clock()
        self.last_error: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self) -> TierConfig:
        now = self._clock()
        if now - self._checked < self._interval:
            return self._config
        with self._lock:
            if now - self._checked >= self._interval:
                self._checked = now
                stamp = self._stat()
                if stamp is not None and stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._config = load_tiers(self.path, self._prices)
                        self.last_error = None
                        log.info("tier config reloaded from %s", self.path)
                    except TierConfigError as exc:
                        self.last_error = str(exc)
                        log.error("tier config reload failed, keeping the previous one: %s", exc)
            return self._config
