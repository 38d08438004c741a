"""What a stage emits: messages to send, built without any Kafka client so stages test without a broker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from schemas.parse import InvalidMessage
from schemas.records import DeadLetter, Response, dumps

DEADLETTER_EXCERPT_BYTES = 16 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """Where a consumed message came from (for dead-letter records)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


def dead_letter(topic: str, raw: bytes, source: Source, error: InvalidMessage) -> Outgoing:
    """A dead-letter record holding a bounded excerpt of the original bytes and the reason."""
    excerpt = raw[:DEADLETTER_EXCERPT_BYTES]
    record = DeadLetter(
        reason=error.reason,
        error=error.detail[:1000],
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        original=excerpt.decode("utf-8", "replace"),
        original_bytes=len(raw),
        truncated=len(raw) > len(excerpt),
        request_id=error.request_id,
        tenant=error.partial.get("tenant"),
    )
    key = error.request_id.encode() if error.request_id else None
    return Outgoing(topic, key, dumps(record))


def response_messages(response: Response, responses_topic: str, reply_to: str | None) -> list[Outgoing]:
    """The response on ``sluice.responses`` (key: id), and on ``reply_to`` when the requester named one."""
    value = dumps(response)
    key = response.id.encode()
    out = [Outgoing(responses_topic, key, value)]
    if reply_to and reply_to != responses_topic:
        out.append(Outgoing(reply_to, key, value))
    return out


def parse_or_dead_letter(
    parse: Callable[[bytes], T], raw: bytes, source: Source, topic: str, counts: Counter[str]
) -> T | list[Outgoing]:
    """The parsed record, or the dead-letter message for it (counted by reason)."""
    try:
        return parse(raw)
    except InvalidMessage as exc:
        counts[f"deadletter:{exc.reason}"] += 1
        return [dead_letter(topic, raw, source, exc)]
