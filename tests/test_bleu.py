"""gpt2.metrics.bleu against sacrebleu 2.x (the reference implementation) on text this file generates:
words, punctuation, numbers with separators, HTML entities, unicode, empty strings, several
references of different lengths. Every figure must agree within 1e-9."""

from __future__ import annotations

import random

import pytest

from gpt2.metrics.bleu import corpus_bleu, sentence_bleu, tokenize_13a

sacrebleu = pytest.importorskip("sacrebleu")
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # noqa: E402

TOL = 1e-9

WORDS = ("the cat sat on a mat The Cat dog ran far away over there it is was not "
         "well-known e-mail U.S. don't it's o'clock rock'n'roll x y z").split()
OTHER_WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()  # never in WORDS: no overlap
SYMBOLS = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--", "''", ",,", ".,", "-.", ",-"]
ENTITIES = ["&amp;", "&quot;", "&#39;", "&lt;", "&gt;", "&amp;lt;", "&nbsp;", "&", "<skipped>", "&quot;hi&quot;"]
UNICODE = ["café", "naïve", "Straße", "東京", "北京大学", "😀", "👍🏽", "—", "…", "’", "«", "»", "\u00a0", "Ω", "٣"]


def number(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.randint(0, 99999):,}", f"{rng.randint(0, 9999):,}.{rng.randint(0, 99)}", f"{rng.randint(0, 9)}-{rng.randint(0, 9)}",
        f".{rng.randint(0, 9)}", f"{rng.randint(0, 9)}.", f"{rng.randint(0, 99)},", f"{rng.randint(0, 9)}-", "1,000.5", "3-4",
    ])


def pieces(rng: random.Random, n: int, words=WORDS) -> list[str]:
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            out.append(rng.choice(words))
        elif kind < 0.75:
            out.append(rng.choice(SYMBOLS))
        elif kind < 0.85:
            out.append(number(rng))
        elif kind < 0.93:
            out.append(rng.choice(ENTITIES))
        else:
            out.append(rng.choice(UNICODE))
    return out


def join(rng: random.Random, parts: list[str]) -> str:
    """Mostly spaces; sometimes glued ("end."), doubled, tabs, newlines, "-\\n"; trailing blanks."""
    seps = [" "] * 12 + ["", "", "  ", "\t", "\n", "-\n"]
    text = "".join(p + rng.choice(seps) for p in parts)
    return text + rng.choice(["", "", " ", "\n", " \n"])


def mutate(rng: random.Random, parts: list[str]) -> list[str]:
    """A reference near the hypothesis: some pieces dropped, replaced or inserted, so that
    3- and 4-grams match sometimes."""
    out = []
    for p in parts:
        r = rng.random()
        if r < 0.1:
            continue
        out.append(rng.choice(WORDS) if r < 0.2 else p)
        if rng.random() < 0.08:
            out.append(rng.choice(WORDS))
    return out


def segment(rng: random.Random, n_refs: int) -> tuple[str, list[str]]:
    if rng.random() < 0.05:
        return "", [join(rng, pieces(rng, rng.randint(0, 8))) for _ in range(n_refs)]
    hyp = pieces(rng, rng.randint(0, 25))
    refs = []
    for _ in range(n_refs):
        r = rng.random()
        if r < 0.05:
            refs.append("")
        elif r < 0.12:
            refs.append(join(rng, pieces(rng, rng.randint(1, 15), OTHER_WORDS)))  # likely no overlap
        elif r < 0.3:
            refs.append(join(rng, pieces(rng, rng.randint(0, 30))))  # unrelated, any length
        else:
            refs.append(join(rng, mutate(rng, hyp)))
    return join(rng, hyp), refs


def assert_same(ours, ref, context):
    assert abs(ours.score - ref.score) <= TOL, context
    assert all(abs(a - b) <= TOL for a, b in zip(ours.precisions, ref.precisions, strict=True)), context
    assert abs(ours.bp - ref.bp) <= TOL, context
    assert (ours.sys_len, ours.ref_len) == (ref.sys_len, ref.ref_len), context
    assert list(ours.counts) == list(ref.counts) and list(ours.totals) == list(ref.totals), context


