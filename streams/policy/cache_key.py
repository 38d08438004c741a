"""The dedup key: which requests must get the same answer.

It hashes the tenant (a key never crosses tenants), the parameters that change the answer, and the whole
normalized conversation (multi-turn requests key on their context, not the last message alone). The same
key partitions the tier topics, so one partition owns each key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import orjson

from schemas.records import Message

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Collapse whitespace and trim; case is kept because it can change an answer (code, names)."""
    return _SPACES.sub(" ", text).strip()


# A greeting before a request and thanks after it ("Hi! How do I reset my password? Thanks") ask what the bare
# request asks. Only a greeting followed by punctuation is one ("Hello world in Java", "Hello, world" keep it), and
# only thanks after a sentence's end or a comma ("Say thanks" keeps it).
_GREETING = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|greetings|good (?:morning|afternoon|evening))(?: there| all| everyone)?\s*[,!.:;]+"
    r"(?!\s*world\b)\s*)+",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"(?<=[.?!,])\s*(?:thanks|thank you|thx|cheers)(?: (?:so|very) much| a lot| in advance)?[\s.!]*$", re.IGNORECASE
)


def semantic_text(text: str) -> str:
    """What the semantic cache compares (embeds and verifies): the normalized text without a leading greeting or
    trailing thanks, unless nothing else is left. The exact key keeps them (it hashes the text as sent)."""
    text = normalize_text(text)
    core = _GREETING.sub("", text)
    without_thanks = _THANKS.sub("", core)
    if without_thanks != core:
        core = without_thanks.rstrip(" ,")  # "Fix my code, thanks" -> "Fix my code"
    return core or text


def dedup_key(tenant: str, messages: Sequence[Message], params: dict[str, Any]) -> str:
    """Hex SHA-256 of (tenant, answer-changing params, normalized messages)."""
    body = {
        "t": tenant,
        "p": {k: params[k] for k in sorted(params)},
        "m": [[m.role, normalize_text(m.content)] for m in messages],
    }
    return hashlib.sha256(orjson.dumps(body)).hexdigest()
