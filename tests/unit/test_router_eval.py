"""``sluice eval router``: label parsing, and one run on the first 200 GSM8K dev rows (real embedder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streams.evaluation import router_eval

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K = DATA / "routellm_gsm8k_labels.jsonl"


def test_read_labels_both_layouts(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        '{"id": "a", "prompt": "1+1?", "mixtral_8x7b_correct": true, "gpt4_1106_correct": true}\n'
        '{"id": "b", "prompt": "Prove it.", "mixtral_8x7b_correct": false, "gpt4_1106_correct": true}\n'
    )
    got = router_eval.read_labels(labels)
    assert got.layout == "labels" and got.texts == ["1+1?", "Prove it."]
    assert got.weak.tolist() == [1.0, 0.0] and got.strong.tolist() == [1.0, 1.0]
    scores = tmp_path / "scores.jsonl"
    scores.write_text(
        '{"question_id": 1, "turn": 1, "prompt": "Write a poem.", "gpt4_1106_score": 9.0, "mixtral_8x7b_score": 7.5}\n'
    )
    got = router_eval.read_labels(scores)
    assert got.layout == "scores" and got.weak.tolist() == [0.0] and got.strong.tolist() == [1.0]
    assert router_eval.read_labels(scores, score_threshold=7.0).weak.tolist() == [1.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        router_eval.read_labels(bad)


@pytest.mark.skipif(not GSM8K.is_file(), reason="needs the shared dev data")
def test_run_json_on_200_gsm8k_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = GSM8K.read_text(encoding="utf-8").split("\n")[:200]
    data = tmp_path / "gsm8k200.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    router_eval.register(parser.add_subparsers(dest="eval_command"))
    args = parser.parse_args(["router", "--data", str(data), "--json", "--cache-dir", str(tmp_path / "cache")])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    summary = json.loads(lines[-1])
    assert {"weak_share_at_95", "quality_at_knob", "n", "frontier_quality", "weak_quality", "cost_ratio_at_95"} <= set(
        summary
    )
    assert summary["n"] == 200
    assert 0.0 <= summary["weak_share_at_95"] <= 1.0 and 0.0 <= summary["quality_at_knob"] <= 1.0
    assert summary["cost_ratio_at_95"] <= 1.0
    assert any("kept_off_frontier" in line for line in lines)
    # a fixed knob above every probability keeps everything on the frontier tier
    args = parser.parse_args(["router", "--data", str(data), "--json", "--knob", "1.01"])
    args.cache_dir = str(tmp_path / "cache")
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    assert summary["weak_share_at_knob"] == 0.0 and summary["quality_at_knob"] == summary["frontier_quality"]
