"""Load llama.cpp's native libraries before numpy's in a process that runs local models.

Seen on an H200 (driver 580, Python 3.12, llama-cpp-python 0.3.36 built with CUDA, numpy 2.5.2 and 2.3.5 alike):
with numpy imported first, loading any GGUF segfaulted inside ``llama_model_load_from_file`` (main thread or not,
``n_gpu_layers`` -1 or 0, SmolLM2 or a tiny test model); with ``llama_cpp`` imported first the same loads,
generation and pools ran cleanly. A worker imports numpy early (embedder, verifier, router), so the commands that
run model roles load llama.cpp first. They would import it anyway, so on a CPU build this costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger(__name__)


def load_llama_first(settings: Settings) -> bool:
    """Import ``llama_cpp`` now if the settings use the llama.cpp backend; True when it is loaded after this call."""
    if settings.local_backend != "llama_cpp":
        return "llama_cpp" in sys.modules
    if "llama_cpp" not in sys.modules and "numpy" in sys.modules:
        log.warning("numpy was loaded before llama_cpp; a CUDA build can crash loading a model (see %s)", __name__)
    with contextlib.suppress(ImportError):  # not installed: the model factory says so with a clear error
        import llama_cpp  # noqa: F401

    return "llama_cpp" in sys.modules
