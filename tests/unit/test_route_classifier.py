"""Router metric maths on hand-made cases, and the shipped router weights."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from streams.policy.route_classifier import (
    DEFAULT_PATH,
    FEATURE_NAMES,
    RouteClassifier,
    domain_of,
    text_features,
)
from streams.policy.route_curve import best_point, curve, share_at_quality

MCQ = "What is the capital of France?\nA. Lyon\nB. Paris\nC. Nice\nD. Lille\nAnswer:"
WORD = "Tom has 3 apples and buys 2 more. How many apples does he have?"


def test_curve_points_exact() -> None:
    pts = curve([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], [1, 1, 1, 1], weak_cost=0.0, strong_cost=1.0)
    assert [p.weak_share for p in pts] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p.quality for p in pts] == [1.0, 1.0, 0.75, 0.75, 0.5]
    assert [p.cost_ratio for p in pts] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert math.isinf(pts[0].knob) and [p.knob for p in pts[1:]] == [0.9, 0.8, 0.7, 0.6]


def test_share_at_quality_exact() -> None:
    scores, weak, strong = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], [1, 1, 1, 1]
    assert share_at_quality(scores, weak, strong, 0.95) == 0.25
    assert share_at_quality(scores, weak, strong, 0.75) == 0.75
    assert share_at_quality(scores, weak, strong, 0.5) == 1.0
    # a weak-right/strong-wrong request routed weak lifts quality above the frontier's (2/3 -> 1)
    pts = curve([0.9, 0.5, 0.1], [1, 0, 0], [0, 1, 1])
    assert [p.quality for p in pts] == [pytest.approx(2 / 3), 1.0, pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert best_point(pts, 2 / 3, 0.95).weak_share == pytest.approx(2 / 3)
    assert share_at_quality([0.9, 0.5, 0.1], [1, 0, 0], [0, 1, 1], 1.0) == pytest.approx(2 / 3)


def test_ties_move_together_and_costs_per_request() -> None:
    pts = curve([0.5, 0.5, 0.2], [1, 1, 0], [1, 1, 1], weak_cost=[0.0, 0.0, 0.0], strong_cost=[1.0, 3.0, 4.0])
    assert [round(p.weak_share, 6) for p in pts] == [0.0, round(2 / 3, 6), 1.0]
    assert pts[1].cost == 4.0 and pts[1].cost_ratio == 0.5
    assert pts[1].quality == 1.0 and pts[2].quality == pytest.approx(2 / 3)


def test_curve_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        curve([0.1, 0.2], [1], [1, 0])


def test_text_features_and_domains() -> None:
    f = text_features("She paid $2.50 for 3/4 of a pie, 10% off.")
    assert f.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(f))
    named = dict(zip(FEATURE_NAMES, f, strict=True))
    assert named["has_dollar"] == 1.0 and named["has_percent"] == 1.0 and named["log_decimals"] > 0
    assert domain_of(MCQ) == "mcq" and domain_of(WORD) == "open"


@pytest.fixture(scope="module")
def clf() -> RouteClassifier:
    assert DEFAULT_PATH.stat().st_size < 2_000_000  # ships in the package: keep it small
    return RouteClassifier.load()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 384))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_shipped_weights_load_and_score(clf: RouteClassifier) -> None:
    assert {"mcq", "math", "chat"} <= set(clf.heads)
    assert clf.meta["features"] == list(FEATURE_NAMES)
    assert 0.0 < clf.default_knob < 1.0
    vecs = _unit(np.random.default_rng(0), 3)
    texts = [MCQ, WORD, "Write a haiku about autumn."]
    scores = clf.score_many(vecs, texts)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    assert clf.score(vecs[1], texts[1]) == pytest.approx(scores[1])
    assert clf.domains(vecs[:1], [MCQ]) == ["mcq"]


def test_higher_knob_routes_fewer_requests_weak(clf: RouteClassifier) -> None:
    rng = np.random.default_rng(1)
    texts = [WORD, MCQ, "Explain quantum tunnelling to a child.", "Compute 17 * 23."] * 25
    scores = clf.score_many(_unit(rng, len(texts)), texts)
    shares = [float(np.mean(scores >= k)) for k in np.linspace(0.0, 1.01, 30)]
    assert shares[0] == 1.0 and shares[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(shares))
    vec = _unit(rng, 1)[0]
    assert clf.routes_weak(vec, WORD, knob=0.0) and not clf.routes_weak(vec, WORD, knob=1.01)


def test_save_load_roundtrip(clf: RouteClassifier, tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    clf.save(path)
    again = RouteClassifier.load(path)
    vecs = _unit(np.random.default_rng(2), 4)
    texts = [MCQ, WORD, "hello", "Write a sorting function in Python."]
    np.testing.assert_allclose(again.score_many(vecs, texts), clf.score_many(vecs, texts), rtol=1e-6)
