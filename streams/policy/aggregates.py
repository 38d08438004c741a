"""Pure aggregation helpers for the metering agent: window keys, mergeable totals, derived figures, seen ids.

Everything here is JSON-serialisable (``to_dict``/``from_dict``) so it can live in a changelog-backed Faust table,
and mergeable, so per-partition totals can be combined into a global view. Times are epoch ms; durations ms.

API
- ``window_start(ts_ms, size_ms=60_000) -> int``: start of the tumbling window holding ``ts_ms``
- ``window_key(dim, value, ts_ms, size_ms=60_000) -> str``: e.g. ``"tenant:acme:1700000040000"``
- ``group_keys(usage, dims=DIMENSIONS) -> list[tuple[str, str]]``: the (dimension, value) pairs to aggregate under
- ``LatencyHistogram``: ``add(ms)``, ``merge(other)``, ``percentile(q)`` (≤ ~5 % relative error), ``to_dict``
- ``Totals``: ``add(...)``, ``add_usage(dict)``, ``merge(other)``; ``cost_per_1k_requests()``,
  ``cache_hit_rate()``, ``savings_usd()``, ``savings_ratio()``, ``latency_p50()``, ``latency_p95()``,
  ``utilization(wall_ms, slots=1)``, ``summary(wall_ms=None)``; ``to_dict``/``from_dict``
- ``merge(a, b) -> Totals``: a new total of both
- ``SeenIds(max_size=10_000, ttl_ms=None)``: bounded "have I counted this id?" set; ``add(id, now) -> bool``
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

DEFAULT_WINDOW_MS: Final = 60_000
DIMENSIONS: Final = ("session", "tenant", "tier", "feature")
_GROWTH: Final = 1.1  # bucket i holds latencies in (1.1**(i-1), 1.1**i] ms: ≤ ~4.9 % error at the midpoint
_MAX_BUCKET: Final = 200  # 1.1**200 ms ≈ 6 days: anything longer lands in the last bucket
# Shared by every total without cache hits (most sessions): one empty dict each was 64 bytes per running total.
_NO_HITS: Final[Mapping[str, int]] = MappingProxyType({})


def window_start(ts_ms: int, size_ms: int = DEFAULT_WINDOW_MS) -> int:
    """Start (epoch ms) of the tumbling window of ``size_ms`` that contains ``ts_ms``."""
    if size_ms <= 0:
        raise ValueError("size_ms must be positive")
    return int(ts_ms) - int(ts_ms) % size_ms


def window_key(dim: str, value: str, ts_ms: int, size_ms: int = DEFAULT_WINDOW_MS) -> str:
    return f"{dim}:{value}:{window_start(ts_ms, size_ms)}"


def group_keys(usage: Mapping[str, Any], dims: Iterable[str] = DIMENSIONS) -> list[tuple[str, str]]:
    """The (dimension, value) pairs a usage dict counts under; absent or empty values are skipped."""
    return [(d, str(usage[d])) for d in dims if usage.get(d) not in (None, "")]


@dataclass(slots=True, eq=False)  # one per running total: a session per request makes millions over a horizon
class LatencyHistogram:
    """Fixed log-spaced buckets: exact merges, bounded size (≤ 201 buckets), percentiles within ~5 %.

    ``counts`` stays None while every sample lies in one bucket, ``min_ms``'s: a total of one request (a session
    per request) then holds no dict, which was ~180 of its ~750 bytes. ``buckets()`` is the counts either way."""

    counts: dict[int, int] | None = None
    n: int = 0
    min_ms: float = math.inf
    max_ms: float = 0.0

    @staticmethod
    def bucket(ms: float) -> int:
        if ms <= 1.0:
            return 0
        return min(_MAX_BUCKET, math.ceil(math.log(ms) / math.log(_GROWTH) - 1e-9))

    def buckets(self) -> dict[int, int]:
        """Bucket -> count (the stored dict itself once there is one: read it, do not change it)."""
        if self.counts is not None:
            return self.counts
        return {self.bucket(self.min_ms): self.n} if self.n else {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        same = (self.n, self.min_ms, self.max_ms) == (other.n, other.min_ms, other.max_ms)
        return same and self.buckets() == other.buckets()

    def add(self, ms: float, count: int = 1) -> None:
        if not math.isfinite(ms):
            return  # a bogus sample must not poison the table's JSON
        ms = max(0.0, float(ms))
        b = self.bucket(ms)
        if self.counts is None and self.n and b != self.bucket(self.min_ms):
            self.counts = self.buckets()
        if self.counts is not None:
            self.counts[b] = self.counts.get(b, 0) + count
        self.n += count
        self.min_ms = min(self.min_ms, ms)
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: LatencyHistogram) -> None:
        if other.n:
            one = self.counts is None and other.counts is None
            if not (one and (not self.n or self.bucket(self.min_ms) == self.bucket(other.min_ms))):
                counts = self.counts = dict(self.buckets()) if self.counts is None else self.counts
                for b, c in other.buckets().items():
                    counts[b] = counts.get(b, 0) + c
        self.n += other.n
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0 < q ≤ 1) as its bucket's geometric midpoint, clamped to the observed range."""
        if not 0.0 < q <= 1.0:
            raise ValueError("q must be in (0, 1]")
        if self.n == 0:
            return None
        rank = math.ceil(q * self.n)
        seen, counts = 0, self.buckets()
        for b in sorted(counts):
            seen += counts[b]
            if seen >= rank:
                if b == _MAX_BUCKET:
                    return self.max_ms  # the overflow bucket has no upper bound
                mid = 0.5 if b == 0 else _GROWTH ** (b - 0.5)
                return min(max(mid, self.min_ms), self.max_ms)
        return self.max_ms  # pragma: no cover - counts always sum to n

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": {str(b): c for b, c in sorted(self.buckets().items())},
            "n": self.n,
            "min_ms": None if self.n == 0 else self.min_ms,
            "max_ms": self.max_ms,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyHistogram:
        mn = d.get("min_ms")
        out = cls(
            counts={int(b): int(c) for b, c in (d.get("counts") or {}).items()},
            n=int(d.get("n", 0)),
            min_ms=math.inf if mn is None else float(mn),
            max_ms=float(d.get("max_ms", 0.0)),
        )
        if out.counts == ({out.bucket(out.min_ms): out.n} if out.n else {}):
            out.counts = None  # the compact form, as ``add`` would have left it
        return out


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