def test_tokenizer_matches_13a_on_every_character_in_context():
    tok = Tokenizer13a()
    for code in list(range(0x250)) + [0x2014, 0x2019, 0x3000, 0x00A0, 0x1F600]:
        c = chr(code)
        for line in (f"a{c}b", f"1{c}2", f"{c}1.{c},x{c}", f" {c}{c} end{c}", f"3{c}-4{c}.5"):
            assert tokenize_13a(line) == tok(line.rstrip()).split(), repr(line)


def test_tokenizer_matches_13a_on_generated_text():
    tok = Tokenizer13a()
    rng = random.Random(13)
    for _ in range(2000):
        line = join(rng, pieces(rng, rng.randint(0, 30)))
        assert tokenize_13a(line) == tok(line.rstrip()).split(), repr(line)


@pytest.mark.parametrize("n_streams", [1, 2, 3, 4])
def test_corpus_bleu_matches_sacrebleu(n_streams):
    rng = random.Random(100 + n_streams)
    for case in range(300):
        segments = [segment(rng, n_streams) for _ in range(rng.randint(1, 6))]
        hyps = [h for h, _ in segments]
        streams = [[refs[k] for _, refs in segments] for k in range(n_streams)]
        ref = sacrebleu.corpus_bleu(hyps, streams)
        assert_same(corpus_bleu(hyps, streams), ref, (case, hyps, streams))


def test_corpus_bleu_matches_sacrebleu_on_a_large_corpus():
    rng = random.Random(7)
    segments = [segment(rng, 2) for _ in range(2000)]
    hyps = [h for h, _ in segments]
    streams = [[refs[k] for _, refs in segments] for k in range(2)]
    ours, ref = corpus_bleu(hyps, streams), sacrebleu.corpus_bleu(hyps, streams)
    assert ref.score > 1.0 and ref.counts[3] > 0  # the generator does produce matching 4-grams
    assert_same(ours, ref, "large corpus")


def test_sentence_bleu_matches_sacrebleu():
    rng = random.Random(21)
    seen = {"zero": 0, "4-gram match": 0, "short": 0}
    for case in range(1200):
        hyp, refs = segment(rng, rng.randint(1, 4))
        ref = sacrebleu.sentence_bleu(hyp, refs)
        assert_same(sentence_bleu(hyp, refs), ref, (case, hyp, refs))
        seen["zero"] += ref.score == 0
        seen["4-gram match"] += ref.counts[3] > 0
        seen["short"] += 0 < ref.totals[0] and ref.totals[3] == 0  # effective order in use
    assert min(seen.values()) >= 50, seen  # the generator reaches every regime


def test_edge_corpora_match_sacrebleu():
    cases = [
        (["", ""], [["", ""]]),  # nothing at all: BLEU 0, BP 1
        (["", ""], [["a b c", "d"]]),  # empty output: BP 0
        (["a b c d e", ""], [["a b c d e", "x y"]]),
        (["the cat"], [["the cat sat on the mat"], ["the cat"]]),  # closest reference length
        (["a b c"], [["a b"], ["a b c d"]]),  # equally close: the shorter reference wins
        (["a b c d"], [["a b c d"], [None]]),  # a missing reference in the second stream
        (["x y", "a b c"], [["x y z", "a b"], [None, "a b c"]]),
        (["a a a a a a a"], [["a a"], ["a a a"]]),  # clipping to the largest count in one reference
    ]
    for hyps, streams in cases:
        assert_same(corpus_bleu(hyps, streams), sacrebleu.corpus_bleu(hyps, streams), (hyps, streams))


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_bleu([], [[]])
    with pytest.raises(ValueError, match="3 hypotheses but reference stream 1 holds 2"):
        corpus_bleu(["a", "b", "c"], [["a", "b", "c"], ["a", "b"]])
    with pytest.raises(TypeError, match=r"corpus_bleu\(hyps, \[refs\]\)"):
        corpus_bleu(["a b", "c d"], ["a b", "c d"])  # references not wrapped in a list of streams
    with pytest.raises(TypeError, match="list of strings"):
        corpus_bleu("a b c", [["a b c"]])
    with pytest.raises(ValueError, match="segment 0 has no reference"):
        corpus_bleu(["a"], [[None]])
    with pytest.raises(TypeError, match=r"sentence_bleu\(hyp, \[ref\]\)"):
        sentence_bleu("a b", "a b")
