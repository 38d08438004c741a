"""Cost model: price a request, size a worst-case budget reservation, and the v1 ``sluice.usage`` record.

Pure (stdlib only). Prices are USD per 1,000,000 tokens, as in ``streams/tiers.py``; anything with
``input_per_1m``/``output_per_1m`` attributes (``Tier``, ``ModelPrice``), a ``(in, out)`` tuple
(``PriceTable.price(model)``) or a :class:`Price` is accepted wherever a price is asked for.

API
- ``price_usd(prices_per_1m_in, prices_per_1m_out, prompt_tokens, completion_tokens) -> float``
- ``as_price(price_like) -> Price``
- ``estimate_prompt_tokens(text_or_chars, chars_per_token=3.0) -> int``: a cautious guess without a tokenizer
- ``estimate_reservation(prompt, max_tokens, price, *, chars_per_token=3.0, overhead_tokens=8) -> float``:
  the worst-case cost to reserve before dispatch. ``prompt`` is either the prompt *text* (str; its tokens are
  estimated from its length) or an already counted *token* number (int, e.g. from ``token_count.count_tokens``).
- ``UsageRecordV1`` (alias ``UsageRecord``): one priced request on ``sluice.usage`` (key: session), with
  ``to_dict()``/``from_dict()`` (JSON-able; ``from_dict`` rejects unknown ``v``) and ``from_response(...)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

USAGE_SCHEMA_VERSION: Final = 1
CACHE_KINDS: Final = frozenset({"exact", "semantic", "coalesced"})
# A cautious chars-per-token for reservations: English averages ~4, code and non-Latin text fewer. Reserving a
# little too much only delays admission near the limit; reserving too little lets spend overshoot the hard limit.
RESERVATION_CHARS_PER_TOKEN: Final = 3.0


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input_per_1m: float
    output_per_1m: float

    def __post_init__(self) -> None:
        if self.input_per_1m < 0 or self.output_per_1m < 0:
            raise ValueError("prices must not be negative")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return price_usd(self.input_per_1m, self.output_per_1m, prompt_tokens, completion_tokens)


def as_price(price: Any) -> Price:
    """Normalise a :class:`Price`, an ``(in, out)`` pair, or an object with ``input_per_1m``/``output_per_1m``."""
    if isinstance(price, Price):
        return price
    if isinstance(price, tuple | list) and len(price) == 2:
        return Price(float(price[0]), float(price[1]))
    if hasattr(price, "input_per_1m") and hasattr(price, "output_per_1m"):
        return Price(float(price.input_per_1m), float(price.output_per_1m))
    raise TypeError(f"not a price: {price!r}")


def price_usd(prices_per_1m_in: float, prices_per_1m_out: float, prompt_tokens: int, completion_tokens: int) -> float:
    """Cost in USD of ``prompt_tokens`` in and ``completion_tokens`` out at per-million prices."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must not be negative")
    if prices_per_1m_in < 0 or prices_per_1m_out < 0:
        raise ValueError("prices must not be negative")
    return (prompt_tokens * prices_per_1m_in + completion_tokens * prices_per_1m_out) / 1_000_000


def estimate_prompt_tokens(text_or_chars: str | int, chars_per_token: float = RESERVATION_CHARS_PER_TOKEN) -> int:
    """Tokens in a prompt of this text (or this many characters), rounded up; no tokenizer needed."""
    if chars_per_token <= 0:
        raise ValueError("chars_per_token must be positive")
    chars = len(text_or_chars) if isinstance(text_or_chars, str) else int(text_or_chars)
    if chars < 0:
        raise ValueError("a character count must not be negative")
    return math.ceil(chars / chars_per_token)


