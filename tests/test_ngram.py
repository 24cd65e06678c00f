"""The count-based baselines against plain-Python references that follow the formulas literally, and
their perplexities on the offline Wikitext-2 data (../shared)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from studies import ngram
from gpt2.metrics.tail import bucket_perplexity, frequency_buckets


def reference_nll(train: list[int], tokens: list[int], vocab_size: int, lam: float | None) -> list[float]:
    """-ln p of tokens[1:], one target at a time: the unigram when lam is None, else the bigram."""
    unigram, pairs = Counter(train), Counter(zip(train[:-1], train[1:]))
    context = Counter(train[:-1])
    out = []
    for u, w in zip(tokens[:-1], tokens[1:]):
        p = (unigram[w] + 1) / (len(train) + vocab_size)
        if lam is not None and context[u] > 0:
            p = lam * pairs[(u, w)] / context[u] + (1 - lam) * p
        out.append(-math.log(p))
    return out


@pytest.mark.parametrize("vocab_size, seed", [(7, 0), (30, 1), (ngram.VOCAB_SIZE, 2)])
def test_unigram_and_bigram_match_the_reference(vocab_size, seed):
    rng = np.random.default_rng(seed)
    high = min(vocab_size, 40)
    train, tokens = rng.integers(0, high, 500), rng.integers(0, high, 300)
    counts = ngram.count_ngrams(train, vocab_size)
    assert counts.n_tokens == 500 and counts.vocab_size == vocab_size
    got = ngram.unigram_nll(counts, tokens)
    want = reference_nll(train.tolist(), tokens.tolist(), vocab_size, None)
    assert got.shape == (299,)  # n - 1 targets
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    for lam in (0.0, 0.3, 0.97):
        want = reference_nll(train.tolist(), tokens.tolist(), vocab_size, lam)
        np.testing.assert_allclose(ngram.bigram_nll(counts, tokens, lam), want, rtol=1e-12, atol=0)


def test_unseen_context_falls_back_to_the_unigram():
    # Train pairs: (3, 4) twice, (4, 3) and (4, 5) once, so c(3) = c(4) = 2; 5 only ends the array (c(5) = 0).
    counts = ngram.count_ngrams(np.array([3, 4, 3, 4, 5]), vocab_size=8)
    nll = ngram.bigram_nll(counts, np.array([5, 3, 6, 4, 4, 3]), lam=0.5)
    p_uni = (np.bincount([3, 4, 3, 4, 5], minlength=8) + 1) / (5 + 8)
    want = [
        p_uni[3],  # (5, 3): 5 is never a context
        0.5 * 0 / 2 + 0.5 * p_uni[6],  # (3, 6): an unseen pair after a seen context
        p_uni[4],  # (6, 4): 6 never occurs
        0.5 * 0 / 2 + 0.5 * p_uni[4],  # (4, 4): unseen pair
        0.5 * 1 / 2 + 0.5 * p_uni[3],  # (4, 3): seen once of c(4) = 2
    ]
    np.testing.assert_allclose(nll, -np.log(want), rtol=1e-12, atol=0)


def test_bigram_distributions_sum_to_one():
    vocab_size = 12
    counts = ngram.count_ngrams(np.random.default_rng(3).integers(0, 9, 200), vocab_size)  # 9..11 unseen
    for u in range(vocab_size):
        pairs = np.stack([np.full(vocab_size, u), np.arange(vocab_size)], axis=1).ravel()  # u w u w ...
        p = np.exp(-ngram.bigram_nll(counts, pairs, lam=0.6))[::2]  # the targets w after u
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.exp(-ngram.unigram_nll(counts, np.r_[0, np.arange(vocab_size)])).sum() == pytest.approx(1.0, abs=1e-12)


def test_uint16_shards_do_not_overflow_the_pair_code():
    train = np.array([50_000, 50_256, 50_000, 50_256, 7], dtype=np.uint16)
    counts = ngram.count_ngrams(train)
    tokens = np.array([50_000, 50_256, 7], dtype=np.uint16)
    want = reference_nll(train.tolist(), tokens.tolist(), ngram.VOCAB_SIZE, 0.5)
    np.testing.assert_allclose(ngram.bigram_nll(counts, tokens, 0.5), want, rtol=1e-12, atol=0)


def test_tune_lambda_finds_the_grid_minimum():
    rng = np.random.default_rng(4)
    train = rng.integers(0, 25, 3000) // rng.integers(1, 4, 3000)  # skewed, so some pairs repeat
    heldout = rng.integers(0, 25, 800) // rng.integers(1, 4, 800)
    counts = ngram.count_ngrams(train, 25)
    lam = ngram.tune_lambda(counts, heldout)
    assert lam in ngram.LAMBDA_GRID
    mean = {g: np.mean(reference_nll(train.tolist(), heldout.tolist(), 25, g)) for g in ngram.LAMBDA_GRID.tolist()}
    assert mean[lam] <= min(mean.values()) + 1e-12
    assert ngram.tune_lambda(counts, heldout, grid=[0.2]) == 0.2


def test_perplexity_and_errors():
    assert ngram.perplexity(np.array([1.0, 2.0])) == (1.5, math.exp(1.5))
    counts = ngram.count_ngrams(np.array([1, 2, 1]), vocab_size=4)
    with pytest.raises(ValueError, match="no target"):
        ngram.perplexity(ngram.unigram_nll(counts, np.array([1])))
    with pytest.raises(ValueError, match="lam must lie in"):
        ngram.bigram_nll(counts, np.array([1, 2]), lam=1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ngram.unigram_nll(counts, np.array([1, 4]))
    with pytest.raises(ValueError, match="at least 2 training tokens"):
        ngram.count_ngrams(np.array([3]))
    with pytest.raises(ValueError, match="cannot be tuned"):
        ngram.tune_lambda(counts, np.array([3, 3]))


@pytest.mark.shared
def test_baselines_on_offline_wikitext(tmp_path, wikitext_raw, encoding):
    """The offline layout (train = 90% of wiki.valid, val = the rest, test = wiki.test). Measured when
    written: lam 0.41; first 60K test tokens: unigram 1,857.7, bigram 717.0; whole test split:
    unigram 2,014.0, bigram 879.6. The bands allow for a changed cut, not for a changed formula."""
    from data import prepare
    from data.loader import SplitTokens

    prepare.main(["--raw_dir", str(wikitext_raw), "--offline", "--out_dir", str(tmp_path)])
    train, val, test = (SplitTokens(tmp_path, s)[:] for s in ("train", "val", "test"))
    counts = ngram.count_ngrams(train)
    lam = ngram.tune_lambda(counts, val)
    assert 0.3 <= lam <= 0.55
    head = test[:60_000]
    assert 1_760 < ngram.perplexity(ngram.unigram_nll(counts, head))[1] < 1_960
    bigram = ngram.bigram_nll(counts, head, lam)
    assert 680 < ngram.perplexity(bigram)[1] < 760
    assert 1_910 < ngram.perplexity(ngram.unigram_nll(counts, test))[1] < 2_120
    assert 835 < ngram.perplexity(ngram.bigram_nll(counts, test, lam))[1] < 925
    # The bucket table reconciles with the whole, and the rarer buckets are the harder ones.
    table = bucket_perplexity(head[1:], bigram, frequency_buckets(counts.unigram))
    assert table["all"]["ppl"] == pytest.approx(ngram.perplexity(bigram)[1], rel=1e-12)
    assert table["head"]["ppl"] < table["mid"]["ppl"] < table["tail"]["ppl"] < table["unseen"]["ppl"]
