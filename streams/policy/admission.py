"""Admission decisions on an already-parsed request: limits that a valid record can still break.

Limits are global (settings) with per-tenant overrides (``SLUICE_TENANTS_FILE``): ``max_tokens`` over the cap is
clamped or rejected as the tenant's ``over_limit`` says; a prompt over the tenant's cap is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.records import Request


@dataclass(frozen=True)
class AdmissionLimits:
    max_tokens_limit: int = 1024
    clamp_max_tokens: bool = True  # False: reject over-limit requests instead of clamping
    max_prompt_chars: int | None = None  # None: only the global parse-time limit applies


@dataclass(frozen=True)
class TenantLimits:
    """Global limits plus per-tenant overrides, e.g. ``{acme: {max_tokens: 256, over_limit: reject}}``."""

    default: AdmissionLimits = AdmissionLimits()
    tenants: Mapping[str, AdmissionLimits] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> AdmissionLimits:
        return self.tenants.get(tenant, self.default)

    @classmethod
    def from_mapping(cls, default: AdmissionLimits, doc: Mapping[str, Any]) -> TenantLimits:
        tenants: dict[str, AdmissionLimits] = {}
        for name, raw in (doc.get("tenants") or {}).items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"tenants.{name} must be a mapping")
            over = raw.get("over_limit", "clamp" if default.clamp_max_tokens else "reject")
            if over not in ("clamp", "reject"):
                raise ValueError(f"tenants.{name}.over_limit must be clamp or reject, not {over!r}")
            chars = raw.get("max_prompt_chars", default.max_prompt_chars)
            tenants[str(name)] = replace(
                default,
                max_tokens_limit=int(raw.get("max_tokens", default.max_tokens_limit)),
                clamp_max_tokens=over == "clamp",
                max_prompt_chars=None if chars is None else int(chars),
            )
        return cls(default, tenants)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    max_tokens: int
    reason: str | None = None
    notes: tuple[str, ...] = ()


def admit(request: Request, limits: AdmissionLimits, *, reply_topic_ok: bool = True) -> Admission:
    """Decide whether ``request`` may proceed, and with which ``max_tokens``."""
    if not reply_topic_ok:
        return Admission(False, request.max_tokens, reason="unknown_reply_to")
    if limits.max_prompt_chars is not None:
        chars = sum(len(m.content) for m in request.chat())
        if chars > limits.max_prompt_chars:
            return Admission(False, request.max_tokens, reason="prompt_over_tenant_limit")
    if request.max_tokens > limits.max_tokens_limit:
        if not limits.clamp_max_tokens:
            return Admission(False, request.max_tokens, reason="max_tokens_over_limit")
        return Admission(True, limits.max_tokens_limit, notes=(f"max_tokens clamped to {limits.max_tokens_limit}",))
    return Admission(True, request.max_tokens)
