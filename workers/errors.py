"""Errors raised by adapters (models, providers, stores); each says whether a retry may succeed."""

from __future__ import annotations


class SluiceError(Exception):
    """Base error. ``retriable`` tells callers whether trying again (maybe elsewhere) can help."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ModelError(SluiceError):
    """A local model failed to load or generate."""


class ModelCrashed(ModelError):
    """The model's process died (e.g. a native segfault); a fresh process may succeed."""

    retriable = True


class ModelOverloaded(ModelError):
    """Every model slot is busy and the wait bound passed."""

    retriable = True


class ConfigError(SluiceError):
    """Settings or files that cannot work; fixing them needs a person."""
