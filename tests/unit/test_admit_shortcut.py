"""Exact hits answered in admit (streams/stages/shortcut.py): the same answer the lookup stage gives, only for
keys this process owns, one state write per session, and never around a guard or a tenant-wide budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.records import Job, now_ms
from streams.settings import Settings
from streams.stages.admit import AdmitStage
from streams.stages.cache_setup import load_policy
from streams.stages.cache_state import CacheState
from streams.stages.guard import SessionGuard, session_key
from streams.stages.lookup import LookupStage
from streams.stages.outgoing import Outgoing, Source
from streams.stages.shortcut import ExactShortcut
from streams.tiers import load_tiers

SRC = Source("sx.requests", 0, 0)


class CountingDict(dict[str, Any]):
    """A sessions table that counts writes (a Faust table sends one changelog record per assignment)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[str] = Counter()

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes[key] += 1
        super().__setitem__(key, value)


class Rig:
    def __init__(self, tmp_path: Path, owned: bool = True, **overrides: Any) -> None:
        self.settings = Settings(topic_prefix="sx", data_dir=str(tmp_path), **overrides)
        self.exact: dict[str, dict[str, Any]] = {}
        # Only the exact path of the lookup stage runs here: no embedder, store, verifier or router is touched.
        self.lookup = LookupStage(
            self.settings,
            CacheState(exact=self.exact, inflight={}),
            load_policy(self.settings),
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            lambda *_: 0.0,
            lambda *_: (_ for _ in ()).throw(AssertionError("routed")),
        )
        self.owned = owned
        self.shortcut = ExactShortcut(self.lookup, lambda key: self.owned)
        self.sessions = CountingDict()
        guard = SessionGuard(self.settings, self.sessions, lambda: load_tiers().frontier)
        self.admit = AdmitStage(self.settings, guard=guard, shortcut=self.shortcut)

    def raw(self, rid: str, session: str, prompt: str = "What is a write-ahead log?", **extra: Any) -> bytes:
        request = {"id": rid, "tenant": "acme", "session": session, "prompt": prompt, "max_tokens": 32, **extra}
        return orjson.dumps(request)

    async def cache(self, prompt: str = "What is a write-ahead log?") -> str:
        """Admit one request the long way and store its answer under its key, as the complete stage would."""
        [job_out] = [o for o in await self.admit.handle(self.raw("src", "s0", prompt), SRC) if o.topic == "sx.lookup"]
        key = job_out.key.decode()
        self.exact[key] = {
            "text": "It makes committed writes durable.",
            "model": "m",
            "status": "ok",
            "usage": {"prompt_tokens": 9, "completion_tokens": 7},
            "cost_usd": 0.001,
            "tier": "local",
            "source_id": "src",
            "tenant": "acme",
            "created_at": now_ms(),
        }
        return key


def by_topic(outs: list[Outgoing], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in outs if o.topic == topic]


