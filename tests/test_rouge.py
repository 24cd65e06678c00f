"""gpt2.metrics.rouge against Google's rouge-score 0.1.2 (the reference implementation) on text this file
generates: mixed case, punctuation, numbers, unicode, empty texts, repeated tokens (ties in the
LCS), several lines for ROUGE-Lsum, and inflected words for use_stemmer=True. All four ROUGE types,
P/R/F each, must agree within 1e-9."""

from __future__ import annotations

import random

import pytest

from gpt2.metrics.rouge import ROUGE_TYPES, corpus_rouge, score, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
from rouge_score import tokenize as rs_tokenize  # noqa: E402

TOL = 1e-9

WORDS = "the The THE cat sat on a mat dog ran far away it is was not don't U.S. e-mail x y z 42 1,000.5 3-4".split()
SMALL = "a b c a b a".split()  # few distinct tokens: many equally long LCS paths
OTHER = "alpha beta gamma delta".split()  # never in WORDS or SMALL: no overlap
# Inflected forms that stemming conflates (runs/running/run, cats/cat, ...), and short words it leaves alone.
INFLECTED = ("run runs running Running walk walked walking walks cat cats dog dogs the a was has "
             "generalization generalizations general generally happy happiness happily relate related "
             "relational relation connect connected connection CONNECTIONS sky skies dying die agree agreed "
             "hopeful hopefulness hope hoping hopes 1990s").split()
ODD = ["café", "naïve", "Straße", "东京", "😀", "\u212a", "İstanbul", "ǅ", "&amp;", "...", "--", "!", "(x)", "\t", "'"]


def text(rng: random.Random, vocab: list[str], n: int) -> str:
    parts = [rng.choice(ODD) if rng.random() < 0.12 else rng.choice(vocab) for _ in range(n)]
    seps = [" "] * 10 + ["", "\n", "\n\n", " \n ", ". \n", "\r\n"]
    return "".join(p + rng.choice(seps) for p in parts)


def mutate(rng: random.Random, s: str, words: list[str] = WORDS) -> str:
    out = [w for w in s.split(" ") if rng.random() > 0.15]
    for _ in range(rng.randint(0, 3)):
        out.insert(rng.randint(0, len(out)), rng.choice(words + ["\n"]))
    return " ".join(out)


def pair(rng: random.Random, words: list[str] = WORDS) -> tuple[str, str]:
    r = rng.random()
    vocab = SMALL if r < 0.3 else words
    prediction = text(rng, vocab, rng.randint(0, 30))
    if r < 0.04:
        return "", prediction
    if r < 0.08:
        return prediction, ""
    if r < 0.14:
        return text(rng, OTHER, rng.randint(1, 10)), prediction
    if r < 0.5:
        return text(rng, vocab, rng.randint(0, 30)), prediction
    return mutate(rng, prediction, words), prediction


def test_tokenizer_matches_rouge_score():
    rng = random.Random(5)
    for _ in range(1000):
        s = text(rng, WORDS, rng.randint(0, 20))
        assert tokenize(s) == rs_tokenize.tokenize(s, None), repr(s)


def test_stemming_tokenizer_matches_rouge_score():
    stemmer = pytest.importorskip("nltk.stem.porter").PorterStemmer()  # what use_stemmer=True makes
    rng = random.Random(6)
    for _ in range(1000):
        s = text(rng, INFLECTED + WORDS, rng.randint(0, 20))
        assert tokenize(s, use_stemmer=True) == rs_tokenize.tokenize(s, stemmer), repr(s)


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


def test_stemmed_scores_match_rouge_score():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rng = random.Random(13)
    stemming_matters = 0
    for case in range(1000):
        target, prediction = pair(rng, INFLECTED)
        ref = scorer.score(target, prediction)
        ours = score(target, prediction, use_stemmer=True)
        for k in ROUGE_TYPES:
            got = (ours[k].precision, ours[k].recall, ours[k].fmeasure)
            assert all(abs(a - b) <= TOL for a, b in zip(got, ref[k])), (case, k, target, prediction, got, ref[k])
        stemming_matters += ours != score(target, prediction)
    assert stemming_matters >= 200  # stemming changes these scores: a stemmer that did nothing would fail


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_corpus_rouge_is_the_mean_of_per_example_scores(use_stemmer):
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    rng = random.Random(12)
    pairs = [pair(rng, INFLECTED if use_stemmer else WORDS) for _ in range(300)]
    targets, predictions = [t for t, _ in pairs], [p for _, p in pairs]
    ours = corpus_rouge(targets, predictions, use_stemmer=use_stemmer)
    if use_stemmer:
        assert ours != corpus_rouge(targets, predictions)  # the option reaches every example
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
