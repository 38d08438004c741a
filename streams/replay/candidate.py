"""The candidate configuration file of ``sluice replay --config``: a YAML diff over production's settings.

Every section is optional; an absent section is replayed as logged::

    cache:   {enabled: true, threshold: 0.9, min_cosine: 0.8, tenants: {acme: 0.95}, routes: {support-bot: 0.97}}
    router:  {knob: 0.7, local_only_tenants: [bank], spill_backlog: 32}
    tiers_file: candidate-tiers.yaml    # or `tiers:` inline, the SLUICE_TIERS_FILE format (prices, router.knob)
    budgets: {session_soft_usd: 0.5, session_hard_usd: 1.0, tenants: {acme: {budget_hard_usd: 20}}}
    breaker: {enabled: true, max_requests: 30, rate_window_s: 10, max_cost_usd: 1, cost_window_s: 60,
              max_repeats: 8, cooldown_s: 30}

``streams/replay/shadow.py`` turns the same file into the settings and files a shadow pipeline runs with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from streams.policy import session_breaker as breaker
from streams.policy.replay import Candidate
from streams.settings import Settings
from streams.tiers import DEFAULT_TIERS_PATH, TierConfig, load_tiers, parse_tiers
from workers.errors import ConfigError

SECTIONS = ("cache", "router", "tiers", "tiers_file", "budgets", "breaker")
BREAKER_FIELDS = {
    "max_requests": ("max_requests", 1),
    "rate_window_s": ("rate_window_ms", 1000),
    "max_cost_usd": ("max_cost_usd", None),
    "cost_window_s": ("cost_window_ms", 1000),
    "max_repeats": ("max_repeats", 1),
    "cooldown_s": ("cooldown_ms", 1000),
}


def read_doc(path: str | Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"candidate config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"candidate config {path} must hold a mapping")
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"candidate config {path}: unknown section(s) {', '.join(unknown)}")
    return doc


def _section(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"candidate config: {name} must be a mapping")
    return value


def _tiers(doc: dict[str, Any], base: Path) -> TierConfig | None:
    if doc.get("tiers_file"):
        path = Path(str(doc["tiers_file"]))
        return load_tiers(path if path.is_absolute() else base / path)
    if doc.get("tiers") is not None:
        inline = doc["tiers"]
        return parse_tiers(inline if isinstance(inline, dict) and "tiers" in inline else {"tiers": inline})
    return None


def _optional(value: Any) -> float | None:
    return None if value is None or float(value) < 0 else float(value)


def load_candidate(path: str | Path, settings: Settings) -> Candidate:
    """The candidate, with production's values (from ``settings``) wherever the file is silent."""
    from streams.stages.admit import load_tenant_limits
    from streams.stages.cache_setup import load_policy
    from streams.stages.guard import breaker_config

    doc = read_doc(path)
    tiers = _tiers(doc, Path(path).resolve().parent)
    production_tiers = load_tiers(settings.tiers_file or DEFAULT_TIERS_PATH)
    cache = load_policy(settings)
    cache_doc = _section(doc, "cache")
    if cache_doc is not None:
        cache = replace(
            cache,
            enabled=bool(cache_doc.get("enabled", cache.enabled)),
            threshold=float(cache_doc.get("threshold", cache.threshold)),
            min_cosine=float(cache_doc.get("min_cosine", cache.min_cosine)),
            tenant_thresholds={str(k): float(v) for k, v in (cache_doc.get("tenants") or {}).items()}
            or cache.tenant_thresholds,
            route_thresholds={str(k): float(v) for k, v in (cache_doc.get("routes") or {}).items()}
            or cache.route_thresholds,
        )
    router = _section(doc, "router") or {}
    knob = router.get("knob", tiers.router_knob if tiers is not None else None)
    local_only = router.get("local_only_tenants")
    if local_only is None:
        local_only = [t.strip() for t in settings.local_only_tenants.split(",") if t.strip()]
    elif isinstance(local_only, str):
        local_only = [t.strip() for t in local_only.split(",") if t.strip()]
    budgets = _section(doc, "budgets")
    _, tenant_budgets = load_tenant_limits(settings)
    session_budget = (_optional(settings.session_budget_soft_usd), _optional(settings.session_budget_hard_usd))
    if budgets is not None:
        session_budget = (
            _optional(budgets.get("session_soft_usd", session_budget[0])),
            _optional(budgets.get("session_hard_usd", session_budget[1])),
        )
        for name, raw in (budgets.get("tenants") or {}).items():
            tenant_budgets[str(name)] = (_optional(raw.get("budget_soft_usd")), _optional(raw.get("budget_hard_usd")))
    breaker_doc = _section(doc, "breaker")
    config: breaker.BreakerConfig | None = breaker_config(settings) if settings.breaker_enabled else None
    if breaker_doc is not None:
        if not breaker_doc.get("enabled", True):
            config = None
        else:
            config = breaker_config(settings)
            changes = {}
            for key, (field_name, scale) in BREAKER_FIELDS.items():
                if key in breaker_doc:
                    value = breaker_doc[key]
                    changes[field_name] = type(getattr(config, field_name))(value * scale if scale else value)
            config = replace(config, **changes)
    return Candidate(
        tiers=tiers or production_tiers,
        cache=cache,
        knob=None if knob is None else float(knob),
        local_only_tenants=frozenset(str(t) for t in local_only),
        spill_backlog=int(router.get("spill_backlog", settings.spill_backlog)),
        session_budget=session_budget,
        tenant_budgets=tenant_budgets,
        breaker=config,
        overhead_tokens=settings.reservation_overhead_tokens,
        cache_changed=cache_doc is not None,
        route_changed=bool(router) or tiers is not None,
        tiers_changed=tiers is not None,
        budget_changed=budgets is not None,
        breaker_changed=breaker_doc is not None,
    )
