"""A router's cost/quality curve from labels (RouteLLM's protocol): every threshold's weak share, quality, cost.

Pure numpy; ``weak_share_at_95`` (share_at_quality) is the number the router targets are stated in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CurvePoint:
    knob: float  # route weak when score >= knob (inf: nothing goes weak)
    weak_share: float
    quality: float
    cost: float  # total cost of the routed requests
    cost_ratio: float  # cost / all-frontier cost


def curve(
    scores: Sequence[float] | np.ndarray,
    weak_correct: Sequence[float] | np.ndarray,
    strong_correct: Sequence[float] | np.ndarray,
    weak_cost: float | Sequence[float] | np.ndarray = 0.0,
    strong_cost: float | Sequence[float] | np.ndarray = 1.0,
) -> list[CurvePoint]:
    """Every operating point of a score-threshold router, from nothing-weak to everything-weak (ties move together)."""
    sc = np.asarray(scores, dtype=np.float64)
    n = len(sc)
    wk = np.asarray(weak_correct, dtype=np.float64)
    st = np.asarray(strong_correct, dtype=np.float64)
    wc = np.broadcast_to(np.asarray(weak_cost, dtype=np.float64), (n,))
    scost = np.broadcast_to(np.asarray(strong_cost, dtype=np.float64), (n,))
    if not (len(wk) == len(st) == n) or n == 0:
        raise ValueError("scores, weak_correct and strong_correct need the same non-zero length")
    order = np.argsort(-sc, kind="stable")
    ss = sc[order]
    dq = np.cumsum((wk - st)[order])
    dc = np.cumsum((wc - scost)[order])
    base_q, base_c = float(st.sum()), float(scost.sum())
    ratio = (lambda c: c / base_c) if base_c > 0 else (lambda c: 1.0)
    points = [CurvePoint(math.inf, 0.0, base_q / n, base_c, 1.0)]
    ends = np.nonzero(np.append(ss[1:] != ss[:-1], True))[0]
    for e in ends:
        cost = base_c + float(dc[e])
        points.append(CurvePoint(float(ss[e]), float(e + 1) / n, (base_q + float(dq[e])) / n, cost, ratio(cost)))
    return points


def best_point(points: Sequence[CurvePoint], frontier_quality: float, fraction: float = 0.95) -> CurvePoint:
    """The point with the largest weak share whose quality is >= fraction x frontier quality."""
    ok = [p for p in points if p.quality >= fraction * frontier_quality - 1e-12]
    return max(ok, key=lambda p: (p.weak_share, -p.cost))


def share_at_quality(
    scores: Sequence[float] | np.ndarray,
    weak_correct: Sequence[float] | np.ndarray,
    strong_correct: Sequence[float] | np.ndarray,
    fraction: float = 0.95,
) -> float:
    """Largest share of requests kept off the frontier tier at ``fraction`` of its quality (weak_share_at_95)."""
    pts = curve(scores, weak_correct, strong_correct)
    return best_point(pts, float(np.mean(np.asarray(strong_correct, dtype=np.float64))), fraction).weak_share
