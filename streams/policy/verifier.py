"""Semantic-cache verifier: may the answer cached for prompt ``a`` be served for prompt ``b``?

Cosine on sentence embeddings ranks candidates well but cannot tell "enable 2FA" from "disable 2FA", nor
"A beat B" from "B beat A". This module adds cheap lexical evidence (order-sensitive overlap, numbers,
negation, antonyms, named entities, question words) scored by a small gradient-boosted tree ensemble fitted
by ``scripts/fit_verifier.py``, plus hard guards for flips a cache must never merge. Pure stdlib + numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.policy.verifier_features import FEATURE_NAMES, pair_features

__all__ = ["DEFAULT_MIN_COSINE", "DEFAULT_THRESHOLD", "FEATURE_NAMES", "PARAMS_PATH", "Verifier", "pair_features"]

PARAMS_PATH = Path(__file__).resolve().parent / "data" / "verifier.json"


def _shipped(key: str, fallback: float) -> float:
    try:
        return float(json.loads(PARAMS_PATH.read_text())[key])
    except (OSError, KeyError, TypeError, ValueError):
        return fallback


# Recommended operating point, chosen by scripts/fit_verifier.py from cross-validation (see verifier.json "cv").
DEFAULT_THRESHOLD = _shipped("threshold", 0.86)  # verifier probability needed to serve a semantic hit
DEFAULT_MIN_COSINE = _shipped("min_cosine", 0.80)  # candidates below this cosine are not even verified


class Verifier:
    """Boosted depth-d trees over ``pair_features``, then guards: P(cached answer is right for the new prompt).

    Trees are complete binary trees in heap order: node k splits on ``feature[t, k]``; x > threshold goes
    right (child 2k+2), else left (2k+1); after ``depth`` levels the leaf value is added to the logit.
    Guards (antonym, differing numbers, ...) cap the probability at ``guard_cap`` whatever the trees say."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        if tuple(params["feature_names"]) != FEATURE_NAMES:
            raise ValueError("verifier params were fitted on other features: rerun scripts/fit_verifier.py")
        trees = params["trees"]
        self.depth = int(trees["depth"])
        feature = np.asarray(trees["feature"], dtype=np.intp)
        split = np.asarray(trees["threshold"], dtype=np.float64)
        leaf = np.asarray(trees["leaf"], dtype=np.float64)
        n_trees, inner = feature.shape[0], 2**self.depth - 1
        if feature.shape != (n_trees, inner) or split.shape != feature.shape or leaf.shape != (n_trees, inner + 1):
            raise ValueError("malformed verifier trees")
        # flat: tree t's node k lives at t * inner + k, its leaf j at t * (inner + 1) + j
        self._feature, self._split, self._leaf = feature.ravel(), split.ravel(), leaf.ravel()
        self._offset = np.arange(n_trees, dtype=np.intp) * inner
        self._leaf_offset = np.arange(n_trees, dtype=np.intp) * (inner + 1) - inner
        self.base = float(params["base_logit"])
        guards: Mapping[str, float] = params.get("guards", {})
        self.guards = np.array([FEATURE_NAMES.index(g) for g in guards], dtype=np.intp)
        self.guard_min = np.array([float(v) for v in guards.values()], dtype=np.float64)
        self.guard_cap = float(params.get("guard_cap", 0.0))
        self.threshold = float(params["threshold"])
        self.min_cosine = float(params.get("min_cosine", 0.80))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Verifier:
        return cls(json.loads(Path(path or PARAMS_PATH).read_text()))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for a (n, N_FEATURES) matrix: all trees advance one level per numpy step."""
        x = np.atleast_2d(features)
        rows = np.arange(x.shape[0])[:, None]
        node = np.zeros((x.shape[0], self._offset.size), dtype=np.intp)
        for _ in range(self.depth):
            at = self._offset + node
            node = 2 * node + 1 + (x[rows, self._feature[at]] > self._split[at])
        z = self.base + self._leaf[self._leaf_offset + node].sum(axis=1)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))
        if self.guards.size:
            p = np.where((x[:, self.guards] >= self.guard_min).any(axis=1), np.minimum(p, self.guard_cap), p)
        return p

    def score(self, a: str, b: str, cosine: float) -> float:
        return float(self.predict(pair_features(a, b, cosine)[None, :])[0])

    def score_many(self, a: Sequence[str], b: Sequence[str], cosines: Sequence[float] | np.ndarray) -> np.ndarray:
        if not (len(a) == len(b) == len(cosines)):
            raise ValueError("a, b and cosines must have the same length")
        if not len(a):
            return np.zeros(0)
        return self.predict(np.stack([pair_features(x, y, float(c)) for x, y, c in zip(a, b, cosines, strict=True)]))

    def accepts(self, a: str, b: str, cosine: float) -> bool:
        """The cache decision: a candidate above the cosine floor whose verifier score clears the threshold."""
        return cosine >= self.min_cosine and self.score(a, b, cosine) >= self.threshold
