"""``sluice eval cache``: how often would the semantic cache serve a right (or wrong) answer on labelled pairs?

A pair (a, b, should_hit) stands for "a is cached, b arrives". A *hit* is cosine >= min_cosine AND verifier
score >= threshold. precision = true hits / hits; recall = true hits / should-hit pairs; hit_rate = hits / n;
false_hit_rate = false hits / should-not-hit pairs (the share of non-duplicates that would be served a wrong
answer). A ratio with an empty denominator is reported as null. Parsing and metrics are pure (no embedder) so
they are unit-testable; only ``embed_cosines`` loads the model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.policy.cache_key import semantic_text

# (first text, second text, label) column names, by layout; detected from the TSV header or the JSON keys.
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "qqp": ("question1", "question2", "is_duplicate"),
    "paws": ("sentence1", "sentence2", "label"),
    "gptcache": ("origin", "similar", "is_duplicate"),
    "pairs": ("a", "b", "should_hit"),
}
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class Pairs:
    a: list[str]
    b: list[str]
    labels: np.ndarray  # bool: should the cached answer for a be served for b?
    layout: str


@dataclass(frozen=True)
class Metrics:
    n: int
    positives: int
    negatives: int
    hits: int
    true_hits: int
    false_hits: int
    precision: float | None
    recall: float | None
    hit_rate: float | None
    false_hit_rate: float | None


def _label(value: Any) -> bool:
    if isinstance(value, str):
        value = value.strip().lower()
        if value in {"true", "yes"}:
            return True
        if value in {"false", "no", ""}:
            return False
        return float(value) >= 0.5
    return bool(value)


def _layout(keys: Sequence[str]) -> str:
    present = set(keys)
    for name, (ka, kb, ky) in LAYOUTS.items():
        if ka in present and kb in present and (ky in present or name == "gptcache"):  # mock pairs: all hits
            return name
    raise ValueError(f"unrecognised columns {sorted(present)}: expected one of {list(LAYOUTS.values())}")


def read_pairs(path: str | Path) -> Pairs:
    """Read a QQP/PAWS TSV (by header) or a JSONL of {a, b, should_hit} / {origin, similar, is_duplicate}."""
    text = Path(path).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: no pairs")
    if lines[0].lstrip().startswith("{"):
        rows: list[dict[str, Any]] = [json.loads(line) for line in lines]
        layout = _layout(list(rows[0]))
    else:
        reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        layout = _layout(reader.fieldnames or [])
        rows = list(reader)
    ka, kb, ky = LAYOUTS[layout]
    try:
        a, b = [str(r[ka]) for r in rows], [str(r[kb]) for r in rows]
        labels = np.array([_label(r.get(ky, True) if layout == "gptcache" else r[ky]) for r in rows], dtype=bool)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: malformed row ({exc})") from exc
    return Pairs(a, b, labels, layout)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def metrics(labels: np.ndarray, hits: np.ndarray) -> Metrics:
    """Cache metrics from should-hit labels and hit decisions (both bool arrays of the same length)."""
    labels, hits = np.asarray(labels, dtype=bool), np.asarray(hits, dtype=bool)
    if labels.shape != hits.shape:
        raise ValueError("labels and hits must have the same shape")
    n, pos = int(labels.size), int(labels.sum())
    true_hits, false_hits = int((hits & labels).sum()), int((hits & ~labels).sum())
    return Metrics(
        n=n,
        positives=pos,
        negatives=n - pos,
        hits=true_hits + false_hits,
        true_hits=true_hits,
        false_hits=false_hits,
        precision=_ratio(true_hits, true_hits + false_hits),
        recall=_ratio(true_hits, pos),
        hit_rate=_ratio(true_hits + false_hits, n),
        false_hit_rate=_ratio(false_hits, n - pos),
    )


def decide(cosines: np.ndarray, scores: np.ndarray, threshold: float, min_cosine: float) -> np.ndarray:
    """The cache's hit rule: above the cosine floor and verified."""
    return (np.asarray(cosines) >= min_cosine) & (np.asarray(scores) >= threshold)


def sweep(
    labels: np.ndarray, cosines: np.ndarray, scores: np.ndarray, thresholds: Sequence[float], min_cosine: float
) -> list[tuple[float, Metrics]]:
    return [(t, metrics(labels, decide(cosines, scores, t, min_cosine))) for t in thresholds]


RECALL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5)


def precision_at_recall(
    labels: np.ndarray,
    cosines: np.ndarray,
    scores: np.ndarray,
    min_cosine: float,
    levels: Sequence[float] = RECALL_LEVELS,
) -> dict[str, float | None]:
    """The best precision of any threshold on ``scores`` whose recall is at least each level (pairs below the
    cosine floor are never hits). Why: it separates a threshold problem from a ranking one; below 1 even at low
    recall means the top of the ranking holds should-not-hit pairs (label noise, or what the verifier misses).
    None where the level is out of reach (too few should-hit pairs above the floor)."""
    labels = np.asarray(labels, dtype=bool)
    reachable = np.asarray(cosines) >= min_cosine
    ranked = np.asarray(scores, dtype=np.float64)[reachable]
    order = np.argsort(-ranked, kind="stable")
    true_hits = np.cumsum(labels[reachable][order])
    precision = true_hits / np.arange(1, true_hits.size + 1)
    # a threshold keeps whole groups of equal scores: only the end of a group is a place to cut
    cut = np.append(ranked[order][1:] != ranked[order][:-1], True) if ranked.size else np.zeros(0, dtype=bool)
    out: dict[str, float | None] = {}
    for level in levels:
        ok = cut & (true_hits >= level * labels.sum()) if labels.any() else np.zeros_like(cut)
        out[f"{level:.2f}"] = round(float(precision[ok].max()), 4) if ok.any() else None
    return out


