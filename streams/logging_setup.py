"""Log redaction (``SLUICE_LOG_REDACT``, on by default): API keys, bearer tokens, passwords and prompt text never
reach a log line, whichever library wrote it.

A :class:`RedactionFilter` scrubs each record: the formatted message, the exception text and the stack are
rewritten with known secret values (keys from the environment, the SASL password, the Qdrant key) and the
shapes of secrets (``Bearer …``, ``sk-…`` keys, ``api_key=…``/``password: …`` pairs, ``?key=…`` in URLs) replaced
by ``[redacted]``, and the values of prompt-bearing fields (``prompt``, ``content``, ``messages``, ``text``,
``system``, ``original``) in JSON, dict or dataclass form blanked. :func:`install` applies it in the log-record
factory, not on a handler: Faust/mode replace the root handlers when a worker starts, and a factory sees every
record from every logger before any handler or formatter does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from streams.settings import Settings, secret_env_values

REDACTED = "[redacted]"
_MIN_SECRET_CHARS = 6  # shorter "secrets" (e.g. "1", "true") would blank ordinary words

# Secret shapes. Each pattern keeps its prefix (group 1) and replaces the rest.
_SHAPES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)\b((?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"()\b(?:sk|pk|rk)-[A-Za-z0-9_-]{6,}"),  # OpenAI/Anthropic-style keys (sk-, sk-ant-, sk-proj-)
    re.compile(r"()\b(?:AIza[0-9A-Za-z_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})"),
    re.compile(r"(?i)([?&](?:key|api[_-]?key|token|access_token|sig|signature|password)=)[^&\s\"'#]+"),
)
# ``name: value`` / ``"name": "value"`` / ``name=value`` pairs; the value is blanked when the name looks secret.
# Names are bounded and start after a non-name character, so matching stays linear on hostile text.
_PAIR = re.compile(r"""(?<![\w.-])(["']?)([\w.-]{1,64})\1(\s{0,8}[:=]\s{0,8}["']?)([^\s"',;&})\]]{1,4096})""")
_SECRET_NAME = re.compile(
    r"(?i)api[_-]?key|apikey|secret|password|passwd|credential|authorization|auth[_-]?token|access[_-]?token"
)
# Prompt-bearing fields: "prompt": "...", 'content': '...', content='...' (a dataclass repr), prompt=... up to
# the closing quote (escapes honoured) or the end of a truncated line.
_FIELDS = r"prompt|content|messages|text|system|original|completion|input"
# The value alternatives never overlap (an escape, or one plain character), so a value without its closing quote
# costs one linear scan; a newline or the end of the text closes a truncated value.
_CONTENT = re.compile(rf"""(["']?)\b({_FIELDS})\1(\s*[:=]\s*)(["'])((?:\\.|(?!\4)[^\\\n])*)(\4|(?=\n)|\Z)""")
_CONTENT_LIST = re.compile(rf"""(["']?)\b(?:{_FIELDS})\1\s*[:=]\s*\[""")


class Redactor:
    """Scrubs text: literal secret values first (exact), then secret shapes, then prompt-bearing fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        found = {s.strip() for s in secrets if s and len(s.strip()) >= _MIN_SECRET_CHARS}
        self.secrets = tuple(sorted(found | set(self.secrets), key=len, reverse=True))  # longest first

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _SHAPES:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        text = _PAIR.sub(_pair, text)
        text = _CONTENT.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{REDACTED}{m[6]}", text)
        return _scrub_lists(text)


def _pair(m: re.Match[str]) -> str:
    value = m[4]
    if not _SECRET_NAME.search(m[2]) or value.startswith(REDACTED) or value.lower() in ("bearer", "basic"):
        return m[0]
    return f"{m[1]}{m[2]}{m[1]}{m[3]}{REDACTED}"


def _scrub_lists(text: str) -> str:
    """``messages=[...]`` / ``"messages": [...]``: blank the whole bracketed list (contents may be unquoted)."""
    out, pos = [], 0
    for match in _CONTENT_LIST.finditer(text):
        if match.start() < pos:
            continue
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"[": 1, "]": -1}.get(text[end], 0)
            end += 1
        out.append(text[pos : match.end()] + REDACTED + ("]" if depth == 0 else ""))
        pos = end
    out.append(text[pos:])
    return "".join(out)


class RedactionFilter(logging.Filter):
    """Rewrites a record in place (message, exception text, stack) and always lets it through."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "sluice_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it later; scrub what there is
            message = str(record.msg)
        # args = (): mode's formatter turns None into (None,) and would %-format the scrubbed text again.
        record.msg, record.args = self.redactor.scrub(message), ()
        if record.exc_info:
            text = record.exc_text or self._formatter.formatException(record.exc_info)
            record.exc_text, record.exc_info = self.redactor.scrub(text), None  # no formatter re-reads the raw error
        elif record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.scrub(record.stack_info)
        record.sluice_redacted = True
        return True


def settings_secrets(settings: Settings) -> list[str]:
    """Secrets this process knows: the Kafka SASL password, the Qdrant key, secret-named environment variables."""
    return [settings.kafka_sasl_password, settings.qdrant_api_key, *secret_env_values()]


def install(settings: Settings, extra_secrets: Iterable[str] = ()) -> RedactionFilter | None:
    """Scrub every log record created from now on in this process (idempotent); None when redaction is off."""
    if not settings.log_redact:
        return None
    secrets = [*settings_secrets(settings), *extra_secrets]
    current: Any = logging.getLogRecordFactory()
    existing: RedactionFilter | None = getattr(current, "sluice_redaction", None)
    if existing is not None:
        existing.redactor.add_secrets(secrets)
        return existing
    redaction = RedactionFilter(Redactor(secrets))
    make: Callable[..., logging.LogRecord] = current

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        redaction.filter(record)
        return record

    factory.sluice_redaction = redaction  # type: ignore[attr-defined]
    factory.sluice_previous = make  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    return redaction


def uninstall() -> None:
    """Restore the previous record factory (tests)."""
    current: Any = logging.getLogRecordFactory()
    if getattr(current, "sluice_redaction", None) is not None:
        logging.setLogRecordFactory(current.sluice_previous)