def estimate_reservation(
    prompt: str | int,
    max_tokens: int,
    price: Any,
    *,
    chars_per_token: float = RESERVATION_CHARS_PER_TOKEN,
    overhead_tokens: int = 8,
) -> float:
    """Worst-case USD for one request: the prompt (counted or estimated) plus ``overhead_tokens`` of chat framing
    in, and the full ``max_tokens`` out, at ``price``. Reserving this before dispatch means a settled actual cost
    never exceeds its reservation unless the prompt estimate was low (see ``budget.py`` for why that matters)."""
    if max_tokens < 0 or overhead_tokens < 0:
        raise ValueError("max_tokens and overhead_tokens must not be negative")
    if isinstance(prompt, bool):
        raise TypeError("prompt must be text or a token count")
    prompt_tokens = estimate_prompt_tokens(prompt, chars_per_token) if isinstance(prompt, str) else int(prompt)
    if prompt_tokens < 0:
        raise ValueError("a token count must not be negative")
    return as_price(price).cost(prompt_tokens + overhead_tokens, max_tokens)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class UsageRecordV1:
    """What one request cost, on ``sluice.usage`` (key: session); the meter's only input.

    ``baseline_cost_usd`` is what the same tokens would have cost on the configured baseline (frontier) model, so
    savings = baseline - cost. For a cache hit, ``cost_usd`` is 0 and the baseline prices the tokens the source
    answer consumed. ``attempts`` counts paid model calls (retries included), ``cache`` is None or one of
    ``exact | semantic | coalesced``. Times are epoch ms (``created_at``) and ms (``latency_ms``).
    """

    id: str
    tenant: str
    session: str
    tier: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cache: str | None = None
    feature: str | None = None
    attempts: int = 1
    baseline_cost_usd: float = 0.0
    status: str = "ok"
    created_at: int = 0
    v: int = USAGE_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.cache is not None and self.cache not in CACHE_KINDS:
            raise ValueError(f"unknown cache kind {self.cache!r}")
        if self.prompt_tokens < 0 or self.completion_tokens < 0 or self.attempts < 0:
            raise ValueError("token counts and attempts must not be negative")
        if self.v != USAGE_SCHEMA_VERSION:
            raise ValueError(f"unsupported usage record version {self.v}")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def savings_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UsageRecordV1:
        """Decode a JSON dict; missing optional fields take defaults, an unknown ``v`` raises ``ValueError``."""
        return cls(
            id=str(d["id"]),
            tenant=str(d.get("tenant", "")),
            session=str(d.get("session", "")),
            tier=str(d.get("tier") or "none"),
            model=str(d.get("model") or ""),
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            completion_tokens=int(d.get("completion_tokens") or 0),
            cost_usd=float(d.get("cost_usd") or 0.0),
            latency_ms=float(d.get("latency_ms") or 0.0),
            cache=_opt_str(d.get("cache")),
            feature=_opt_str(d.get("feature")),
            attempts=int(d.get("attempts", 1)),
            baseline_cost_usd=float(d.get("baseline_cost_usd") or 0.0),
            status=str(d.get("status") or "ok"),
            created_at=int(d.get("created_at") or 0),
            v=int(d.get("v", USAGE_SCHEMA_VERSION)),
        )

    @classmethod
    def from_response(
        cls, response: Any, *, baseline_price: Any | None = None, feature: str | None = None, attempts: int = 1
    ) -> UsageRecordV1:
        """Build from a ``schemas.records.Response`` (duck-typed). A cache hit is read from ``route["cache"]``;
        its baseline prices ``saved_usage`` (the tokens the source answer used). No baseline price: baseline 0."""
        route = getattr(response, "route", None) or {}
        cache_info = route.get("cache") if isinstance(route, dict) else None
        kind = cache_info.get("kind") if isinstance(cache_info, dict) else None
        cache = kind if kind in CACHE_KINDS else None
        pt, ct = int(response.usage.prompt_tokens), int(response.usage.completion_tokens)
        if cache is not None and isinstance(cache_info, dict):
            saved = cache_info.get("saved_usage") or {}
            bpt, bct = int(saved.get("prompt_tokens") or 0), int(saved.get("completion_tokens") or 0)
        else:
            bpt, bct = pt, ct
        baseline = as_price(baseline_price).cost(bpt, bct) if baseline_price is not None else 0.0
        return cls(
            id=str(response.id),
            tenant=str(response.tenant),
            session=str(response.session),
            tier=str(response.tier),
            model=str(response.model),
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=float(response.cost_usd),
            latency_ms=float(response.latency_ms),
            cache=cache,
            feature=feature,
            attempts=attempts,
            baseline_cost_usd=baseline,
            status=str(response.status),
            created_at=int(response.created_at),
        )


UsageRecord = UsageRecordV1
