"""Chat prompt rendering for local models: the GGUF's own jinja template when it has one, else ChatML.

Templates come from model files, i.e. from outside the code base, so they render in jinja2's sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from schemas.records import Message
from workers.errors import ModelError

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True)
class GGUFChatInfo:
    """What prompt rendering needs from a GGUF: the template and the special tokens' text."""

    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


def render_chatml(messages: Sequence[Message]) -> str:
    """ChatML, the fallback: widely understood by instruction-tuned models that ship no template."""
    turns = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _raise_exception(message: str) -> None:
    # HF templates call raise_exception() to reject conversations they cannot express.
    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    # The same settings as Hugging Face's apply_chat_template, so shipped templates render as intended.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


def render_chat(
    messages: Sequence[Message],
    template: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` as a prompt ending where the assistant's reply starts (HF conventions)."""
    if not template:
        return render_chatml(messages)
    try:
        return str(
            _compile(template).render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        )
    except TemplateError as exc:
        raise ModelError(f"chat template failed to render: {exc}") from exc


def read_gguf_chat_info(path: str | os.PathLike[str]) -> GGUFChatInfo:
    """Read the chat template and BOS/EOS token text from a GGUF's metadata (no tensor data is read)."""
    from gguf import GGUFReader  # deferred: numpy-heavy, only needed where models load

    reader = GGUFReader(path, "r")
    field = reader.get_field(CHAT_TEMPLATE_KEY)
    template = str(field.contents()) if field is not None else None

    def token_text(key: str) -> str:
        id_field, tokens = reader.get_field(key), reader.get_field("tokenizer.ggml.tokens")
        if id_field is None or tokens is None:
            return ""
        token_id = int(id_field.contents())
        return str(tokens.contents(token_id)) if 0 <= token_id < len(tokens.data) else ""

    return GGUFChatInfo(
        template or None, token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id")
    )


def read_gguf_chat_template(path: str | os.PathLike[str]) -> str | None:
    """The GGUF's ``tokenizer.chat_template``, or None when the file has none."""
    return read_gguf_chat_info(path).template
