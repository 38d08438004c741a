"""Where unanswered requests are: printed when a fault test times out, so a rare failure in CI says which stage
holds them (and the consumer groups' lag) instead of only "N of M answered"."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from streams.lag import LagReader
from streams.settings import Settings
from tests.integration.topic_reader import read_records

# (logical topic, the role whose consumer group reads it)
STAGES = (
    ("requests", "admit"),
    ("lookup", "cache"),
    ("tier.cloud", "cloud"),
    ("tier.local", "local"),
    ("results", "cache"),
    ("responses", None),
)


def _request_id(record: dict[str, Any]) -> str | None:
    """The request id of a requests/lookup/tier/results/responses record."""
    for path in (("id",), ("request", "id"), ("job", "request", "id")):
        node: Any = record
        for step in path:
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node
    return None


async def where_stuck(settings: Settings, missing: set[str]) -> str:
    """For each stage topic: how many of ``missing`` are on it (partition: offsets), and the lag of the group
    that reads it; a diagnostic string, never raises."""
    if not missing:
        return "nothing missing"
    lines = [f"{len(missing)} unanswered, e.g. {sorted(missing)[:3]}"]
    reader = LagReader(settings)
    try:
        for name, role in STAGES:
            topic = settings.topic(name)
            try:
                records = await read_records(settings, topic)
            except Exception as exc:  # a topic this layout does not use
                lines.append(f"{name}: unreadable ({exc})")
                continue
            where: dict[int, list[int]] = defaultdict(list)
            for partition, offset, value in records:
                if _request_id(value) in missing:
                    where[partition].append(offset)
            spans = {p: f"{len(o)} at {min(o)}..{max(o)}" for p, o in sorted(where.items())}
            line = f"{name}: {sum(len(o) for o in where.values())} of them {spans}"
            if role is not None:
                try:
                    lag = await reader.read(f"{settings.topic_prefix}-{role}", topic)
                    line += f"; {role} lag {dict(Counter(lag.partitions))}"
                except Exception as exc:
                    line += f"; lag unreadable ({exc})"
            lines.append(line)
    except Exception as exc:
        lines.append(f"diagnosis failed: {exc!r}")
    finally:
        await reader.close()
    return "\n".join(lines)