@dataclass(slots=True)
class Totals:
    """Running totals for one key (a session, tenant, tier or feature, usually within one window)."""

    requests: int = 0
    errors: int = 0  # status other than "ok"
    attempts: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: Mapping[str, int] = field(default_factory=lambda: _NO_HITS)  # kind -> count (a dict once any)
    busy_ms: float = 0.0  # time a local worker spent computing, for utilization
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(
        self,
        *,
        cost_usd: float = 0.0,
        baseline_cost_usd: float = 0.0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_ms: float | None = None,
        cache: str | None = None,
        status: str = "ok",
        attempts: int = 1,
        busy_ms: float = 0.0,
    ) -> None:
        """Count one request. The caller dedups by request id first (see :class:`SeenIds`)."""
        self.requests += 1
        self.errors += status != "ok"
        self.attempts += attempts
        self.cost_usd += cost_usd
        self.baseline_cost_usd += baseline_cost_usd
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if cache:
            hits = self.cache_hits if isinstance(self.cache_hits, dict) else {}
            hits[cache] = hits.get(cache, 0) + 1
            self.cache_hits = hits
        self.busy_ms += busy_ms
        if latency_ms is not None:
            self.latency.add(latency_ms)

    def add_usage(self, usage: Mapping[str, Any], *, busy_ms: float = 0.0) -> None:
        """Count a ``UsageRecordV1.to_dict()``. Busy time is the caller's call (e.g. latency of local-tier work)."""
        self.add(
            cost_usd=float(usage.get("cost_usd") or 0.0),
            baseline_cost_usd=float(usage.get("baseline_cost_usd") or 0.0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_ms=None if usage.get("latency_ms") is None else float(usage["latency_ms"]),
            cache=usage.get("cache"),
            status=str(usage.get("status") or "ok"),
            attempts=int(usage.get("attempts", 1)),
            busy_ms=busy_ms,
        )

    def merge(self, other: Totals) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.attempts += other.attempts
        self.cost_usd += other.cost_usd
        self.baseline_cost_usd += other.baseline_cost_usd
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.cache_hits:
            hits = self.cache_hits if isinstance(self.cache_hits, dict) else {}
            for kind, c in other.cache_hits.items():
                hits[kind] = hits.get(kind, 0) + c
            self.cache_hits = hits
        self.busy_ms += other.busy_ms
        self.latency.merge(other.latency)

    # Derived figures: None where the denominator is zero.
    def cost_per_1k_requests(self) -> float | None:
        return _ratio(self.cost_usd * 1000, self.requests)

    def cache_hit_rate(self) -> float | None:
        return _ratio(sum(self.cache_hits.values()), self.requests)

    def savings_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd

    def savings_ratio(self) -> float | None:
        """Share of the baseline cost avoided: 1 - cost/baseline (0.8 = paid a fifth of the baseline)."""
        return _ratio(self.savings_usd(), self.baseline_cost_usd)

    def latency_p50(self) -> float | None:
        return self.latency.percentile(0.5)

    def latency_p95(self) -> float | None:
        return self.latency.percentile(0.95)

    def utilization(self, wall_ms: float, slots: int = 1) -> float | None:
        """Busy ms over available ms (``wall_ms`` × ``slots`` parallel workers)."""
        return _ratio(self.busy_ms, wall_ms * slots)

    def summary(self, wall_ms: float | None = None, slots: int = 1) -> dict[str, Any]:
        """Totals plus derived figures, for a ``sluice.costs`` message."""
        out: dict[str, Any] = {k: v for k, v in self.to_dict().items() if k != "latency"}
        out.update(
            cost_per_1k_requests=self.cost_per_1k_requests(),
            cache_hit_rate=self.cache_hit_rate(),
            savings_usd=self.savings_usd(),
            savings_ratio=self.savings_ratio(),
            latency_p50_ms=self.latency_p50(),
            latency_p95_ms=self.latency_p95(),
            utilization=None if wall_ms is None else self.utilization(wall_ms, slots),
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "attempts": self.attempts,
            "cost_usd": self.cost_usd,
            "baseline_cost_usd": self.baseline_cost_usd,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hits": dict(self.cache_hits),
            "busy_ms": self.busy_ms,
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Totals:
        return cls(
            requests=int(d.get("requests", 0)),
            errors=int(d.get("errors", 0)),
            attempts=int(d.get("attempts", 0)),
            cost_usd=float(d.get("cost_usd", 0.0)),
            baseline_cost_usd=float(d.get("baseline_cost_usd", 0.0)),
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            completion_tokens=int(d.get("completion_tokens", 0)),
            cache_hits={str(k): int(v) for k, v in (d.get("cache_hits") or {}).items()} or _NO_HITS,
            busy_ms=float(d.get("busy_ms", 0.0)),
            latency=LatencyHistogram.from_dict(d.get("latency") or {}),
        )


def merge(a: Totals, b: Totals) -> Totals:
    """A new :class:`Totals` of both (neither argument changes)."""
    out = Totals.from_dict(a.to_dict())
    out.merge(b)
    return out
