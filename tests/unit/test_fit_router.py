"""The router refit script's pieces: per-block penalties, and a math head on synthetic prompts that it must rank."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

from streams.policy.route_classifier import DIM, text_features
from streams.policy.route_curve import share_at_quality


def _fit_script() -> ModuleType:  # scripts/ is not a package: load the refit script by path
    path = Path(__file__).resolve().parents[2] / "scripts" / "fit_router.py"
    spec = importlib.util.spec_from_file_location("fit_router", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logreg_penalises_each_column_by_its_own_lambda() -> None:
    fit = _fit_script()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (rng.random(400) < 1 / (1 + np.exp(-(2 * x[:, 0] + 2 * x[:, 1])))).astype(np.float64)
    a = np.hstack([x, np.ones((400, 1))])
    same = fit.logreg(a, y, 1.0)
    split = fit.logreg(a, y, np.array([1.0, 1e4, 0.0]))
    np.testing.assert_allclose(fit.logreg(a, y, np.array([1.0, 1.0, 0.0])), same, atol=1e-8)  # scalar == vector
    assert abs(split[1]) < 0.05 * abs(same[1])  # the heavily penalised column is shrunk to ~0
    assert split[0] > 1.0 and same[0] > 1.0 and same[1] > 1.0


def test_logreg_pair_shares_coefficients_between_the_two_models() -> None:
    fit = _fit_script()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    logit = 2 * x[:, 0] - x[:, 1]
    w = (rng.random(500) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    s = (rng.random(500) < 1 / (1 + np.exp(-(logit + 2)))).astype(np.float64)
    a = np.hstack([x, np.ones((500, 1))])
    pen = np.full(4, 1.0)
    tied = fit.logreg_pair(a, w, s, pen, 1e6)  # deviations pinned to 0: one slope, two free biases
    assert tied.shape == (2, 4)
    np.testing.assert_allclose(tied[0, :3], tied[1, :3], atol=1e-4)
    assert tied[0, 0] > 1.0 and tied[1, 3] > tied[0, 3] + 1.0
    free = fit.logreg_pair(a, w, s, pen * 1e6, 1e-6)  # shared part pinned to 0: two separate fits
    np.testing.assert_allclose(free[0], fit.logreg(a, w, 1.0), atol=1e-3)
    np.testing.assert_allclose(free[1], fit.logreg(a, s, 1.0), atol=1e-3)


def test_math_head_ranks_synthetic_word_problems() -> None:
    """Long multi-step prompts fail on the weak tier; the fitted head must rank them last (held-out rows)."""
    fit = _fit_script()
    rng = np.random.default_rng(1)
    n = 600
    steps = rng.integers(1, 8, n)
    texts = [
        " ".join(f"Ann has {rng.integers(2, 99)} apples and buys {rng.integers(2, 9)} more each day." for _ in range(k))
        + " How many apples does she have?"
        for k in steps
    ]
    x = rng.normal(size=(n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    f = np.vstack([text_features(t) for t in texts])
    w = (rng.random(n) < np.where(steps <= 3, 0.95, 0.3)).astype(np.float64)
    s = (rng.random(n) < 0.95).astype(np.float64)
    cfg = fit.CONFIG["math"]
    tr, te = np.arange(400), np.arange(400, n)
    head = fit.fit_head(x[tr], f[tr], w[tr], s[tr], np.array([""] * 400), cfg)
    raw = head.raw(x[te], f[te])
    assert raw[steps[te] <= 3].mean() > raw[steps[te] > 3].mean() + 0.2
    assert share_at_quality(raw, w[te], s[te]) > share_at_quality(-raw, w[te], s[te]) + 0.2
