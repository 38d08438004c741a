"""The cache verifier: lexical features catch meaning flips cosine misses; the shipped model scores sensibly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.policy.verifier import DEFAULT_MIN_COSINE, DEFAULT_THRESHOLD, PARAMS_PATH, Verifier
from streams.policy.verifier_features import (
    FEATURE_NAMES,
    N_FEATURES,
    numbers,
    pair_features,
    span_swap,
    stem,
    tokenize,
)


def feats(a: str, b: str, cosine: float = 0.95) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, pair_features(a, b, cosine).tolist(), strict=True))


def test_tokenize_and_stem_normalise_case_contractions_and_suffixes() -> None:
    assert tokenize("Why DOESN'T my 2FA code work?") == ["why", "doesn't", "my", "2fa", "code", "work"]
    assert tokenize("Café déjà vu") == ["café", "déjà", "vu"]
    assert tokenize("C++ or C#, not C; item#3") == ["c++", "or", "c#", "not", "c", "item", "3"]
    assert tokenize("Whats up if it dont? Its fine") == ["what's", "up", "if", "it", "don't", "its", "fine"]
    assert {stem("designing"), stem("designs"), stem("design")} == {"design"}
    assert stem("this") == "this" and stem("class") == "class"
    assert numbers(tokenize("the five best movies of 2016, one by one, 30th")) == {"5", "2016", "30"}


def test_enable_vs_disable_is_an_antonym_and_a_paraphrase_is_not() -> None:
    assert feats("How do I enable 2FA?", "How do I disable 2FA?")["antonym"] == 1.0
    assert feats("How to increase my credit score", "How to decrease my credit score")["antonym"] == 1.0
    assert feats("How do I lock the screen?", "How do I unlock the screen?")["antonym"] == 1.0
    assert feats("Should I buy Tesla stock?", "Should I sell Tesla stock?")["antonym"] == 1.0
    assert feats("How do I enable 2FA?", "How can I turn on two-factor auth?")["antonym"] == 0.0
    # Any two words of one group (days, times of day, weekdays, seasons, months) name different things.
    assert feats("Weather in Paris today?", "Weather in Paris tomorrow?")["antonym"] == 1.0
    assert feats("Is the museum open on Monday?", "Is the museum open on Sundays?")["antonym"] == 1.0
    assert feats("Flights to Rome in March", "Flights to Rome in May")["antonym"] == 0.0  # 'may' is a verb too
    assert feats("Do all birds fly?", "Do some birds fly?")["antonym"] == 1.0
    assert feats("How do I zoom in on a Mac?", "How do I zoom out on a Mac?")["antonym"] == 1.0
    assert feats("How do I find out my IP?", "How do I check my IP in Windows?")["antonym"] == 0.0  # bare in/out
    assert feats("Which is the fastest land animal?", "Which is the slowest land animal?")["antonym"] == 1.0
    assert feats("What is the biggest planet?", "What is the smallest planet?")["antonym"] == 1.0
    assert tokenize("Log in, then checked out") == ["login", "then", "checkout"]
    assert feats("Block inbound traffic on port 22", "Block outbound traffic on port 22")["antonym"] == 1.0
    assert feats("Does ibuprofen cause drowsiness?", "Does ibuprofen prevent drowsiness?")["antonym"] == 1.0


def test_number_mismatch_only_when_both_sides_name_different_numbers() -> None:
    assert feats("What is 15% of 200?", "What is 20% of 200?")["number_mismatch"] == 1.0
    assert feats("Best laptop under $1000", "Best laptop under $500")["number_mismatch"] == 1.0
    assert feats("Is the iPhone 6 good?", "Is the iPhone 7 good?")["number_mismatch"] == 1.0
    assert feats("Set an alarm for 7am", "Set an alarm for 7 pm")["number_mismatch"] == 1.0
    assert feats("Set an alarm for 7am", "Set an alarm for 7 am")["number_mismatch"] == 0.0
    assert feats("Bake at 180°C for how long?", "Bake at 180°F for how long?")["number_mismatch"] == 1.0
    assert feats("Is it in v2.10.0?", "Is it in version 2.10.0?")["number_mismatch"] == 0.0
    assert feats("What are the five best movies?", "What are the 5 best movies?")["number_mismatch"] == 0.0
    # An operator swapped for another is a different number too; one side's extra '/' or '&' is not.
    assert feats("Explain: WHERE age > 30", "Explain: WHERE age < 30")["number_mismatch"] == 1.0
    assert feats("Output of print(3 // 2)?", "Output of print(3 / 2)?")["number_mismatch"] == 1.0
    assert feats("Is C++ hard? Really!", "Is C++ hard?!")["number_mismatch"] == 0.0
    assert feats("Where were you/what did you do on 9/11?", "Where were you on 9/11?")["number_mismatch"] == 0.0
    one_sided = feats("Top 10 recruitment portals", "Best recruitment portals")
    assert one_sided["number_mismatch"] == 0.0 and one_sided["number_one_sided"] == 1.0


def test_swapped_entities_keep_the_words_but_break_order_features() -> None:
    f = feats("Did Messi beat Ronaldo?", "Did Ronaldo beat Messi?")
    assert f["unigram_jaccard"] == 1.0 and f["bigram_jaccard"] < 0.5
    assert f["span_swap"] == 1.0 and f["order_discordance"] == 1.0
    assert span_swap(tokenize("Flights from New York to London"), tokenize("Flights from London to New York"))
    assert feats("Convert Celsius to Fahrenheit", "Convert Fahrenheit to Celsius")["span_swap"] == 1.0
    # symmetric relations are not swaps
    assert not span_swap(tokenize("difference between Java and Python"), tokenize("difference between Python and Java"))
    same = feats("How do I reset my password?", "How can I reset my password?")
    assert same["span_swap"] == 0.0 and same["order_discordance"] == 0.0


def test_entities_negation_and_question_words() -> None:
    assert feats("Who is the CEO of Apple?", "Who is the CEO of Microsoft?")["entity_substitution"] == 1.0
    assert feats("Is coffee good for you?", "Is coffee not good for you?")["negation_flip"] == 1.0
    assert feats("Is it safe? Why or why not?", "Is it safe?")["negation_mismatch"] == 0.0  # 'why not' negates nothing
    assert feats("Where was Einstein born?", "When was Einstein born?")["wh_conflict"] == 1.0
    assert feats("How do I learn Python?", "What is the best way to learn Python?")["wh_conflict"] == 0.0


def test_features_are_finite_for_degenerate_inputs() -> None:
    for a, b in [("", ""), ("?", "!"), ("a", ""), ("same same same", "same")]:
        f = pair_features(a, b, 0.5)
        assert f.shape == (N_FEATURES,) and np.isfinite(f).all()


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load()


def test_shipped_params_load_and_agree_with_the_module_defaults(verifier: Verifier) -> None:
    params = json.loads(PARAMS_PATH.read_text())
    assert params["feature_names"] == list(FEATURE_NAMES)
    assert verifier.threshold == DEFAULT_THRESHOLD == params["threshold"]
    assert verifier.min_cosine == DEFAULT_MIN_COSINE == params["min_cosine"]
    assert 0.5 <= DEFAULT_THRESHOLD < 1.0 and 0.5 <= DEFAULT_MIN_COSINE < 1.0
    assert {"qqp", "paws", "gptcache"} <= set(params["cv"])  # the measured CV metrics ship with the params
    assert PARAMS_PATH.stat().st_size < 32_000


# Cosines below are what the shipped all-MiniLM-L6-v2 int8 embedder gives for these pairs.
def test_enable_vs_disable_2fa_scores_below_threshold(verifier: Verifier) -> None:
    for cosine in (0.895, 0.99):
        assert verifier.score("How do I enable 2FA?", "How do I disable 2FA?", cosine) < DEFAULT_THRESHOLD
    assert not verifier.accepts("How do I enable 2FA on my account?", "How do I disable 2FA on my account?", 0.909)


@pytest.mark.parametrize(
    ("a", "b", "cosine"),
    [
        ("Did Messi beat Ronaldo?", "Did Ronaldo beat Messi?", 0.995),
        ("What is 15% of 200?", "What is 20% of 200?", 0.826),
        ("Where was Einstein born?", "When was Einstein born?", 0.930),
        ("Is coffee good for your health?", "Is coffee not good for your health?", 0.964),
        ("How do I write a C++ program to reverse a list?", "How do I write a C program to reverse a list?", 0.882),
        ("What's it like to have a boyfriend?", "What's it like to have a girlfriend?", 0.875),
        ("How long should I boil an egg for a soft yolk?", "How long should I boil an egg for a hard yolk?", 0.966),
    ],
)
def test_meaning_flips_are_rejected(verifier: Verifier, a: str, b: str, cosine: float) -> None:
    assert verifier.score(a, b, cosine) < DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    ("a", "b", "cosine"),
    [
        ("How do I reset my password?", "How can I reset my password?", 0.991),
        ("How do I center a div in CSS?", "How can I center a div using CSS?", 0.988),
        ("Who wrote Hamlet?", "Who is the author of Hamlet?", 0.951),
    ],
)
def test_true_paraphrases_score_above_threshold(verifier: Verifier, a: str, b: str, cosine: float) -> None:
    assert verifier.score(a, b, cosine) >= DEFAULT_THRESHOLD
    assert verifier.accepts(a, b, cosine)
    assert not verifier.accepts(a, b, DEFAULT_MIN_COSINE - 0.01)  # below the floor nothing is served


def test_score_many_matches_score(verifier: Verifier) -> None:
    a = ["How do I enable 2FA?", "How do I reset my password?", "Did Messi beat Ronaldo?", "", "What is AI?"]
    b = ["How do I disable 2FA?", "How can I reset my password?", "Did Ronaldo beat Messi?", "x", "Explain AI"]
    cos = np.array([0.9, 0.99, 0.99, 0.1, 0.85])
    many = verifier.score_many(a, b, cos)
    assert many.shape == (5,) and ((many >= 0) & (many <= 1)).all()
    assert np.allclose(many, [verifier.score(x, y, c) for x, y, c in zip(a, b, cos, strict=True)])
    assert verifier.score_many([], [], []).shape == (0,)
    with pytest.raises(ValueError):
        verifier.score_many(["a"], ["b", "c"], [0.9])


def _params(**over: object) -> dict:
    """Two depth-1 stumps on cosine and antonym, plus one guard: small enough to check by hand."""
    inner = [[0], [FEATURE_NAMES.index("antonym")]]
    params = {
        "feature_names": list(FEATURE_NAMES),
        "base_logit": 0.0,
        "trees": {"depth": 1, "feature": inner, "threshold": [[0.9], [0.5]], "leaf": [[-1.0, 2.0], [0.5, -3.0]]},
        "guards": {"negation_flip": 1.0},
        "guard_cap": 0.05,
        "threshold": 0.7,
        "min_cosine": 0.8,
    }
    return {**params, **over}


def test_tree_inference_and_guards_match_a_hand_computation() -> None:
    v = Verifier(_params())
    x = np.zeros((3, N_FEATURES))
    x[0, 0], x[1, 0], x[2, 0] = 0.95, 0.5, 0.95
    x[2, FEATURE_NAMES.index("negation_flip")] = 1.0
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert np.allclose(v.predict(x), [sig(2.0 + 0.5), sig(-1.0 + 0.5), 0.05])


def test_params_for_other_features_are_refused() -> None:
    with pytest.raises(ValueError, match="other features"):
        Verifier(_params(feature_names=["cosine"]))
    with pytest.raises(ValueError, match="malformed"):
        Verifier(_params(trees={"depth": 2, "feature": [[0]], "threshold": [[0.9]], "leaf": [[0.0, 1.0]]}))


def _fit_script():  # scripts/ is not a package: load the refit script by path
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fit_verifier.py"
    spec = importlib.util.spec_from_file_location("fit_verifier", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_at_recall_is_the_best_precision_at_or_above_each_recall() -> None:
    fit = _fit_script()  # the script reports the ranking ceiling with sluice eval cache's function
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1] * 4, dtype=bool)  # 24 positives
    score = np.linspace(1.0, 0.0, labels.size)  # ranked in file order
    curve = fit.precision_at_recall(labels, np.ones(labels.size), score, 0.8, (0.05, 0.5))
    assert curve["0.05"] == 0.75  # recall 0.05 needs 2 positives: cutting at rank 4 keeps 3 of 4
    assert curve["0.50"] == 0.625  # 12 positives: rank 20 keeps 12/20, rank 24 keeps 15/24
