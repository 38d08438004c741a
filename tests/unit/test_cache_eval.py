"""``sluice eval cache``: file layouts, exact metrics, and the CLI's final JSON line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from streams.evaluation import cache_eval
from streams.evaluation.cache_eval import decide, metrics, precision_at_recall, read_pairs, sweep


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_qqp_layout_with_literal_quotes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "qqp.tsv",
        'pair_id\tquestion1\tquestion2\tis_duplicate\n1\tWhat is "AI"?\tWhat\'s AI?\t1\n2\tHi\tBye\t0\n',
    )
    pairs = read_pairs(path)
    assert pairs.layout == "qqp"
    assert pairs.a == ['What is "AI"?', "Hi"] and pairs.b == ["What's AI?", "Bye"]
    assert pairs.labels.tolist() == [True, False]


def test_reads_the_paws_layout(tmp_path: Path) -> None:
    path = write(tmp_path, "paws.tsv", "id\tsentence1\tsentence2\tlabel\n1\tA met B .\tB met A .\t0\n2\tx\ty\t1\n")
    pairs = read_pairs(path)
    assert (pairs.layout, pairs.a, pairs.b, pairs.labels.tolist()) == (
        "paws",
        ["A met B .", "x"],
        ["B met A .", "y"],
        [False, True],
    )


def test_reads_jsonl_pairs_and_the_gptcache_mock_layout(tmp_path: Path) -> None:
    rows = [{"a": "enable 2FA", "b": "disable 2FA", "should_hit": False}, {"a": "hi", "b": "hello", "should_hit": True}]
    pairs = read_pairs(write(tmp_path, "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n"))
    assert pairs.layout == "pairs" and pairs.labels.tolist() == [False, True] and pairs.b == ["disable 2FA", "hello"]

    mock = [{"id": 0, "origin": "o1", "similar": "s1", "is_duplicate": 1}, {"id": 1, "origin": "o2", "similar": "s2"}]
    pairs = read_pairs(write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in mock)))
    assert pairs.layout == "gptcache" and pairs.a == ["o1", "o2"] and pairs.labels.tolist() == [True, True]


def test_unknown_layouts_and_empty_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unrecognised columns"):
        read_pairs(write(tmp_path, "x.tsv", "foo\tbar\n1\t2\n"))
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs(write(tmp_path, "e.jsonl", "\n"))


def test_metrics_on_a_hand_made_set_are_exact() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0, 0], dtype=bool)
    hits = np.array([1, 0, 1, 0, 1, 0, 0], dtype=bool)
    m = metrics(labels, hits)
    assert (m.n, m.positives, m.negatives, m.hits, m.true_hits, m.false_hits) == (7, 3, 4, 3, 2, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.hit_rate == pytest.approx(3 / 7) and m.false_hit_rate == pytest.approx(1 / 4)


def test_empty_denominators_are_none_not_zero() -> None:
    m = metrics(np.array([True, True]), np.array([False, False]))
    assert m.precision is None and m.false_hit_rate is None and m.recall == 0.0
    with pytest.raises(ValueError):
        metrics(np.array([True]), np.array([True, False]))


def test_a_hit_needs_both_the_cosine_floor_and_the_verifier() -> None:
    cos = np.array([0.95, 0.95, 0.70, 0.85])
    score = np.array([0.90, 0.50, 0.99, 0.80])
    assert decide(cos, score, threshold=0.8, min_cosine=0.8).tolist() == [True, False, False, True]
    labels = np.array([True, False, True, True])
    rows = sweep(labels, cos, score, [0.0, 0.85, 1.0], min_cosine=0.8)
    assert [m.hits for _, m in rows] == [3, 1, 0]
    assert rows[1][1].precision == 1.0 and rows[1][1].recall == pytest.approx(1 / 3)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate = sub.add_parser("eval")
    cache_eval.register(evaluate.add_subparsers(dest="eval_command", required=True))
    return parser.parse_args(["eval", "cache", *argv])


def test_register_wires_the_cache_subcommand() -> None:
    args = parse(["--pairs", "f.tsv", "--threshold", "0.7", "--min-cosine", "0.85", "--json"])
    assert args.func is cache_eval.run
    assert (args.pairs, args.threshold, args.min_cosine, args.json) == ("f.tsv", 0.7, 0.85, True)
    defaults = parse(["--pairs", "f.tsv"])
    assert defaults.threshold is None and defaults.min_cosine is None and not defaults.json


def test_run_prints_metrics_and_ends_with_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"a": "How do I reset my password?", "b": "How can I reset my password?", "should_hit": True},
        {"a": "How do I enable 2FA on my account?", "b": "How do I disable 2FA on my account?", "should_hit": False},
        {"a": "What is the capital of France?", "b": "What's the capital city of France?", "should_hit": True},
        {"a": "Did Messi beat Ronaldo?", "b": "Did Ronaldo beat Messi?", "should_hit": False},
    ]
    path = write(tmp_path, "pairs.jsonl", "\n".join(json.dumps(r) for r in rows))
    args = parse(["--pairs", str(path), "--json"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("precision" in line for line in out[:-1]) and any("threshold" in line for line in out[:-1])
    summary = json.loads(out[-1])
    assert {"precision", "recall", "false_hit_rate", "n", "hit_rate", "threshold", "min_cosine"} <= set(summary)
    assert summary["n"] == 4 and summary["false_hit_rate"] == 0.0 and summary["recall"] == 1.0
    assert any(line.startswith("best precision any threshold reaches") for line in out[:-1])
    assert summary["precision_at_recall"]["0.50"] == 1.0  # the verifier ranks both paraphrases first


NEAR_MISSES = Path(__file__).resolve().parent.parent / "fixtures" / "near_miss_pairs.jsonl"


def test_hand_written_near_misses_are_never_served(capsys: pytest.CaptureFixture[str]) -> None:
    """209 prompts one word, entity, number, unit, operator, quantifier, negation, format or direction away from a
    cached one (2FA on/off, km to miles and back, C++ and C, today and tomorrow, 7am and 7pm, 180°C and 180°F, all
    and some, zoom in and out, fastest and slowest, "dont", "in one word", "age > 30" and "age < 30") and 33
    paraphrases, through the real embedder and the shipped verifier.
    A regression check written while tuning, not an estimate: the QQP/PAWS cross-validation is that."""
    args = parse(["--pairs", str(NEAR_MISSES), "--json"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["n"], summary["negatives"]) == (242, 209)
    assert summary["false_hits"] == 0
    assert summary["recall"] >= 0.5  # and a strict verifier still serves most of the true paraphrases


def test_run_reports_a_bad_file_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--pairs", str(tmp_path / "missing.tsv")])
    assert args.func(args) == 2
    assert "sluice eval cache" in capsys.readouterr().err


def test_precision_at_recall_is_the_best_any_threshold_reaches() -> None:
    """Ranked by score: right, wrong, right, right (and one should-hit pair below the cosine floor, unreachable)."""
    labels = np.array([True, False, True, True, True])
    cosines = np.array([0.9, 0.9, 0.9, 0.9, 0.5])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.99])
    got = precision_at_recall(labels, cosines, scores, 0.8, (0.25, 0.5, 0.75, 1.0))
    assert got == {"0.25": 1.0, "0.50": 0.75, "0.75": 0.75, "1.00": None}
    for level, p in got.items():  # each value is what the best threshold at that recall gives
        if p is None:
            continue
        best = max(
            (m.precision or 0.0)
            for t in scores
            if (m := metrics(labels, decide(cosines, scores, t, 0.8))).recall is not None and m.recall >= float(level)
        )
        assert p == round(best, 4)
    tied = precision_at_recall(np.array([True, True, False]), np.full(3, 0.9), np.full(3, 0.5), 0.8, (0.5,))
    assert tied == {"0.50": 0.6667}  # no threshold separates equal scores
    assert precision_at_recall(np.array([False]), np.array([0.9]), np.array([0.9]), 0.8) == {
        f"{level:.2f}": None for level in (0.1, 0.2, 0.3, 0.4, 0.5)
    }
