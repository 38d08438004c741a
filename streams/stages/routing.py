"""The router as the lookup stage calls it: the current tier config (reloaded on change), the classifier's
score on the request's embedding, the local backlog for spill-over, then the pure rules in policy/router."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from schemas.records import Request
from streams.policy.cache_policy import query_text
from streams.policy.router import RouteDecision, RouterInputs, route
from streams.settings import Settings
from streams.stages.route_probe import Probe, ProbeRunner
from streams.tiers import DEFAULT_TIERS_PATH, TierConfig, TierConfigWatcher


class Classifier(Protocol):
    default_knob: float

    def score(self, vector: np.ndarray, text: str, probe: np.ndarray | None = None) -> float: ...

    def needs_probe(self, vectors: np.ndarray, texts: Sequence[str]) -> list[bool]: ...

    def knob_for(self, vector: np.ndarray, text: str) -> float:
        """The recommended knob for this request's domain (multiple choice, math, chat)."""
        ...


class Router:
    def __init__(
        self,
        settings: Settings,
        tiers: Callable[[], TierConfig],
        classifier: Classifier | None,
        backlog: Callable[[], int] = lambda: 0,
        probe: ProbeRunner | None = None,
    ) -> None:
        self.tiers = tiers
        self.classifier = classifier
        self.backlog = backlog
        self.probe = probe
        self.local_only = frozenset(t.strip() for t in settings.local_only_tenants.split(",") if t.strip())
        self.spill_backlog = settings.spill_backlog

    async def probe_state(self, request: Request, vector: np.ndarray) -> np.ndarray | None:
        """The LM probe state when this request's head reads it (see route_probe), else None."""
        if self.classifier is None or self.probe is None or not self.probe.enabled:
            return None
        text = query_text(request.chat())
        if not self.classifier.needs_probe(np.asarray(vector).reshape(1, -1), [text])[0]:
            return None
        return await self.probe.state(text)

    def __call__(
        self, request: Request, vector: np.ndarray, probe: np.ndarray | None = None
    ) -> tuple[RouteDecision, str]:
        config = self.tiers()
        text = query_text(request.chat())
        knob = config.router_knob
        if knob is None:
            knob = self.classifier.knob_for(vector, text) if self.classifier is not None else 0.5
        score = None
        if self.classifier is not None:
            score = round(float(self.classifier.score(vector, text, probe)), 4)
        inputs = RouterInputs(
            local=config.weak,
            frontier=config.frontier,
            tiers=config.tiers,
            knob=knob,
            local_only_tenants=self.local_only,
            local_backlog=self.backlog(),
            spill_backlog=self.spill_backlog,
        )
        decision = route(request, inputs, score)
        topic = config.get(decision.tier).topic
        if request.priority == "batch" and decision.kind == "local":
            topic += ".batch"  # its own topic: a batch backlog never sits in front of interactive requests
        return decision, topic


def build_router(settings: Settings, backlog: Callable[[], int] = lambda: 0) -> Router:
    from streams.policy.route_classifier import RouteClassifier

    watcher = TierConfigWatcher(settings.tiers_file or DEFAULT_TIERS_PATH)
    return Router(settings, watcher.current, RouteClassifier.load(), backlog, _probe_factory(settings))


def _probe_factory(settings: Settings) -> ProbeRunner | None:
    if not settings.router_probe:
        return None

    def make() -> Probe:
        from workers.embedding.lm_probe import LMProbe

        return LMProbe(threads=1).probe

    return ProbeRunner(make, settings.router_probe_pending)
