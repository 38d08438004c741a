"""llama-cpp-python adapter: the default local backend (GGUF, chat template from the file's metadata)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.records import Message
from workers.errors import ModelError
from workers.ports import Cancelled, Completion, OnText


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
        self._fresh()
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

    def stream(self, messages: Sequence[Message], max_tokens: int, on_text: OnText, cancelled: Cancelled) -> Completion:
        """Like :meth:`generate`, handing each token's text to ``on_text`` as it is sampled.

        llama.cpp's stream carries no usage, so it is counted here to match ``generate`` exactly: the prompt's
        length is what the first sampling step sees (an identity logits processor records it), and each
        streamed chunk is one completion token. Breaking out of the iterator stops generation at once.
        """
        seen: list[int] = []

        def prompt_length(input_ids: Any, scores: Any) -> Any:
            if not seen:
                seen.append(len(input_ids))
            return scores

        produced, parts, finish = 0, [], "stop"
        self._fresh()
        try:
            pieces = self._llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=0,
                stream=True,
                logits_processor=[prompt_length],
            )
            try:
                for piece in pieces:
                    choice = piece["choices"][0]
                    delta = choice.get("delta") or {}
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        break
                    if "content" not in delta:
                        continue  # the opening role-only delta
                    produced += 1
                    text = delta.get("content") or ""
                    if text:
                        parts.append(text)
                        on_text(text)
                    if cancelled():
                        finish = "cancelled"
                        break
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()  # stops llama.cpp's generator (no more tokens are sampled)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        return Completion(
            text="".join(parts),
            prompt_tokens=seen[0] if seen else 0,
            completion_tokens=produced,
            model=self.name,
            finish_reason=finish,
        )

    def _fresh(self) -> None:
        """Evaluate every prompt from the start. llama-cpp-python otherwise reuses the previous call's KV prefix,
        and a prompt evaluated in a different batch split samples different text at temperature 0: the same
        request must get the same answer whatever ran before it (cache, replay and streaming rely on it)."""
        self._llm.reset()

    def close(self) -> None:
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
