"""Runaway-loop circuit breaker per session: stop an agent stuck in a loop before it burns the budget.

Pure (stdlib + numpy), no clock reads: every call takes ``now`` (epoch ms). State is a JSON-able
:class:`SessionState` meant for a Faust table keyed by session, with a single writer (the partition owner).

Trips (closed → open, with a reason) on
- ``"rate"``: more than ``max_requests`` requests within ``rate_window_ms`` (the request that exceeds is rejected);
- ``"cost"``: more than ``max_cost_usd`` spent within ``cost_window_ms`` (1 s buckets: ≤ 1 bucket of slack);
- ``"repeat"``: ``max_repeats`` near-identical prompts in a row: same normalised prompt hash (:func:`prompt_hash`),
  or cosine similarity of consecutive prompt embeddings ≥ ``similarity`` (the K-th one is rejected);
- ``"probe_failed"`` when the half-open probe fails.
OPEN --(cooldown)--> HALF_OPEN: exactly one probe request passes (another one only after ``probe_timeout_ms``)
HALF_OPEN --probe ok--> CLOSED;  --probe failed or a cost trip--> OPEN again.
The cooldown doubles (``backoff``) for each trip within ``calm_ms`` of the previous one, up to ``max_cooldown_ms``.
A trip resets the windows and the repeat run, so a closed breaker starts afresh.

API (each returns a :class:`Decision` ``(allow, reason, transition, probe)`` and mutates ``state`` in place)
- ``observe_request(state, now, prompt_hash, vector=None, *, request_id=None, config=DEFAULT_CONFIG)``: call
  before admitting a request; ``allow`` False → reject it with ``reason``. ``probe`` True → this is the probe.
- ``observe_cost(state, now, cost_usd, *, config=...)``: call with each settled cost.
- ``probe_result(state, now, ok, *, request_id=None, config=...)``: the probe's outcome (ignored if stale).
- ``tick(state, now, *, config=...) -> Transition | None``: publish open → half_open without waiting for a request.
- ``force_open(state, now, reason, *, until_ms=None, config=...)``: an external trip (operator, other stage).
Every state change yields a :class:`Transition`; ``Transition.to_event()`` is the small dict for the compacted
``sluice.control`` topic (key = session): ``{session, tenant, state, reason, at_ms, until_ms}``.
``control_allows(event, now)`` is the check for readers of that topic that do not own the state: it rejects
only while an ``open`` event's ``until_ms`` lies ahead (the owner enforces the single half-open probe).

Wiring (one writer per state): the admit stage owns the session on ``sluice.requests`` and calls
``observe_request`` before reserving budget; whoever settles costs for the session calls ``observe_cost`` on the
same state only if it is the same partition owner. Otherwise give the meter its own state (cost trips only) and let
admit also check ``control_allows`` on the meter's latest event; two writers on one control key would overwrite each
other, so key the second one e.g. ``"<session>#cost"``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Final

import numpy as np

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    max_requests: int = 30
    rate_window_ms: int = 10_000
    max_cost_usd: float = 1.0
    cost_window_ms: int = 60_000
    cost_bucket_ms: int = 1_000
    max_repeats: int = 8
    similarity: float = 0.98
    cooldown_ms: int = 30_000
    backoff: float = 2.0
    max_cooldown_ms: int = 600_000
    calm_ms: int = 600_000
    probe_timeout_ms: int = 60_000
    keep_vectors: bool = True  # False: only exact hashes count as repeats (smaller state)

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_repeats < 2:
            raise ValueError("max_requests must be >= 1 and max_repeats >= 2")
        if min(self.rate_window_ms, self.cost_window_ms, self.cost_bucket_ms, self.probe_timeout_ms) <= 0:
            raise ValueError("windows, bucket and probe timeout must be positive")
        if self.cooldown_ms < 0 or self.max_cooldown_ms < self.cooldown_ms or self.backoff < 1.0:
            raise ValueError("need 0 <= cooldown_ms <= max_cooldown_ms and backoff >= 1")
        if not 0.0 < self.similarity <= 1.0 or self.max_cost_usd < 0:
            raise ValueError("similarity must be in (0, 1] and max_cost_usd not negative")


SessionBreakerConfig = BreakerConfig
DEFAULT_CONFIG: Final = BreakerConfig()


@dataclass
class SessionState:
    """One session's breaker; ``to_dict``/``from_dict`` for a table. Fields are internal to this module."""

    session: str
    tenant: str = ""
    state: str = CLOSED
    reason: str | None = None
    opened_at: int | None = None
    until_ms: int | None = None
    streak: int = 0  # trips in a row, each within calm_ms of the last: drives the cooldown backoff
    last_trip_at: int | None = None
    trips: int = 0
    probe_id: str | None = None
    probe_at: int | None = None
    req_times: list[int] = field(default_factory=list)
    cost_buckets: list[list[float]] = field(default_factory=list)  # [bucket start ms, usd]
    last_hash: str | None = None
    last_vector: list[float] | None = None
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A copy the state can be rebuilt from (``asdict`` recursion is slower, and this runs twice per request
        in the admit stage). Sequences become tuples: a dict holding only numbers, strings and tuples of them is
        dropped from the garbage collector's tracking, so a table of a million idle sessions costs its full
        collections nothing (with lists, every row was walked by each one: 100-190 ms pauses every few seconds
        in bench/pipeline_bench.py)."""
        d: dict[str, Any] = {"session": self.session, "tenant": self.tenant}
        for name, default in _STATE_DEFAULTS:  # fields at their default are left out: a quiet row is mostly those
            value = getattr(self, name)
            if value != default:
                d[name] = value
        if self.req_times:
            d["req_times"] = tuple(self.req_times)
        if self.cost_buckets:
            d["cost_buckets"] = tuple(tuple(b) for b in self.cost_buckets)
        if self.last_vector is not None:
            d["last_vector"] = tuple(self.last_vector)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionState:
        known = cls.__dataclass_fields__
        state = cls(**{k: v for k, v in d.items() if k in known})
        state.req_times = list(state.req_times)
        state.cost_buckets = [list(b) for b in state.cost_buckets]  # updated in place (observe_cost)
        state.last_vector = None if state.last_vector is None else list(state.last_vector)
        return state


# Plain fields with their defaults, left out of a row at their default (from_dict restores the dataclass defaults).
_STATE_DEFAULTS: Final = tuple(
    (f.name, f.default)
    for f in fields(SessionState)
    if f.default is not MISSING and f.name not in ("tenant", "last_vector")
)


@dataclass(frozen=True)
class Transition:
    session: str
    tenant: str
    state: str
    reason: str | None
    at_ms: int
    until_ms: int | None

    def to_event(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """``allow``: admit this request (for non-request calls: the session is not open). ``probe``: it is the probe."""

    allow: bool
    reason: str | None = None
    transition: Transition | None = None
    probe: bool = False


_WS = re.compile(r"\s+")


def prompt_hash(text: str) -> str:
    """Hash of a prompt after case-folding and collapsing whitespace: trivially varied loops still match."""
    norm = _WS.sub(" ", text).strip().casefold()
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).hexdigest()


def cosine(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        return 0.0
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 0.0 if norm == 0.0 else float(np.dot(x, y) / norm)


def control_allows(event: Mapping[str, Any] | None, now: int) -> bool:
    """For readers of ``sluice.control``: False while the latest event is ``open`` and not yet expired."""
    if not event or event.get("state") != OPEN:
        return True
    until = event.get("until_ms")
    return until is not None and now >= int(until)


def _transition(st: SessionState, now: int) -> Transition:
    return Transition(st.session, st.tenant, st.state, st.reason, now, st.until_ms if st.state == OPEN else None)


def _reset_windows(st: SessionState) -> None:
    st.req_times, st.cost_buckets = [], []
    st.last_hash, st.last_vector, st.repeats = None, None, 0


def _trip(st: SessionState, now: int, reason: str, cfg: BreakerConfig, until_ms: int | None = None) -> Transition:
    recent = st.last_trip_at is not None and now - st.last_trip_at <= cfg.calm_ms
    st.streak = st.streak + 1 if recent else 1
    if until_ms is None:
        cooldown = min(cfg.cooldown_ms * cfg.backoff ** (st.streak - 1), cfg.max_cooldown_ms)
        until_ms = now + int(cooldown)
    st.state, st.reason, st.opened_at, st.until_ms = OPEN, reason, now, until_ms
    st.last_trip_at, st.trips = now, st.trips + 1
    st.probe_id, st.probe_at = None, None
    _reset_windows(st)
    return _transition(st, now)


def tick(state: SessionState, now: int, *, config: BreakerConfig = DEFAULT_CONFIG) -> Transition | None:
    """Move open → half_open once the cooldown is over; None if nothing changed."""
    if state.state == OPEN and state.until_ms is not None and now >= state.until_ms:
        state.state, state.probe_id, state.probe_at = HALF_OPEN, None, None
        return _transition(state, now)
    return None


def _record(st: SessionState, now: int, phash: str | None, vector: Any, cfg: BreakerConfig) -> str | None:
    """Add a request to the rate window and the repeat run; the trip reason, if any."""
    horizon = now - cfg.rate_window_ms
    recent = [t for t in st.req_times if t > horizon][-cfg.max_requests :]
    st.req_times = [*recent, now]
    vec = None if vector is None or not cfg.keep_vectors else np.asarray(vector, dtype=np.float32)
    same = phash is not None and phash == st.last_hash
    if not same and vec is not None and st.last_vector is not None:
        same = cosine(vec, st.last_vector) >= cfg.similarity
    st.repeats = st.repeats + 1 if same else 1
    st.last_hash = phash
    st.last_vector = None if vec is None else [float(v) for v in vec]
    if st.repeats >= cfg.max_repeats:
        return "repeat"
    if len(st.req_times) > cfg.max_requests:
        return "rate"
    return None


def observe_request(
    state: SessionState,
    now: int,
    prompt_hash: str | None,
    vector: Sequence[float] | np.ndarray | None = None,
    *,
    request_id: str | None = None,
    config: BreakerConfig = DEFAULT_CONFIG,
) -> Decision:
    """Decide on one incoming request of this session, recording it while closed (or as the probe)."""
    moved = tick(state, now, config=config)
    if state.state == OPEN:
        return Decision(False, state.reason, moved)
    if state.state == HALF_OPEN:
        if state.probe_at is not None and now - state.probe_at < config.probe_timeout_ms:
            return Decision(False, "probing", moved)
        state.probe_at, state.probe_id = now, request_id
        _record(state, now, prompt_hash, vector, config)  # the run restarts here; the probe itself never trips
        return Decision(True, None, moved, probe=True)
    reason = _record(state, now, prompt_hash, vector, config)
    if reason is not None:
        return Decision(False, reason, _trip(state, now, reason, config))
    return Decision(True)


def observe_cost(state: SessionState, now: int, cost_usd: float, *, config: BreakerConfig = DEFAULT_CONFIG) -> Decision:
    """Add a settled cost to the window (ignored while open: that spend already tripped it) and check the limit."""
    moved = tick(state, now, config=config)
    if state.state == OPEN:
        return Decision(False, state.reason, moved)
    start = now - now % config.cost_bucket_ms
    horizon = now - config.cost_window_ms
    buckets = [b for b in state.cost_buckets if b[0] + config.cost_bucket_ms > horizon]
    if buckets and buckets[-1][0] == start:
        buckets[-1][1] += float(cost_usd)
    elif cost_usd:  # a free answer (a cache hit) adds nothing to the window: no empty bucket in the row
        buckets.append([start, float(cost_usd)])
    state.cost_buckets = buckets
    if sum(b[1] for b in buckets) > config.max_cost_usd:
        return Decision(False, "cost", _trip(state, now, "cost", config))
    return Decision(True, None, moved)


def probe_result(
    state: SessionState, now: int, ok: bool, *, request_id: str | None = None, config: BreakerConfig = DEFAULT_CONFIG
) -> Decision:
    """Close on a successful probe, re-open on a failed one; results for no (or another) probe are ignored."""
    moved = tick(state, now, config=config)
    stale = state.state != HALF_OPEN or state.probe_at is None
    if stale or (request_id is not None and state.probe_id is not None and request_id != state.probe_id):
        return Decision(state.state != OPEN, None, moved)
    if not ok:
        return Decision(False, "probe_failed", _trip(state, now, "probe_failed", config))
    state.state, state.reason, state.until_ms = CLOSED, None, None
    state.probe_id, state.probe_at = None, None
    return Decision(True, None, _transition(state, now))


def force_open(
    state: SessionState,
    now: int,
    reason: str,
    *,
    until_ms: int | None = None,
    config: BreakerConfig = DEFAULT_CONFIG,
) -> Transition:
    """Open the breaker from outside (operator, another stage's trip); ``until_ms`` None: the usual cooldown."""
    return _trip(state, now, reason, config, until_ms)
