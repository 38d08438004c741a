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


def dedup_key(tenant: str, messages: Sequence[Message], params: dict[str, Any]) -> str:
    """Hex SHA-256 of (tenant, answer-changing params, normalized messages)."""
    body = {
        "t": tenant,
        "p": {k: params[k] for k in sorted(params)},
        "m": [[m.role, normalize_text(m.content)] for m in messages],
    }
    return hashlib.sha256(orjson.dumps(body)).hexdigest()
