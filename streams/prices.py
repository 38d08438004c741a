"""The model price table (USD per 1M tokens) shipped in ``streams/data``, from LiteLLM's price list (MIT)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from workers.errors import ConfigError

DEFAULT_PRICES_PATH = Path(__file__).resolve().parent / "data" / "llm_prices_per_million.tsv"


class UnknownModelError(ConfigError, KeyError):
    """A model is not in the price table (give its prices in the tier file instead)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelPrice:
    model: str
    provider: str
    input_per_1m: float
    output_per_1m: float
    max_input_tokens: int | None


class PriceTable:
    """USD per 1M tokens by model name; loaded from the TSV shipped in ``streams/data``."""

    def __init__(self, rows: Mapping[str, ModelPrice]) -> None:
        self._rows = dict(rows)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        rows: dict[str, ModelPrice] = {}
        with open(path or DEFAULT_PRICES_PATH, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                if not r.get("input_usd_per_1m") or not r.get("output_usd_per_1m"):
                    continue  # image/audio models priced per call, not per token
                max_in = r.get("max_input_tokens") or ""
                rows[r["model"]] = ModelPrice(
                    model=r["model"],
                    provider=r.get("provider") or "",
                    input_per_1m=float(r["input_usd_per_1m"]),
                    output_per_1m=float(r["output_usd_per_1m"]),
                    max_input_tokens=int(float(max_in)) if max_in else None,
                )
        return cls(rows)

    def __contains__(self, model: object) -> bool:
        return model in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, model: str) -> ModelPrice:
        try:
            return self._rows[model]
        except KeyError:
            raise UnknownModelError(f"model {model!r} is not in the price table") from None

    def price(self, model: str) -> tuple[float, float]:
        """``(input_usd_per_1m, output_usd_per_1m)`` for ``model``."""
        p = self.get(model)
        return p.input_per_1m, p.output_per_1m

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        inp, out = self.price(model)
        return (prompt_tokens * inp + completion_tokens * out) / 1e6
