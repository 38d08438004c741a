"""Routing rules (pure): residency, hints, context, spill-over by backlog, then the classifier knob."""

from __future__ import annotations

from dataclasses import replace

from schemas.records import Request
from streams.policy.router import RouterInputs, route
from streams.tiers import load_tiers

TIERS = load_tiers()
INPUTS = RouterInputs(
    local=TIERS.weak,
    frontier=TIERS.frontier,
    tiers=TIERS.tiers,
    knob=0.5,
    local_only_tenants={"bank"},
    spill_backlog=10,
)


def _req(tenant: str = "acme", prompt: str = "hi", **fields: object) -> Request:
    return Request(id="r", tenant=tenant, session="s", prompt=prompt, **fields)  # type: ignore[arg-type]


def test_classifier_knob_splits_local_and_frontier() -> None:
    assert route(_req(), INPUTS, 0.7).tier == "local-small"
    decision = route(_req(), INPUTS, 0.3)
    assert (decision.tier, decision.reason, decision.score, decision.knob) == ("cloud-frontier", "classifier", 0.3, 0.5)


def test_local_only_tenant_never_leaves_local_tiers() -> None:
    long_prompt = "x" * 10_000
    for request in (_req("bank", long_prompt), _req("bank", metadata={"route": "cloud"}), _req("bank")):
        assert route(request, replace(INPUTS, local_backlog=99), 0.0).tier == "local-small"


def test_hint_and_context_rules() -> None:
    assert route(_req(metadata={"route": "cloud"}), INPUTS, 0.99).reason == "hint"
    assert route(_req(metadata={"route": "cache"}), INPUTS, 0.99).tier == "local-small"  # not a model tier
    too_long = route(_req(prompt="x" * 7000), INPUTS, 0.99)
    assert (too_long.tier, too_long.reason) == ("cloud-frontier", "context")


def test_interactive_traffic_spills_past_the_backlog_bound_and_batch_waits() -> None:
    busy = replace(INPUTS, local_backlog=10)
    assert route(_req(), busy, 0.9).reason == "spill"
    assert route(_req(priority="batch"), busy, 0.9).tier == "local-small"
    assert route(_req(), replace(INPUTS, local_backlog=9), 0.9).tier == "local-small"
