"""The numpy fitting pieces of scripts/fit_router.py: penalised logistic regressions and spherical k-means."""

from __future__ import annotations

import numpy as np


def logreg(
    a: np.ndarray, y: np.ndarray, lam: float | np.ndarray, iters: int = 50, free: tuple[int, ...] = (-1,)
) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; last column of ``a`` is the (unpenalised) bias.

    ``lam``: one penalty for every coefficient, or one per column; the ``free`` columns (biases) are unpenalised."""
    beta = np.zeros(a.shape[1])
    reg = np.diag(np.broadcast_to(np.asarray(lam, dtype=np.float64), (a.shape[1],)).copy())
    for i in free:
        reg[i, i] = 1e-6
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -40, 40)))
        step = np.linalg.solve((a * (p * (1 - p))[:, None]).T @ a + reg, a.T @ (p - y) + reg @ beta)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return beta


def logreg_pair(a: np.ndarray, w: np.ndarray, s: np.ndarray, pen: np.ndarray, dev: float) -> np.ndarray:
    """The weak- and strong-correct logistic models fitted jointly (multi-task): coef_m = shared + deviation_m.

    The shared part (no bias) carries the penalties ``pen``, each model's deviation ``dev`` x ``pen`` (its bias
    free). Prompts hard for one model tend to be hard for the other, so the strong model (few failures) borrows
    strength from the weak one; the difference P(w) - P(s) is what routes. Returns (2, a.shape[1]) like two logreg
    fits (last column of ``a`` is the bias)."""
    k = a.shape[1]
    zero = np.zeros_like(a)
    stacked = np.vstack([np.hstack([a[:, :-1], a, zero]), np.hstack([a[:, :-1], zero, a])])
    reg = np.concatenate([pen[:-1], pen * dev, pen * dev])
    beta = logreg(stacked, np.concatenate([w, s]), reg, free=(k - 1 + k - 1, k - 1 + 2 * k - 1))
    shared = np.append(beta[: k - 1], 0.0)
    return np.stack([shared + beta[k - 1 : 2 * k - 1], shared + beta[2 * k - 1 :]])


def kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine); returns unit centroids and assignments."""
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        norms = np.linalg.norm(sums, axis=1)
        keep = norms > 0
        c[keep] = sums[keep] / norms[keep, None]
    return c, np.argmax(x @ c.T, axis=1)


def platt(raw: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    a, b = logreg(np.stack([raw, np.ones_like(raw)], 1), ok, 1e-3)
    return float(a), float(b)
