"""Ports: the small interfaces that adapters implement (one adapter per backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.records import Message


@dataclass(frozen=True)
class Completion:
    """What a model produced for one request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str = "stop"


class LocalModel(Protocol):
    """A local model instance. ``generate`` blocks (native code): call it from an executor only.

    One instance serves one call at a time; pools hold several instances for concurrency.
    """

    name: str

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion: ...

    def close(self) -> None: ...
