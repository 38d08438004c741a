"""llama-cpp-python adapter: the default local backend (GGUF, chat template from the file's metadata)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.records import Message
from workers.errors import ModelError
from workers.ports import Completion


class LlamaCppModel:
    """One ``llama_cpp.Llama`` instance. Not thread-safe: a pool gives each call its own instance."""

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        n_ctx: int = 2048,
        threads: int = 2,
        n_gpu_layers: int = 0,
        seed: int = 0,
        temperature: float = 0.0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("llama-cpp-python is not installed (see README: setup)") from exc
        self.name = name
        self.temperature = temperature
        try:
            self._llm: Any = Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {model_path}: {exc}") from exc

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion:
        try:
            out = self._llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=0,
            )
        except (ValueError, RuntimeError) as exc:
            # llama.cpp raises ValueError when the prompt exceeds the context window.
            raise ModelError(f"generation failed: {exc}") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model=self.name,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def close(self) -> None:
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
