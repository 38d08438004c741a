"""The meter stage: one usage record per request id, aggregates that survive a rebuild from the ledger."""

from __future__ import annotations

import orjson

from schemas.records import Response, Usage, dumps
from streams.policy.token_count import count_tokens
from streams.settings import Settings
from streams.stages.meter import MeterStage
from streams.stages.outgoing import Source
from streams.tiers import load_tiers

FRONTIER = load_tiers().frontier
SRC = Source("sx.responses", 0, 0)


class Sent(list):  # type: ignore[type-arg]
    async def __call__(self, outs: list) -> None:  # type: ignore[type-arg]
        self.extend(outs)


async def handle(stage: MeterStage, response: Response) -> list:  # type: ignore[type-arg]
    sent = Sent()
    await stage.handle(dumps(response), SRC, sent)
    return sent


def _stage(ledger: dict | None = None) -> MeterStage:
    return MeterStage(Settings(topic_prefix="sx"), {} if ledger is None else ledger, lambda: FRONTIER, count_tokens)


def _responses() -> list[Response]:
    return [
        Response(
            id="a",
            tenant="acme",
            session="s1",
            status="ok",
            text="hi",
            tier="local",
            model="smol",
            usage=Usage(30, 10),
            latency_ms=120.0,
            route={"feature": "chat", "generation_ms": 100.0},
        ),
        Response(
            id="b",
            tenant="acme",
            session="s1",
            status="ok",
            text="Paris",
            tier="cloud",
            model="gpt-4o",
            usage=Usage(1000, 200),
            cost_usd=0.0045,
            latency_ms=900.0,
            route={"feature": "search", "attempts": 2},
        ),
        Response(
            id="c",
            tenant="acme",
            session="s2",
            status="ok",
            text="Paris",
            tier="cache",
            model="gpt-4o",
            latency_ms=3.0,
            route={"cache": {"kind": "semantic", "saved_usage": {"prompt_tokens": 1000, "completion_tokens": 200}}},
        ),
        Response(id="d", tenant="globex", session="s9", status="rejected", reason="budget"),
        # A provider that reported no usage: the completion is counted with the model's tokenizer.
        Response(id="e", tenant="globex", session="s9", status="ok", text="hello world", tier="cloud", model="gpt-4o"),
    ]


async def test_every_response_yields_one_priced_usage_record() -> None:
    stage = _stage()
    records, finals = [], {}
    for r in _responses():
        [out, decided] = await handle(stage, r)
        assert out.topic == "sx.usage" and out.key == r.session.encode()
        assert decided.topic == "sx.decisions" and decided.key == r.id.encode()
        records.append(orjson.loads(out.value))
        finals[r.id] = orjson.loads(decided.value)
    by_id = {u["id"]: u for u in records}
    # The meter's decision record carries the same numbers as the usage record.
    for rid, final in finals.items():
        assert (final["stage"], final["verdict"]) == ("meter", by_id[rid]["status"])
        assert final["data"]["cost_usd"] == by_id[rid]["cost_usd"] and final["data"]["cache"] == by_id[rid]["cache"]
        assert final["data"]["usage"] == [by_id[rid]["prompt_tokens"], by_id[rid]["completion_tokens"]]
    assert finals["d"]["reason"] == "budget" and finals["c"]["data"]["tier"] == "cache"
    assert by_id["a"]["feature"] == "chat" and by_id["a"]["attempts"] == 1 and by_id["a"]["busy_ms"] == 100.0
    assert by_id["b"]["attempts"] == 2 and by_id["b"]["cost_usd"] == 0.0045
    assert by_id["b"]["baseline_cost_usd"] == FRONTIER.cost_usd(1000, 200)
    assert by_id["c"]["cache"] == "semantic" and by_id["c"]["cost_usd"] == 0.0
    assert by_id["c"]["baseline_cost_usd"] == FRONTIER.cost_usd(1000, 200)  # what the hit avoided
    assert by_id["d"]["attempts"] == 0 and by_id["d"]["status"] == "rejected"
    assert by_id["e"]["completion_tokens"] == count_tokens("hello world", "gpt-4o") == 2
    overall = stage.aggregates.overall
    assert overall.requests == 5 and overall.cache_hits == {"semantic": 1}
    assert abs(overall.cost_usd - 0.0045) < 1e-12


async def test_redelivered_responses_are_counted_once_and_totals_survive_a_rebuild() -> None:
    ledger: dict = {}
    stage = _stage(ledger)
    for r in _responses() + _responses()[:3]:
        await handle(stage, r)
    assert stage.counts["counted"] == 5 and stage.counts["duplicate"] == 3
    before = stage.aggregates.overall.to_dict()
    restarted = _stage(ledger)  # a new process with the recovered ledger
    restarted.rebuild()
    assert restarted.aggregates.overall.to_dict() == before
    assert restarted.aggregates.running[("tenant", "acme")].requests == 3
    assert await handle(restarted, _responses()[0]) == []


async def test_costs_snapshot_covers_each_dimension() -> None:
    stage = _stage()
    for r in _responses():
        await handle(stage, r)
    costs = [orjson.loads(o.value) for o in stage.snapshot(stage.started_ms + 60_000)]
    dims = {(c["dim"], c["value"]) for c in costs if c["window_start"] is None}
    assert {("all", "all"), ("tenant", "acme"), ("tenant", "globex"), ("tier", "cache"), ("feature", "chat")} <= dims
    total = next(c for c in costs if c["dim"] == "all")
    assert total["requests"] == 5 and total["cache_hit_rate"] == 0.2
    local = next(c for c in costs if c["dim"] == "tier" and c["value"] == "local" and c["window_start"] is None)
    assert local["utilization"] is not None and local["utilization"] > 0


async def test_a_batch_is_published_with_one_acknowledgement_before_its_ids_reach_the_ledger() -> None:
    ledger: dict = {}  # type: ignore[type-arg]
    stage = _stage(ledger)
    first, second, third = _responses()[:3]
    calls: list[tuple[int, list[str]]] = []

    async def send(outs: list) -> None:  # type: ignore[type-arg]
        calls.append((len(ledger), [o.topic for o in outs]))  # what the ledger held when Kafka was asked

    await handle(stage, first)  # already billed: a redelivered copy inside the next batch is dropped
    batch = [(dumps(r), Source("sx.responses", 0, i)) for i, r in enumerate([first, second, second, third])]
    batch.append((b"{not json", Source("sx.responses", 0, 9)))
    await stage.handle_batch(batch, send)

    assert len(calls) == 1  # one round trip for the whole batch
    held, topics = calls[0]
    assert held == 1  # the batch's ids were written only after the send returned
    assert topics.count("sx.usage") == 2 and topics.count("sx.deadletter") == 1
    assert set(ledger) == {first.id, second.id, third.id}
    assert stage.counts["duplicate"] == 2 and stage.counts["counted"] == 3
    assert stage.aggregates.overall.requests == 3
