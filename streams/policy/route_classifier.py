"""Learned routing score: the probability that the small (weak) tier answers a request as well as the frontier.

Pure (stdlib + numpy): the caller supplies the request's all-MiniLM-L6-v2 unit vector and its text, so this runs
inside any stage without loading an embedder. Weights come from ``scripts/fit_router.py`` and ship as one small
JSON file. One *head* per prompt domain (exam multiple choice, math word problems, open chat), because what makes a
prompt hard differs by domain. A head sums cheap estimates of P(weak correct) - P(strong correct): two logistic
models on [embedding, text features] and soft nearest-centroid priors (topics with smoothed success rates); Platt
scaling maps the sum to the probability that routing weak loses nothing (weak right, or frontier wrong too).
A head may also read an LM probe state (the math head does: workers/embedding/lm_probe.py); the caller supplies it
for the requests ``needs_probe`` names. The cost/quality-curve maths live in route_curve.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "router.json"
DIM = 384
FORMAT = "sluice-router/1"

_MCQ = re.compile(r"\n\(?A[.)]\s.*\n\(?B[.)]\s.*\n\(?C[.)]\s.*\n\(?D[.)]\s", re.S)
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_WORDNUM = re.compile(
    r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twice|half|double|triple|third|quarter"
    r"|dozen|fifth)\b"
)
FEATURE_NAMES = (
    "log_chars",
    "log_stem_chars",
    "log_numbers",
    "log_number_words",
    "log_sentences",
    "log_max_number",
    "has_percent",
    "has_dollar",
    "log_decimals",
    "log_fractions",
    "log_comparatives",
    "log_math_symbols",
    "has_roman_numerals",
    "has_negation_cue",
    "has_statement_pair",
)


def domain_of(text: str) -> str:
    """``mcq`` for exam-style multiple choice (options A-D), else ``open`` (the embedding gate then picks a head)."""
    return "mcq" if _MCQ.search(text) else "open"


def text_features(text: str) -> np.ndarray:
    """Cheap difficulty cues the embedding misses (length, how many numbers, decimals...), in FEATURE_NAMES order."""
    nums = _NUM.findall(text)
    values = [float(x.replace(",", "")) for x in nums if x.replace(",", "").replace(".", "", 1).isdigit()]
    stem = text.split("\nA. ")[0]
    return np.array(
        [
            math.log1p(len(text)),
            math.log1p(len(stem)),
            math.log1p(len(nums)),
            math.log1p(len(_WORDNUM.findall(text.lower()))),
            math.log1p(len(re.findall(r"[.?!](?:\s|$)", stem))),
            math.log1p(min(max(values or [0.0]), 1e12)),
            float("%" in text or "percent" in text),
            float("$" in text),
            math.log1p(len(re.findall(r"\d+\.\d+", text))),
            math.log1p(len(re.findall(r"\d+/\d+", text))),
            math.log1p(len(re.findall(r"\b(?:more|less|fewer|than|times)\b", text))),
            math.log1p(len(re.findall(r"[=+*^<>]", text))),
            float(bool(re.search(r"\b(?:I|II|III|IV)\b", text))),
            float(bool(re.search(r"\b(?:NOT|EXCEPT|LEAST)\b", text))),
            float("Statement 1" in text),
        ],
        dtype=np.float64,
    )


def probe_block(probes: np.ndarray | None, mean: np.ndarray, n: int) -> np.ndarray:
    """Unit rows of (probe - mean); zeros (the average prompt) where no probe state was computed."""
    if probes is None:
        return np.zeros((n, len(mean)))
    c = np.asarray(probes, dtype=np.float64).reshape(n, -1) - mean
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return np.where(norms > 1e-12, c / np.where(norms > 1e-12, norms, 1.0), 0.0)


def with_probe(vectors: np.ndarray, probes: np.ndarray | None, probe_mean: np.ndarray) -> np.ndarray:
    """A probe-reading head's inputs: the embedding beside the centred probe state, scaled back to unit norm."""
    return np.hstack([vectors, probe_block(probes, probe_mean, len(vectors))]) / math.sqrt(2.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def encode_array(a: np.ndarray, dtype: str = "float32") -> dict[str, Any]:
    """JSON-safe array: base64 of little-endian bytes (float16 halves the size of centroids)."""
    arr = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"]).newbyteorder("<")).reshape(d["shape"]).astype(np.float64)


@dataclass(frozen=True)
class Head:
    """One domain's model; ``raw`` estimates P(weak ok) - P(strong ok), ``prob`` calibrates it."""

    feat_mean: np.ndarray  # (F,)
    feat_std: np.ndarray  # (F,)
    coef: np.ndarray  # (2, DIM + F + 1): logistic models for weak-correct and strong-correct
    centroids: tuple[tuple[np.ndarray, np.ndarray, float], ...]  # (C (k, DIM), rates (k, 2), temperature)
    calib: tuple[float, float]  # Platt scaling a, b
    knob: float  # knob reaching 95% of frontier quality in cross-validation
    probe_mean: np.ndarray | None = None  # set: the head also reads an LM probe state (see probe_block)

    def inputs(self, vectors: np.ndarray, probes: np.ndarray | None) -> np.ndarray:
        """The vectors the head was fitted on: the embedding, or it beside the centred probe state."""
        return vectors if self.probe_mean is None else with_probe(vectors, probes, self.probe_mean)

    def raw(self, vectors: np.ndarray, feats: np.ndarray) -> np.ndarray:
        z = np.clip((feats - self.feat_mean) / self.feat_std, -6.0, 6.0)
        design = np.hstack([vectors, z, np.ones((len(vectors), 1))])
        p = _sigmoid(design @ self.coef.T)
        out = p[:, 0] - p[:, 1]
        for c, rates, temp in self.centroids:
            s = (vectors @ c.T) * temp
            s -= s.max(axis=1, keepdims=True)
            w = np.exp(s)
            w /= w.sum(axis=1, keepdims=True)
            r = w @ rates
            out = out + r[:, 0] - r[:, 1]
        return out

    def prob(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calib
        return _sigmoid(a * raw + b)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feat_mean": self.feat_mean.tolist(),
            "feat_std": self.feat_std.tolist(),
            "coef": encode_array(self.coef, "float32"),
            "centroids": [
                {"centroids": encode_array(c, "float16"), "rates": r.tolist(), "temperature": t}
                for c, r, t in self.centroids
            ],
            "calib": list(self.calib),
            "knob": self.knob,
            **({} if self.probe_mean is None else {"probe_mean": encode_array(self.probe_mean, "float32")}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Head:
        cents = tuple(
            (decode_array(c["centroids"]), np.asarray(c["rates"], dtype=np.float64), float(c["temperature"]))
            for c in d.get("centroids", [])
        )
        a, b = d["calib"]
        return cls(
            feat_mean=np.asarray(d["feat_mean"], dtype=np.float64),
            feat_std=np.asarray(d["feat_std"], dtype=np.float64),
            coef=decode_array(d["coef"]),
            centroids=cents,
            calib=(float(a), float(b)),
            knob=float(d["knob"]),
            probe_mean=decode_array(d["probe_mean"]) if "probe_mean" in d else None,
        )


class RouteClassifier:
    """Scores requests: probability that the small tier suffices (route weak when score >= knob).

    Domain: exam-style multiple choice goes to the ``mcq`` head (by its text); anything else goes to the head whose
    gate centroid is nearest the embedding (e.g. ``math`` word problems vs open ``chat``).
    """

    def __init__(
        self,
        heads: dict[str, Head],
        meta: dict[str, Any] | None = None,
        gate: tuple[np.ndarray, tuple[str, ...]] | None = None,
    ) -> None:
        if not heads:
            raise ValueError("a router needs at least one head")
        if gate is not None and not set(gate[1]) <= set(heads):
            raise ValueError(f"gate names heads that do not exist: {sorted(set(gate[1]) - set(heads))}")
        self.heads = heads
        self.meta = dict(meta or {})
        self.gate = gate
        self.fallback = next((h for h in heads if h != "mcq"), "mcq")
        # Recommended single knob: the strictest per-domain CV knob, so every domain keeps >= 95% quality.
        self.default_knob: float = float(self.meta.get("recommended_knob", max(h.knob for h in heads.values())))

    @classmethod
    def load(cls, path: str | Path | None = None) -> RouteClassifier:
        doc = json.loads(Path(path or DEFAULT_PATH).read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path or DEFAULT_PATH}: not a {FORMAT} file (format={doc.get('format')!r})")
        heads = {name: Head.from_dict(h) for name, h in doc["heads"].items()}
        g = doc.get("gate")
        gate = (decode_array(g["centroids"]), tuple(g["heads"])) if g else None
        return cls(heads, doc.get("meta", {}), gate)

    def save(self, path: str | Path) -> None:
        doc: dict[str, Any] = {"format": FORMAT, "meta": self.meta}
        doc["heads"] = {k: h.to_dict() for k, h in self.heads.items()}
        if self.gate is not None:
            doc["gate"] = {"centroids": encode_array(self.gate[0], "float16"), "heads": list(self.gate[1])}
        Path(path).write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")

    @property
    def knob(self) -> float:
        """Alias of :attr:`default_knob`."""
        return self.default_knob

    def domains(self, vectors: np.ndarray, texts: Sequence[str]) -> list[str]:
        """Head name per request."""
        out = []
        for v, t in zip(np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1), texts, strict=True):
            if "mcq" in self.heads and domain_of(t) == "mcq":
                out.append("mcq")
            elif self.gate is not None:
                out.append(self.gate[1][int(np.argmax(self.gate[0] @ v))])
            else:
                out.append(self.fallback)
        return out

    def knob_for(self, vector: np.ndarray, text: str) -> float:
        """The knob tuned for this request's domain (finer than the single :attr:`knob`)."""
        return self.heads[self.domains(np.asarray(vector).reshape(1, -1), [text])[0]].knob

    def needs_probe(self, vectors: np.ndarray, texts: Sequence[str]) -> list[bool]:
        """Per request: does its head read the LM probe state (compute it only for these)."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
        return [self.heads[d].probe_mean is not None for d in self.domains(vectors, texts)]

    def score(self, vector: np.ndarray, text: str, probe: np.ndarray | None = None) -> float:
        probes = None if probe is None else np.asarray(probe).reshape(1, -1)
        return float(self.score_many(np.asarray(vector).reshape(1, -1), [text], probes)[0])

    def score_many(self, vectors: np.ndarray, texts: Sequence[str], probes: np.ndarray | None = None) -> np.ndarray:
        """P(small tier suffices) per request; ``probes`` (n, probe dim) feeds heads that read it (rows of
        other requests are ignored; without it those heads score as if the probe saw an average prompt)."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
        if vectors.shape[1] != DIM:
            raise ValueError(f"expected {DIM}-d embeddings, got {vectors.shape[1]}")
        out = np.zeros(len(texts), dtype=np.float64)
        domains = self.domains(vectors, texts)
        for name in set(domains):
            idx = np.array([i for i, d in enumerate(domains) if d == name], dtype=np.int64)
            feats = np.vstack([text_features(texts[i]) for i in idx])
            head = self.heads[name]
            rows = None if probes is None else np.asarray(probes, dtype=np.float64)[idx]
            out[idx] = head.prob(head.raw(head.inputs(vectors[idx], rows), feats))
        return out

    def routes_weak(self, vector: np.ndarray, text: str, knob: float | None = None) -> bool:
        return self.score(vector, text) >= (self.knob_for(vector, text) if knob is None else knob)
