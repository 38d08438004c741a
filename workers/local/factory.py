"""Builds the configured local model backend from settings (the only place that picks an adapter)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from workers.errors import ConfigError
from workers.local.model_files import model_name_for, resolve_model_path
from workers.local.pool import ModelPool
from workers.ports import LocalModel

if TYPE_CHECKING:
    from streams.settings import Settings


def _build(settings: Settings) -> LocalModel:
    path = resolve_model_path(settings.local_model_path)
    name = model_name_for(path)
    if settings.local_backend == "llama_cpp":
        from workers.local.llama_cpp_model import LlamaCppModel

        return LlamaCppModel(
            path,
            name=name,
            n_ctx=settings.local_n_ctx,
            threads=settings.local_threads,
            n_gpu_layers=settings.local_n_gpu_layers,
            seed=settings.local_seed,
            temperature=settings.local_temperature,
        )
    if settings.local_backend == "ctransformers":
        from workers.local.ctransformers_model import CTransformersModel

        return CTransformersModel(
            str(path),
            model_type=settings.local_model_type or "llama",
            threads=settings.local_threads,
            seed=settings.local_seed,
            name=name,
        )
    raise ConfigError(f"unknown SLUICE_LOCAL_BACKEND {settings.local_backend!r} (llama_cpp | ctransformers)")


def build_pool(settings: Settings) -> ModelPool:
    """A pool of ``settings.local_instances`` instances of the configured backend (loaded on ``start``)."""
    return ModelPool(partial(_build, settings), size=settings.local_instances)
