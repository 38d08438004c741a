"""Reading a time range of the retained log: requests by their timestamps, and the decisions about them.

Offsets come from the broker's time index (``offsets_for_times``), so a range in last week's traffic is read
without scanning from the start. Decisions are written after their request, so they are read from the range's
start up to ``grace_ms`` past its end (bounded by the end offsets seen when reading began).
"""

from __future__ import annotations

from typing import Any

from schemas.parse import InvalidMessage, Limits, parse_decision, parse_request
from streams.kafka_clients import assign_all, groupless_consumer, stop_consumer
from streams.policy.replay import Logged
from streams.settings import Settings

Record = tuple[int, bytes | None, bytes]  # (timestamp ms, key, value)
LENIENT = Limits(max_message_bytes=1 << 62, max_prompt_chars=1 << 62)


async def read_range(settings: Settings, topic: str, since_ms: int, until_ms: int) -> list[Record]:
    """Records of ``topic`` with timestamps in [since_ms, until_ms], in each partition's order."""
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        tps = await assign_all(consumer, settings, topic)
        ends = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        pending = set()
        for tp in tps:
            hit = found.get(tp)
            start = hit.offset if hit is not None else ends[tp]
            consumer.seek(tp, start)
            if start < ends[tp]:
                pending.add(tp)
        out: list[Record] = []
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, batch in batches.items():
                for m in batch:
                    if m.timestamp > until_ms or m.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    if m.value is not None:
                        out.append((m.timestamp, m.key, m.value))
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await stop_consumer(consumer)


def assemble(requests: list[Record], decisions: list[Record], tenant: str | None = None) -> list[Logged]:
    """One :class:`Logged` per request id in ``requests`` (the first record of each id; redeliveries repeat),
    with the first decision of each stage about it."""
    logs: dict[str, Logged] = {}
    for ts, _, value in requests:
        try:
            request = parse_request(value, LENIENT)
        except InvalidMessage as exc:
            partial: dict[str, Any] = exc.partial
            rid = exc.request_id
            if rid and rid not in logs and (tenant is None or partial.get("tenant") == tenant):
                logs[rid] = Logged(rid, str(partial.get("tenant") or ""), str(partial.get("session") or ""), ts)
            continue
        if request.id in logs or (tenant is not None and request.tenant != tenant):
            continue
        logs[request.id] = Logged(request.id, request.tenant, request.session, ts, request)
    for _, _, value in decisions:
        try:
            record = parse_decision(value)
        except InvalidMessage:
            continue
        log = logs.get(record.id)
        if log is None:
            continue
        current = log.decisions.get(record.stage)
        # A coalesced waiter's "joined" record is replaced by nothing later; keep the first record per stage.
        if current is None:
            log.decisions[record.stage] = record.to_dict()
    return list(logs.values())


async def load(
    settings: Settings, since_ms: int, until_ms: int, tenant: str | None = None, grace_ms: int = 15 * 60_000
) -> list[Logged]:
    requests = await read_range(settings, settings.topic("requests"), since_ms, until_ms)
    decisions = await read_range(settings, settings.topic("decisions"), since_ms, until_ms + grace_ms)
    return assemble(requests, decisions, tenant)
