"""Commands that run model roles load llama.cpp before numpy (a CUDA build crashed otherwise, see
workers/local/native_order.py); other commands don't load it at all. Each case runs in a fresh interpreter: import
order is process state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from streams.cli import _load_native_first, build_parser
_load_native_first(sys.argv[1:])
build_parser()  # imports the evaluators, and numpy with them
order = list(sys.modules)
# importlib re-inserts a module once it ran: the ctypes module holding the native libraries ran before numpy
first = "llama_cpp.llama_cpp" in order and order.index("llama_cpp.llama_cpp") < order.index("numpy")
print("llama" if "llama_cpp" in order else "none", "numpy" in order, first)
"""


def run_probe(*argv: str, backend: str = "llama_cpp") -> list[str]:
    env = {**os.environ, "SLUICE_LOCAL_BACKEND": backend, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    return out.stdout.split()


def test_model_commands_load_llama_cpp_before_numpy() -> None:
    assert run_probe("worker", "--role", "local") == ["llama", "True", "True"]
    assert run_probe("up") == ["llama", "True", "True"]


def test_other_commands_and_backends_do_not_load_llama_cpp() -> None:
    assert run_probe("report") == ["none", "True", "False"]
    assert run_probe("worker", backend="ctransformers") == ["none", "True", "False"]
