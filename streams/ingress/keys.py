"""API keys → tenants for the HTTP ingress, from a YAML/JSON file an operator edits (re-read on change).

Format: ``{keys: {KEY: TENANT | {tenant, session?, feature?}}}`` (the ``keys:`` level is optional); ``session``
is the default session for that key's requests, ``feature`` the default ``metadata.feature``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_ID = 256


@dataclass(frozen=True)
class ApiKey:
    tenant: str
    session: str | None = None  # default session for requests that name none
    feature: str | None = None  # default metadata.feature


class KeyMap:
    """API key → tenant, from a YAML/JSON file; re-read when the file changes, so keys rotate without a restart.

    Keys are held as SHA-256 digests: lookups take the same time whatever prefix a guess shares with a real key.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._keys: dict[str, ApiKey] = {}
        self._reload(strict=True)

    @staticmethod
    def parse(doc: Any) -> dict[str, ApiKey]:
        """``{keys: {KEY: TENANT | {tenant, session?, feature?}}}`` (the ``keys:`` level is optional)."""
        raw = doc.get("keys", doc) if isinstance(doc, Mapping) else None
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError("the key file must map API keys to tenants (optionally under 'keys:')")
        out: dict[str, ApiKey] = {}
        for key, value in raw.items():
            entry = {"tenant": value} if isinstance(value, str) else value
            if not isinstance(key, str) or not key or not isinstance(entry, Mapping):
                raise ValueError(f"bad entry for key {str(key)[:6]}…: give a tenant or {{tenant, session}}")
            tenant, session, feature = entry.get("tenant"), entry.get("session"), entry.get("feature")
            if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_ID:
                raise ValueError(f"key {key[:6]}…: tenant must be a non-empty string")
            if session is not None and (not isinstance(session, str) or not session or len(session) > MAX_ID):
                raise ValueError(f"key {key[:6]}…: session must be a non-empty string")
            out[_digest(key)] = ApiKey(tenant, session, feature if isinstance(feature, str) else None)
        return out

    def _reload(self, strict: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._keys = self.parse(yaml.safe_load(self.path.read_text(encoding="utf-8")))
                self._stamp = stamp
        except (OSError, ValueError, yaml.YAMLError) as exc:
            if strict:
                raise ValueError(f"API key file {self.path}: {exc}") from exc  # keep the old keys on a bad edit

    def lookup(self, key: str) -> ApiKey | None:
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self._reload()
        return self._keys.get(_digest(key))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
