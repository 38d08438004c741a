"""``sluice eval router``: how many requests would the learned router keep off the frontier tier, at what quality?

RouteLLM's protocol, with no model call: a label file says for each prompt whether the weak model and the strong
(frontier) model answered right. A router with knob t sends request i to the small tier when its score >= t;
quality(t) = mean(weak_correct if routed weak else strong_correct). We sweep t and report the cost/quality curve
(cost from the tier config's prices, tokens estimated as len(text)/4 in, ``--output-tokens`` out) and
``weak_share_at_95``: the largest share kept off the frontier tier while quality >= 95% of all-frontier quality.

Layouts: RouteLLM MMLU/GSM8K labels (``mixtral_8x7b_correct``, ``gpt4_1106_correct``) or MT-Bench judged scores
(``mixtral_8x7b_score``, ``gpt4_1106_score``, 1-10), where a score >= ``--score-threshold`` (default 8: "good
answer" on MT-Bench's scale) counts as correct.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.policy.route_classifier import RouteClassifier
from streams.policy.route_curve import CurvePoint, best_point, curve

WEAK_KEYS = ("mixtral_8x7b_correct", "mixtral_8x7b_score")
STRONG_KEYS = ("gpt4_1106_correct", "gpt4_1106_score")
SHARE_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Labels:
    texts: list[str]
    weak: np.ndarray  # 0/1: the small tier's answer was right
    strong: np.ndarray  # 0/1: the frontier tier's answer was right
    layout: str  # "labels" | "scores"


def read_labels(path: str | Path, score_threshold: float = 8.0) -> Labels:
    """Parse a RouteLLM label JSONL (booleans) or an MT-Bench scores JSONL (scores >= threshold count as right)."""
    texts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    layout = ""
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or "prompt" not in row:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'prompt'")
        if WEAK_KEYS[0] in row and STRONG_KEYS[0] in row:
            layout = layout or "labels"
            w, s = float(bool(row[WEAK_KEYS[0]])), float(bool(row[STRONG_KEYS[0]]))
        elif WEAK_KEYS[1] in row and STRONG_KEYS[1] in row:
            layout = layout or "scores"
            w = float(float(row[WEAK_KEYS[1]]) >= score_threshold)
            s = float(float(row[STRONG_KEYS[1]]) >= score_threshold)
        else:
            raise ValueError(
                f"{path}:{lineno}: needs {WEAK_KEYS[0]}/{STRONG_KEYS[0]} or {WEAK_KEYS[1]}/{STRONG_KEYS[1]}"
            )
        texts.append(str(row["prompt"]))
        weak.append(w)
        strong.append(s)
    if not texts:
        raise ValueError(f"{path}: no rows")
    return Labels(texts, np.array(weak), np.array(strong), layout)


def _cached(kind: str, texts: Sequence[str], cache_dir: str | Path | None, compute: Any) -> np.ndarray:
    """``compute(texts)``, kept in a .npy under ``cache_dir`` keyed by ``kind`` and the texts when one is given."""
    cache: Path | None = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps([kind, list(texts)]).encode()).hexdigest()[:24]
        cache = Path(cache_dir) / f"vectors-{digest}.npy"
        if cache.is_file():
            return np.load(cache)
    vectors = np.asarray(compute(list(texts)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors


def embed_texts(texts: Sequence[str], cache_dir: str | Path | None = None) -> np.ndarray:
    """Production embeddings (all-MiniLM-L6-v2 int8)."""
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    return _cached(FastEmbedEmbedder.name, texts, cache_dir, lambda t: FastEmbedEmbedder(threads=2).embed(t))


def probe_texts(
    clf: RouteClassifier, vectors: np.ndarray, texts: Sequence[str], cache_dir: str | Path | None = None
) -> np.ndarray | None:
    """LM probe states for the requests whose head reads them (zeros elsewhere); None when no head does."""
    need = np.flatnonzero(np.array(clf.needs_probe(vectors, texts), dtype=bool))
    if len(need) == 0:
        return None
    from workers.embedding.lm_probe import LAYERS, LMProbe

    some = [texts[i] for i in need]
    states = _cached(f"smollm2-probe-{LAYERS}", some, cache_dir, lambda t: LMProbe(threads=2).probe(t))
    probes = np.zeros((len(texts), states.shape[1]))
    probes[need] = states
    return probes


def request_costs(texts: Sequence[str], tiers_path: str | None, output_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-request USD on the small tier and on the frontier tier, from the tier config's prices."""
    from streams.tiers import load_tiers

    config = load_tiers(tiers_path)
    prompt = np.array([max(1, math.ceil(len(t) / 4)) for t in texts])
    weak = np.array([config.weak.cost_usd(int(p), output_tokens) for p in prompt])
    strong = np.array([config.frontier.cost_usd(int(p), output_tokens) for p in prompt])
    return weak, strong