def as_compared(pairs: Pairs) -> Pairs:
    """The pairs as the semantic cache compares them (``semantic_text``: no greeting, no thanks), so the numbers
    here are the pipeline's."""
    return Pairs([semantic_text(t) for t in pairs.a], [semantic_text(t) for t in pairs.b], pairs.labels, pairs.layout)


def embed_cosines(a: Sequence[str], b: Sequence[str], cache_dir: str | Path | None = None) -> np.ndarray:
    """Cosine of each (a[i], b[i]) with the production embedder; each distinct text is embedded once.

    With ``cache_dir`` the result is kept in a .npy keyed by a hash of the texts (refits and reruns are quick)."""
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    cache: Path | None = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps([FastEmbedEmbedder.name, list(a), list(b)]).encode()).hexdigest()[:24]
        cache = Path(cache_dir) / f"cosines-{digest}.npy"
        if cache.is_file():
            return np.load(cache)
    texts = sorted(set(a) | set(b))
    index = {t: i for i, t in enumerate(texts)}
    vectors = FastEmbedEmbedder(threads=2).embed(texts)
    ia, ib = [index[t] for t in a], [index[t] for t in b]
    cosines = np.einsum("ij,ij->i", vectors[ia], vectors[ib]).astype(np.float64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, cosines)
    return cosines


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def report(
    pairs: Pairs, cosines: np.ndarray, scores: np.ndarray, threshold: float, min_cosine: float
) -> tuple[list[str], dict[str, Any]]:
    """Human-readable lines and the JSON summary for one labelled file."""
    m = metrics(pairs.labels, decide(cosines, scores, threshold, min_cosine))
    lines = [
        f"pairs: {m.n} ({pairs.layout}; {m.positives} should hit, {m.negatives} should not)",
        f"settings: threshold={threshold:.3f} min_cosine={min_cosine:.3f}",
        f"hits: {m.hits} ({m.true_hits} right, {m.false_hits} wrong)",
        f"precision {_fmt(m.precision)}  recall {_fmt(m.recall)}  hit rate {_fmt(m.hit_rate)}  "
        f"false-hit rate {_fmt(m.false_hit_rate)}  (false hits / should-not-hit pairs)",
        "",
        "threshold  precision  recall  hit_rate  false_hit_rate",
    ]
    for t, s in sweep(pairs.labels, cosines, scores, sorted({*SWEEP, round(threshold, 3)}), min_cosine):
        mark = "  <- configured" if abs(t - threshold) < 1e-9 else ""
        lines.append(
            f"{t:9.3f}  {_fmt(s.precision):>9}  {_fmt(s.recall):>6}  {_fmt(s.hit_rate):>8}  "
            f"{_fmt(s.false_hit_rate):>14}{mark}"
        )
    base = metrics(pairs.labels, np.asarray(cosines) >= min_cosine)
    lines.append(
        f"cosine only (>= {min_cosine:.2f}, no verifier): precision {_fmt(base.precision)} recall "
        f"{_fmt(base.recall)} false-hit rate {_fmt(base.false_hit_rate)}"
    )
    ceiling = precision_at_recall(pairs.labels, cosines, scores, min_cosine)
    lines.append(
        "best precision any threshold reaches, at recall: "
        + "  ".join(f"{level} {_fmt(p)}" for level, p in ceiling.items())
    )
    summary: dict[str, Any] = {
        **asdict(m),
        "threshold": threshold,
        "min_cosine": min_cosine,
        "layout": pairs.layout,
        "precision_at_recall": ceiling,
    }
    return lines, summary


def run(args: argparse.Namespace) -> int:
    from streams.policy.verifier import Verifier

    try:
        pairs = as_compared(read_pairs(args.pairs))
    except (OSError, ValueError) as exc:
        print(f"sluice eval cache: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        pairs = Pairs(pairs.a[: args.limit], pairs.b[: args.limit], pairs.labels[: args.limit], pairs.layout)
    verifier = Verifier.load(args.params) if args.params else Verifier.load()
    threshold = verifier.threshold if args.threshold is None else args.threshold
    min_cosine = verifier.min_cosine if args.min_cosine is None else args.min_cosine
    cosines = embed_cosines(pairs.a, pairs.b, args.cache_dir)
    scores = verifier.score_many(pairs.a, pairs.b, cosines)
    lines, summary = report(pairs, cosines, scores, threshold, min_cosine)
    print("\n".join(lines))
    if args.json:
        print(json.dumps(summary))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cache`` to the ``sluice eval`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "cache", help="precision/recall of the semantic cache (cosine floor + verifier) on labelled pairs"
    )
    p.add_argument("--pairs", required=True, help="QQP/PAWS TSV, or JSONL of {a, b, should_hit}")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the metrics")
    p.add_argument("--threshold", type=float, default=None, help="verifier threshold (default: shipped)")
    p.add_argument("--min-cosine", type=float, default=None, help="cosine floor (default: shipped)")
    p.add_argument("--params", default=None, help="verifier params JSON (default: the shipped one)")
    p.add_argument("--limit", type=int, default=0, help="only the first N pairs (0: all)")
    p.add_argument("--cache-dir", default=None, help="keep computed cosines here for reruns")
    p.set_defaults(func=run)
    return p