async def test_an_owned_exact_hit_is_answered_in_admit_like_the_lookup_stage_would(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    key = await rig.cache()
    outs = await rig.admit.handle(rig.raw("r1", "s1"), SRC)
    assert by_topic(outs, "sx.lookup") == []
    [answer] = by_topic(outs, "sx.responses")
    assert answer["id"] == "r1" and answer["tier"] == "cache" and answer["text"] == "It makes committed writes durable."
    assert answer["cost_usd"] == 0.0
    cache = answer["route"]["cache"]
    assert (cache["kind"], cache["source_id"], cache["via"]) == ("exact", "src", "admit")
    assert cache["saved_usage"] == {"prompt_tokens": 9, "completion_tokens": 7}
    stages = [(d["stage"], d["verdict"]) for d in by_topic(outs, "sx.decisions")]
    assert stages == [("admit", "admitted"), ("lookup", "exact")]  # the trail reads as if it went the long way

    # What the lookup stage answers for the same job: the same response apart from id, latency and the "via".
    job = Job(request=_request(rig, "r2"), tier="", key=key)
    long_way = by_topic(rig.lookup.answer_exact(job, rig.exact[key]), "sx.responses")[0]
    for k in ("status", "text", "tier", "model", "usage", "cost_usd"):
        assert long_way[k] == answer[k]
    assert {k: v for k, v in cache.items() if k != "via"} == long_way["route"]["cache"]
    assert rig.shortcut.counts["answered"] == 1 and rig.lookup.counts["hit:exact"] == 2


def _request(rig: Rig, rid: str) -> Any:
    from schemas.parse import parse_request

    return parse_request(rig.raw(rid, "s2"), rig.admit.limits)


async def test_the_session_is_settled_in_one_write_and_the_later_usage_record_changes_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, session_budget_hard_usd=100.0)  # a budget: the row is durable, in the table
    await rig.cache()
    await rig.admit.handle(rig.raw("r1", "s1"), SRC)
    state = rig.sessions[session_key("acme", "s1")]
    assert rig.sessions.writes[session_key("acme", "s1")] == 1
    assert "reserved" not in state["budget"]  # reserved and settled at once, at the cache's cost: none left open
    assert state["budget"]["spent"] == 0.0
    usage = {"id": "r1", "session": "s1", "tenant": "acme", "cost_usd": 0.0, "status": "ok"}
    assert await rig.admit.settle(orjson.dumps(usage), SRC) == []
    assert rig.sessions.writes[session_key("acme", "s1")] == 1  # a settled id is not written again


async def test_keys_owned_elsewhere_misses_and_opt_outs_take_the_long_way(tmp_path: Path) -> None:
    rig = Rig(tmp_path, owned=False, session_budget_hard_usd=100.0)
    await rig.cache()
    outs = await rig.admit.handle(rig.raw("r1", "s1"), SRC)
    assert len(by_topic(outs, "sx.lookup")) == 1 and by_topic(outs, "sx.responses") == []
    assert rig.shortcut.counts["not_owner"] == 1
    # The long way reserves, and the usage record settles: two writes, as before the shortcut existed.
    assert rig.sessions[session_key("acme", "s1")]["budget"]["reserved"] != {}
    rig.owned = True
    for rid, extra in (("r2", {}), ("r3", {"cache": False}), ("r4", {"cache_refresh": True})):
        prompt = "Something never asked" if rid == "r2" else "What is a write-ahead log?"
        outs = await rig.admit.handle(rig.raw(rid, "s1", prompt, **extra), SRC)
        assert len(by_topic(outs, "sx.lookup")) == 1, rid
        assert by_topic(outs, "sx.responses") == [], rid
    assert rig.shortcut.counts["answered"] == 0


async def test_the_breaker_still_stops_a_loop_of_exact_hits(tmp_path: Path) -> None:
    rig = Rig(tmp_path, breaker_max_repeats=3, breaker_max_requests=1000)
    await rig.cache()
    statuses = []
    for i in range(6):
        outs = await rig.admit.handle(rig.raw(f"r{i}", "loop"), SRC)
        [answer] = by_topic(outs, "sx.responses")
        statuses.append(answer["status"])
    assert statuses[0] == "ok" and statuses[-1] == "rejected", statuses
    assert rig.shortcut.counts["answered"] == statuses.count("ok")


async def test_tenants_with_a_tenant_wide_budget_take_the_long_way(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  acme: {budget_hard_usd: 5.0}\n")
    rig = Rig(tmp_path, tenants_file=str(tenants))
    key = "k"
    rig.exact[key] = {}  # never read: a budgeted tenant does not look
    outs = await rig.admit.handle(rig.raw("r1", "s1"), SRC)
    assert by_topic(outs, "sx.tenant") and by_topic(outs, "sx.responses") == []


@pytest.mark.parametrize("owned", [True, False])
async def test_expired_entries_are_never_served(tmp_path: Path, owned: bool) -> None:
    rig = Rig(tmp_path, owned=owned, cache_ttl_s=60)
    key = await rig.cache()
    rig.exact[key]["created_at"] = now_ms() - 120_000
    outs = await rig.admit.handle(rig.raw("r1", "s1"), SRC)
    assert len(by_topic(outs, "sx.lookup")) == 1 and by_topic(outs, "sx.responses") == []
