"""The router's LM probe on the real shipped SmolLM2 GGUF (llama.cpp), and how the classifier and router use it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from schemas.records import Request
from streams.policy.route_classifier import RouteClassifier
from streams.settings import Settings
from streams.stages.route_probe import Probe, ProbeRunner
from streams.stages.routing import Router, build_router
from workers.embedding.lm_probe import DIM, LAYERS, LMProbe, truncated_model
from workers.local.model_files import default_model_path

WORD = "Tom has 3 apples and buys 2 more. How many apples does he have?"
HARD = "A shop sells pens at $1.25 each, or 12 for $12. Ana needs 30 pens. What is the least she can pay?"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> LMProbe:
    return LMProbe(cache_root=tmp_path_factory.mktemp("probe"))


def test_truncated_copy_keeps_the_first_blocks(tmp_path: Path) -> None:
    import gguf

    path = truncated_model(default_model_path(), 3, tmp_path)
    reader = gguf.GGUFReader(str(path))
    assert int(reader.fields["llama.block_count"].contents()) == 3
    blocks = {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")}
    assert blocks == {0, 1, 2}
    norm = next(t for t in reader.tensors if t.name == "output_norm.weight")
    assert np.all(np.asarray(norm.data) == 1.0)
    stamp = path.stat().st_mtime_ns
    assert truncated_model(default_model_path(), 3, tmp_path) == path and path.stat().st_mtime_ns == stamp


def test_probe_states_are_deterministic_and_tell_prompts_apart(probe: LMProbe) -> None:
    states = probe.probe([WORD, HARD, WORD])
    assert states.shape == (3, DIM) and np.all(np.isfinite(states))
    np.testing.assert_allclose(states[0], states[2], rtol=1e-5, atol=1e-5)
    assert not np.allclose(states[0], states[1])
    # RMS-normalised (the final norm's gain is 1 in the truncated copy)
    assert np.sqrt(np.mean(states[0].astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-2)
    long = probe.probe(["filler words here. " * 1500 + WORD])  # past the probe's context: the end is kept
    assert long.shape == (1, DIM) and np.all(np.isfinite(long))


def test_shipped_math_head_reads_the_probe(probe: LMProbe) -> None:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    clf = RouteClassifier.load()
    assert clf.heads["math"].probe_mean is not None and clf.heads["math"].probe_mean.shape == (DIM,)
    assert clf.meta["probe_layers"] == LAYERS
    texts = [WORD, HARD, "Write a haiku about autumn."]
    vecs = FastEmbedEmbedder(threads=1).embed(texts)
    need = clf.needs_probe(vecs, texts)
    assert need[:2] == [True, True] and need[2] is False
    states = probe.probe(texts)
    with_probe, without = clf.score_many(vecs, texts, states), clf.score_many(vecs, texts)
    assert with_probe[0] != pytest.approx(without[0], abs=1e-6)
    assert with_probe[2] == pytest.approx(without[2])  # the chat head ignores its probe row
    assert np.all((with_probe > 0) & (with_probe < 1))


def _request(text: str) -> Request:
    return Request(id="r1", tenant="t", session="s", prompt=text)


def test_router_computes_the_probe_only_for_heads_that_read_it(tmp_path: Path) -> None:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    router = build_router(Settings(data_dir=str(tmp_path)))
    emb = FastEmbedEmbedder(threads=1)
    word, chat = (_request(t) for t in (WORD, "Write a haiku about autumn."))
    state = asyncio.run(router.probe_state(word, emb.embed([WORD])[0]))
    assert state is not None and state.shape == (DIM,)
    assert asyncio.run(router.probe_state(chat, emb.embed(["Write a haiku about autumn."])[0])) is None
    decision, _ = router(word, emb.embed([WORD])[0], state)
    assert decision.score is not None
    off = build_router(Settings(data_dir=str(tmp_path), router_probe=False))
    assert asyncio.run(off.probe_state(word, emb.embed([WORD])[0])) is None


def test_a_failing_probe_degrades_to_scoring_without_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from workers.embedding.fastembed_embedder import FastEmbedEmbedder

    def broken() -> Probe:
        raise OSError("model file unreadable")  # fault injection: the model cannot load

    base = build_router(Settings(data_dir=str(tmp_path), router_probe=False))
    runner = ProbeRunner(broken)
    router = Router(Settings(data_dir=str(tmp_path)), base.tiers, base.classifier, probe=runner)
    vec = FastEmbedEmbedder(threads=1).embed([WORD])[0]
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(router.probe_state(_request(WORD), vec)) is None
    assert "router probe unavailable" in caplog.text and not runner.enabled
    assert asyncio.run(router.probe_state(_request(WORD), vec)) is None  # off for good: no retry per request
    decision, _ = router(_request(WORD), vec, None)
    assert decision.tier and decision.score is not None


def test_probe_runner_bounds_the_wait() -> None:
    release = threading.Event()

    def slow(texts: Sequence[str]) -> np.ndarray:  # a stand-in that blocks until released (the real one is ~0.2 s)
        release.wait(5)
        return np.ones((len(texts), DIM))

    runner = ProbeRunner(lambda: slow, max_pending=2)

    async def burst() -> list[np.ndarray | None]:
        tasks = [asyncio.ensure_future(runner.state(f"q{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        return list(await asyncio.gather(*tasks))

    out = asyncio.run(burst())
    assert sum(o is not None for o in out) == 2 and sum(o is None for o in out) == 3
    assert runner.counts["probed"] == 2 and runner.counts["skipped:busy"] == 3
    runner.close()