def summarize(
    labels: Labels,
    scores: np.ndarray,
    knobs: np.ndarray,
    weak_cost: np.ndarray,
    strong_cost: np.ndarray,
) -> tuple[list[str], dict[str, Any]]:
    """Human-readable curve lines and the JSON summary."""
    w, s = labels.weak, labels.strong
    frontier = float(s.mean())
    points = curve(scores, w, s, weak_cost, strong_cost)
    best = best_point(points, frontier, 0.95)
    at_knob = scores >= knobs
    q_knob = float(np.where(at_knob, w, s).mean())
    cost_knob = float(np.where(at_knob, weak_cost, strong_cost).sum())
    base_cost = float(strong_cost.sum())
    rng = np.random.default_rng(0)
    random_share = float(np.mean([best_point(curve(rng.random(len(s)), w, s), frontier).weak_share for _ in range(20)]))
    lines = [
        f"requests: {len(s)} ({labels.layout}); frontier quality {frontier:.3f}, small-tier quality {w.mean():.3f}",
        "",
        "kept_off_frontier  quality  quality/frontier  cost/all-frontier  knob",
    ]

    def row(p: CurvePoint, mark: str = "") -> str:
        ratio = p.quality / frontier if frontier else float("nan")
        cost = round(p.cost_ratio, 6) + 0.0  # no "-0.000" from float round-off
        return f"{p.weak_share:17.3f}  {p.quality:7.3f}  {ratio:16.3f}  {cost:17.3f}  {p.knob:.4f}{mark}"

    for target in SHARE_GRID:  # the point with the largest share not above each grid value
        p = max((q for q in points if q.weak_share <= target + 1e-12), key=lambda q: q.weak_share)
        lines.append(row(p, "  <- 95% of frontier quality" if p == best else ""))
    if best.weak_share not in {max(q.weak_share for q in points if q.weak_share <= g + 1e-12) for g in SHARE_GRID}:
        lines.append(row(best, "  <- 95% of frontier quality"))
    knob_value: float | None = float(knobs[0]) if np.all(knobs == knobs[0]) else None
    knob_text = (
        f"{knob_value:.4f}"
        if knob_value is not None
        else "per-domain " + ", ".join(f"{k:.4f}" for k in sorted(set(knobs.tolist())))
    )
    lines += [
        "",
        f"weak_share_at_95: {best.weak_share:.3f} kept off the frontier tier at quality {best.quality:.3f} "
        f"({best.quality / frontier if frontier else 0:.3f} of frontier), cost {best.cost_ratio:.3f} of all-frontier "
        f"(random routing: {random_share:.3f})",
        f"at knob {knob_text}: {at_knob.mean():.3f} kept off, quality {q_knob:.3f}, "
        f"cost {cost_knob / base_cost if base_cost else 1.0:.3f} of all-frontier",
    ]
    summary: dict[str, Any] = {
        "weak_share_at_95": round(best.weak_share, 4),
        "quality_at_knob": round(q_knob, 4),
        "n": len(s),
        "frontier_quality": round(frontier, 4),
        "weak_quality": round(float(w.mean()), 4),
        "cost_ratio_at_95": round(best.cost_ratio, 4),
        "knob": knob_value,
        "weak_share_at_knob": round(float(at_knob.mean()), 4),
        "quality_ratio_at_knob": round(q_knob / frontier, 4) if frontier else None,
        "cost_ratio_at_knob": round(cost_knob / base_cost, 4) if base_cost else None,
        "knob_at_95": None if math.isinf(best.knob) else round(best.knob, 4),
        "random_weak_share_at_95": round(random_share, 4),
        "layout": labels.layout,
    }
    return lines, summary


def run(args: argparse.Namespace) -> int:
    try:
        labels = read_labels(args.data, args.score_threshold)
    except (OSError, ValueError) as exc:
        print(f"sluice eval router: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        n = args.limit
        labels = Labels(labels.texts[:n], labels.weak[:n], labels.strong[:n], labels.layout)
    clf = RouteClassifier.load(args.weights) if args.weights else RouteClassifier.load()
    vectors = embed_texts(labels.texts, args.cache_dir)
    probes = None if args.no_probe else probe_texts(clf, vectors, labels.texts, args.cache_dir)
    scores = clf.score_many(vectors, labels.texts, probes)
    if args.knob is not None:
        knobs = np.full(len(scores), float(args.knob))
    else:  # each domain's CV-tuned knob
        knobs = np.array([clf.heads[d].knob for d in clf.domains(vectors, labels.texts)])
    weak_cost, strong_cost = request_costs(labels.texts, args.tiers, args.output_tokens)
    lines, summary = summarize(labels, scores, knobs, weak_cost, strong_cost)
    print("\n".join(lines))
    if args.json:
        print(json.dumps(summary))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``router`` to the ``sluice eval`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "router", help="share kept off the frontier tier vs quality and cost, on RouteLLM-style labels"
    )
    p.add_argument("--data", required=True, help="label JSONL (MMLU/GSM8K layout) or MT-Bench scores JSONL")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the metrics")
    p.add_argument("--knob", type=float, default=None, help="route small when score >= knob (default: shipped)")
    p.add_argument("--score-threshold", type=float, default=8.0, help="MT-Bench score counted as right")
    p.add_argument("--weights", default=None, help="router weights JSON (default: the shipped one)")
    p.add_argument("--tiers", default=None, help="tier config YAML for prices (default: the shipped one)")
    p.add_argument("--output-tokens", type=int, default=200, help="completion tokens assumed per request")
    p.add_argument("--limit", type=int, default=0, help="only the first N rows (0: all)")
    p.add_argument("--cache-dir", default=None, help="keep computed embeddings here for reruns")
    p.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the LM probe (SmolLM2 via llama.cpp, ~0.2 s per word problem): faster, the math head is weaker",
    )
    p.set_defaults(func=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router_eval")
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = parser.parse_args(["router", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
