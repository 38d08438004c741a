"""Admission decisions on an already-parsed request: limits that a valid record can still break."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import Request


@dataclass(frozen=True)
class AdmissionLimits:
    max_tokens_limit: int = 1024
    clamp_max_tokens: bool = True  # False: reject over-limit requests instead of clamping


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
    if request.max_tokens > limits.max_tokens_limit:
        if not limits.clamp_max_tokens:
            return Admission(False, request.max_tokens, reason="max_tokens_over_limit")
        return Admission(True, limits.max_tokens_limit, notes=(f"max_tokens clamped to {limits.max_tokens_limit}",))
    return Admission(True, request.max_tokens)
