"""Pair features for the semantic-cache verifier: cheap lexical evidence cosine similarity cannot see.

Order-sensitive overlaps, numbers, negations, antonyms, named entities, question words and length, per pair of
prompts. Pure stdlib + numpy; ``verifier.py`` scores these with the fitted model, and the word lists they use
live in ``verifier_lexicon.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet

import numpy as np

from streams.policy.verifier_lexicon import (
    ANTONYMS,
    BARE_CONTRACTIONS,
    NEGATIONS,
    NUMBER_WORDS,
    PHRASAL_IN_OUT,
    STOPWORDS,
    STRICT_WH,
    WH_WORDS,
    YES_NO,
)

# 'C++' and 'C#' are not 'C'; '180°C' is '180' and '°c', not 'c'.
_TOKEN = re.compile(r"°?[^\W_]+(?:[.,]\d+)*(?:'[^\W_]+)?(?:\+\+|#(?!\w))?")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_NEG_PREFIX = re.compile(r"^(un|dis|non|de|in|im|il|ir|anti|mis)-?(\w{4,})$")

# Column order of the fitted trees; verifier.json repeats it and load() refuses params fitted on another list.
FEATURE_NAMES: tuple[str, ...] = tuple(
    """cosine unigram_jaccard bigram_jaccard trigram_jaccard char3_jaccard order_discordance
    span_swap content_unmatched_min content_unmatched_max content_unmatched_frac number_mismatch
    number_one_sided negation_mismatch negation_flip antonym entity_substitution entity_unmatched wh_mismatch
    wh_strict_mismatch wh_conflict qtype_mismatch first2_equal length_ratio log_length""".split()
)
N_FEATURES = len(FEATURE_NAMES)


_PHRASAL = re.compile(r"\b(" + "|".join(sorted(PHRASAL_IN_OUT)) + r")(?:s|ed|ing)? (in|out)\b")


def tokenize(text: str) -> list[str]:
    """Lowercased word/number tokens (any script); keeps n't and 's attached so negation survives, and joins
    'zoom in' / 'zoom out' (lexicon.PHRASAL_IN_OUT) into one word each."""
    text = _PHRASAL.sub(r"\1\2", text.lower().replace("’", "'"))
    return [BARE_CONTRACTIONS.get(t, t) for t in _TOKEN.findall(text)]


def stem(token: str) -> str:
    """A crude suffix stripper: 'designing'/'designs'/'design' collapse, which is all overlap needs."""
    if token.endswith("'s"):
        token = token[:-2]
    if len(token) > 5 and token.endswith("ing"):
        return token[:-3]
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith("ed"):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


_UNIT = re.compile(r"(\d+)(?:[.:]\d+)? ?(am|pm|°c|°f)(?!\w)")


def numbers(tokens: Sequence[str]) -> set[str]:
    """Digit runs inside tokens ('v2.10' -> '2.10', '30th' -> '30') plus number words as digits ('five' == '5');
    a time of day keeps its half and a temperature its scale ('7 pm' -> '7pm', '180°C' -> '180°c')."""
    text = " ".join(tokens)
    found = {NUMBER_WORDS[t] for t in tokens if t in NUMBER_WORDS}.union(_DIGITS.findall(text))
    return found.union(value + unit for value, unit in _UNIT.findall(text))


_OPERATOR = re.compile(r"[<>=!+*/%^&|~]+")


def operators(text: str) -> set[str]:
    """Operator runs outside words ('age > 30' -> {'>'}, '3 // 2' -> {'//'}): the tokens drop them, yet they
    change what code or a formula means. A run of '!' alone is punctuation; 'C++' is a word (a token)."""
    return {op for op in _OPERATOR.findall(_TOKEN.sub(" ", text.lower())) if op.strip("!")}


def _negations(tokens: Sequence[str]) -> list[int]:
    """Positions of negating tokens, skipping the non-negating 'why not' / 'or not' / 'if not'."""
    return [
        i
        for i, t in enumerate(tokens)
        if (t in NEGATIONS or t.endswith("n't")) and not (t == "not" and i and tokens[i - 1] in ("why", "or", "if"))
    ]


def entities(text: str) -> set[str]:
    """Lowercased capitalised words that are not sentence-initial: a cheap stand-in for named entities."""
    found: set[str] = set()
    initial = True
    for match in _TOKEN.finditer(text):
        word = match.group()
        if not initial and word[0].isupper() and word != "I":
            found.add(word.lower())
        tail = text[match.end() : match.end() + 2].strip()
        initial = tail[:1] in {".", "?", "!", ":"}
    return found


def _jaccard(x: AbstractSet[Hashable], y: AbstractSet[Hashable]) -> float:
    union = len(x | y)
    return len(x & y) / union if union else 1.0


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    padded = ["<s>", *tokens, "</s>"]
    return {tuple(padded[i : i + n]) for i in range(len(padded) - n + 1)}


def _discordance(ta: Sequence[str], tb: Sequence[str]) -> float:
    """Kendall distance of the content tokens that occur once in each text: how much word order changed."""
    pos_b = {t: i for i, t in enumerate(tb) if tb.count(t) == 1}
    seq = [pos_b[t] for t in ta if t in pos_b and ta.count(t) == 1 and t not in STOPWORDS and t not in WH_WORDS]
    n = len(seq)
    flips = sum(1 for i in range(n) for j in range(i + 1, n) if seq[i] > seq[j])
    return flips / (n * (n - 1) / 2) if n > 1 else 0.0


_SYMMETRIC = frozenset({"and", "or", "nor", "vs", "versus", "plus", "&"})


def span_swap(ta: Sequence[str], tb: Sequence[str]) -> bool:
    """b is a with two spans exchanged around an asymmetric middle: 'from X to Y' vs 'from Y to X'.

    After trimming the common prefix and suffix, a = S1 M S2 and b = S2 M S1 with M non-empty (an empty M is
    a rotation, 'muscle building' / 'building muscle'); an M holding 'and'/'or'/'vs' is symmetric."""
    i = 0
    while i < min(len(ta), len(tb)) and ta[i] == tb[i]:
        i += 1
    j = 0
    while j < min(len(ta), len(tb)) - i and ta[-1 - j] == tb[-1 - j]:
        j += 1
    ma, mb = list(ta[i : len(ta) - j]), list(tb[i : len(tb) - j])
    if not ma or len(ma) != len(mb) or len(ma) > 12 or sorted(ma) != sorted(mb):
        return False
    n = len(ma)
    for x in range(1, n):
        for y in range(x + 1, n):
            if mb == ma[y:] + ma[x:y] + ma[:x] and _SYMMETRIC.isdisjoint(ma[x:y]):
                return True
    return False


def _forms(tokens: AbstractSet[str]) -> set[str]:
    """Each token, its stem and stem+'e' ('enabled' -> 'enabl' -> 'enable'), and a superlative's base ('fastest'
    -> 'fast', 'largest' -> 'large', 'biggest' -> 'big', 'earliest' -> 'early'), to look antonyms up."""
    out = set(tokens)
    for t in tokens:
        s = stem(t)
        out.update((s, s + "e"))
        if len(t) > 5 and t.endswith("est"):
            base = t[:-3]
            out.update((base, base + "e", base[:-1] + "y" if base.endswith("i") else base))
            if base[-1] == base[-2]:
                out.add(base[:-1])
    return out


def _antonym(only_a: AbstractSet[str], only_b: AbstractSet[str]) -> bool:
    """One side has a word whose opposite (listed, or un-/dis-/non-... prefixed) only the other side has."""
    if not only_a or not only_b:
        return False
    fa, fb = _forms(only_a), _forms(only_b)
    fa, fb = fa - fb, fb - fa  # 'buy, sell' vs 'buying, selling' has both sides of the pair on both sides
    for x in fa:
        opposite = ANTONYMS.get(x)
        if opposite is not None and not opposite.isdisjoint(fb) and opposite.isdisjoint(fa):
            return True
    for mine, other in ((fa, fb), (fb, fa)):
        for word in mine:
            m = _NEG_PREFIX.match(word)
            if m is not None and m.group(2) in other and m.group(1) not in other:  # 'nonzero' vs 'non-zero'
                return True
    return False


def _qtype(tokens: Sequence[str]) -> str:
    first = tokens[0] if tokens else ""
    if first in STRICT_WH:
        return first
    if first in ("how", "what", "which", "what's"):
        return "open"
    return "yesno" if first in YES_NO else "other"


def pair_features(a: str, b: str, cosine: float) -> np.ndarray:
    """Feature vector (order: FEATURE_NAMES) for a candidate pair whose embedding cosine is ``cosine``."""
    ta, tb = tokenize(a), tokenize(b)
    sa, sb = {stem(t) for t in ta}, {stem(t) for t in tb}
    ca = {t for t in sa - sb if t not in STOPWORDS and t not in WH_WORDS}
    cb = {t for t in sb - sa if t not in STOPWORDS and t not in WH_WORDS}
    content = {t for t in sa | sb if t not in STOPWORDS and t not in WH_WORDS}
    na, nb = numbers(ta), numbers(tb)
    oa, ob = operators(a), operators(b)  # an operator swapped for another counts as a differing number
    ent_a = {e for e in entities(a) if stem(e) not in sb}
    ent_b = {e for e in entities(b) if stem(e) not in sa}
    wa, wb = [t for t in ta if t in WH_WORDS][:1], [t for t in tb if t in WH_WORDS][:1]
    xa, xb = STRICT_WH.intersection(ta), STRICT_WH.intersection(tb)
    nega, negb = _negations(ta), _negations(tb)
    plain_a = {stem(t) for i, t in enumerate(ta) if i not in nega and t not in STOPWORDS}
    plain_b = {stem(t) for i, t in enumerate(tb) if i not in negb and t not in STOPWORDS}
    qa, qb = _qtype(ta), _qtype(tb)
    la, lb = a.lower(), b.lower()
    return np.array(
        [
            cosine,
            _jaccard(sa, sb),
            _jaccard(_ngrams(ta, 2), _ngrams(tb, 2)),
            _jaccard(_ngrams(ta, 3), _ngrams(tb, 3)),
            _jaccard({la[i : i + 3] for i in range(len(la) - 2)}, {lb[i : i + 3] for i in range(len(lb) - 2)}),
            _discordance(ta, tb),
            float(span_swap(ta, tb)),
            min(len(ca), len(cb), 3),
            min(max(len(ca), len(cb)), 5),
            (len(ca) + len(cb)) / max(len(content), 1),
            float((bool(na) and bool(nb) and na != nb) or (bool(oa - ob) and bool(ob - oa))),
            float(na != nb and not (na and nb)),
            float(len(nega) % 2 != len(negb) % 2),
            float(len(nega) % 2 != len(negb) % 2 and plain_a == plain_b),
            float(_antonym(set(ta) - set(tb), set(tb) - set(ta))),
            float(bool(ent_a) and bool(ent_b)),
            min(len(ent_a) + len(ent_b), 4),
            float(bool(wa) and bool(wb) and wa != wb),
            float(xa != xb),
            float(bool(xa) and bool(xb) and xa.isdisjoint(xb)),
            float(qa != qb and "other" not in (qa, qb)),
            float(ta[:2] == tb[:2]),
            min(len(ta), len(tb)) / max(len(ta), len(tb), 1),
            math.log1p((len(ta) + len(tb)) / 2),
        ],
        dtype=np.float64,
    )
