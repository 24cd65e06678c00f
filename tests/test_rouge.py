"""gpt2.rouge against Google's rouge-score 0.1.2 (the reference implementation) on text this file
generates: mixed case, punctuation, numbers, unicode, empty texts, repeated tokens (ties in the
LCS), several lines for ROUGE-Lsum. All four ROUGE types, P/R/F each, must agree within 1e-9."""

from __future__ import annotations

import random

import pytest

from gpt2.rouge import ROUGE_TYPES, corpus_rouge, score, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
from rouge_score import tokenize as rs_tokenize  # noqa: E402

TOL = 1e-9

WORDS = "the The THE cat sat on a mat dog ran far away it is was not don't U.S. e-mail x y z 42 1,000.5 3-4".split()
SMALL = "a b c a b a".split()  # few distinct tokens: many equally long LCS paths
OTHER = "alpha beta gamma delta".split()  # never in WORDS or SMALL: no overlap
ODD = ["café", "naïve", "Straße", "东京", "😀", "\u212a", "İstanbul", "ǅ", "&amp;", "...", "--", "!", "(x)", "\t", "'"]


def text(rng: random.Random, vocab: list[str], n: int) -> str:
    parts = [rng.choice(ODD) if rng.random() < 0.12 else rng.choice(vocab) for _ in range(n)]
    seps = [" "] * 10 + ["", "\n", "\n\n", " \n ", ". \n", "\r\n"]
    return "".join(p + rng.choice(seps) for p in parts)


def mutate(rng: random.Random, s: str) -> str:
    words = s.split(" ")
    out = [w for w in words if rng.random() > 0.15]
    for _ in range(rng.randint(0, 3)):
        out.insert(rng.randint(0, len(out)), rng.choice(WORDS + ["\n"]))
    return " ".join(out)


def pair(rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    vocab = SMALL if r < 0.3 else WORDS
    prediction = text(rng, vocab, rng.randint(0, 30))
    if r < 0.04:
        return "", prediction
    if r < 0.08:
        return prediction, ""
    if r < 0.14:
        return text(rng, OTHER, rng.randint(1, 10)), prediction
    if r < 0.5:
        return text(rng, vocab, rng.randint(0, 30)), prediction
    return mutate(rng, prediction), prediction


def test_tokenizer_matches_rouge_score():
    rng = random.Random(5)
    for _ in range(1000):
        s = text(rng, WORDS, rng.randint(0, 20))
        assert tokenize(s) == rs_tokenize.tokenize(s, None), repr(s)


def test_scores_match_rouge_score():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    rng = random.Random(11)
    lsum_differs = 0
    for case in range(1500):
        target, prediction = pair(rng)
        ref = scorer.score(target, prediction)
        ours = score(target, prediction)
        for k in ROUGE_TYPES:
            got = (ours[k].precision, ours[k].recall, ours[k].fmeasure)
            assert all(abs(a - b) <= TOL for a, b in zip(got, ref[k])), (case, k, target, prediction, got, ref[k])
        lsum_differs += ref["rougeLsum"].fmeasure != ref["rougeL"].fmeasure
    assert lsum_differs >= 100  # the multi-line summary-level LCS is really exercised


def test_corpus_rouge_is_the_mean_of_per_example_scores():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    rng = random.Random(12)
    pairs = [pair(rng) for _ in range(300)]
    targets, predictions = [t for t, _ in pairs], [p for _, p in pairs]
    ours = corpus_rouge(targets, predictions)
    per_example = [scorer.score(t, p) for t, p in pairs]
    for k in ROUGE_TYPES:
        for i, field in enumerate(("precision", "recall", "fmeasure")):
            expected = sum(s[k][i] for s in per_example) / len(pairs)
            assert abs(getattr(ours[k], field) - expected) <= TOL, (k, field)


def test_known_values():
    # Hand-checkable: LCS "the cat the mat" = 4 of 6 target / 5 prediction tokens.
    s = score("the cat sat on the mat", "the cat and the mat")
    assert (s["rougeL"].precision, s["rougeL"].recall) == (4 / 5, 4 / 6)
    assert (s["rouge2"].precision, s["rouge2"].recall) == (2 / 4, 2 / 5)  # "the cat", "the mat" match
    assert score("", "a b")["rouge1"].fmeasure == 0.0


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        corpus_rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        corpus_rouge([], [])
    with pytest.raises(TypeError, match="two strings"):
        score(["a"], "a")
