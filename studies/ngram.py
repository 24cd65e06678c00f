"""Count-based baseline language models over GPT-2 token ids: what a neural LM has to beat.

Both are trained on one token array (the real train split) and score another, V = 50,257 types:

    unigram (add-one, Laplace)   p(w)     = (c(w) + 1) / (N + V)
    interpolated bigram          p(w | u) = lam * c(u, w) / c(u) + (1 - lam) * p_unigram(w)
                                 p(w | u) = p_unigram(w)                      when c(u) = 0

c(w) counts w over the N training tokens; c(u, w) counts the adjacent pair (u, w); c(u) counts u as
the left side of a pair (positions 0..N-2), so that c(u, w) / c(u) sums to 1 over w. lam is a free
argument; `tune_lambda` picks it on a held-out array (the val split), never on the scored one.

What is scored: the targets t[1..n-1] of an evaluation array t[0..n-1], i.e. n - 1 targets, for both
models (the unigram ignores t[0] as the bigram must), exactly the targets a neural LM's sliding-window
evaluation scores (`gpt2/metrics/windows.py`), so their perplexities are over the same tokens.
`*_nll` return the per-target NLL in nats, (n - 1,), for `gpt2.metrics.tail.bucket_perplexity`;
`perplexity` turns them into the mean NLL and exp(mean NLL).

Everything is vectorised: pairs are coded as one int64, u * V + w, counted with np.unique and looked
up with np.searchsorted; no Python loop runs over tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpt2.metrics.tail import checked_ids, type_counts
from gpt2.tokenizer import VOCAB_SIZE

LAMBDA_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)  # tune_lambda's candidates: 0.01, 0.02, ..., 0.99


@dataclass(frozen=True)
class NgramCounts:
    """The counts of a training array: everything the unigram and bigram models need."""

    unigram: np.ndarray  # (V,) int64: c(w), occurrences of w among all N training tokens
    context: np.ndarray  # (V,) int64: c(u), occurrences of u at positions 0..N-2 (the left side of a pair)
    pair_codes: np.ndarray  # (P,) int64, sorted ascending: u * V + w of each distinct adjacent pair
    pair_counts: np.ndarray  # (P,) int64: c(u, w) of the pair with the same index in pair_codes

    @property
    def vocab_size(self) -> int:
        return len(self.unigram)

    @property
    def n_tokens(self) -> int:
        return int(self.unigram.sum())


def count_ngrams(train: np.ndarray, vocab_size: int = VOCAB_SIZE) -> NgramCounts:
    """Unigram, context and pair counts of a training token array (at least 2 tokens)."""
    train = checked_ids(train, vocab_size)
    if len(train) < 2:
        raise ValueError(f"a bigram model needs at least 2 training tokens, got {len(train)}")
    codes, counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    return NgramCounts(
        unigram=type_counts(train, vocab_size),
        context=np.bincount(train[:-1], minlength=vocab_size).astype(np.int64),
        pair_codes=codes,
        pair_counts=counts.astype(np.int64),
    )


def unigram_nll(counts: NgramCounts, tokens: np.ndarray) -> np.ndarray:
    """(n - 1,) float64: -ln p(t[i]) for i = 1..n-1 under the add-one unigram."""
    targets = checked_ids(tokens, counts.vocab_size)[1:]
    return -np.log(_unigram_prob(counts, targets))


def bigram_nll(counts: NgramCounts, tokens: np.ndarray, lam: float) -> np.ndarray:
    """(n - 1,) float64: -ln p(t[i] | t[i-1]) for i = 1..n-1 under the interpolated bigram."""
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"lam must lie in [0, 1), got {lam}: lam = 1 gives the bigrams never seen in "
                         "training probability 0 (infinite NLL); pick it with tune_lambda")
    p_pair, p_uni, seen = _bigram_parts(counts, checked_ids(tokens, counts.vocab_size))
    return -np.log(np.where(seen, lam * p_pair + (1.0 - lam) * p_uni, p_uni))


def tune_lambda(counts: NgramCounts, heldout: np.ndarray, grid: np.ndarray = LAMBDA_GRID) -> float:
    """The lam of `grid` with the lowest mean bigram NLL on `heldout` (the first one on a tie).

    That NLL is convex in lam (each term is -ln of a line in lam), so a fine grid finds its minimum
    to within the grid step; the probabilities are computed once and only the mix is redone per lam."""
    p_pair, p_uni, seen = _bigram_parts(counts, checked_ids(heldout, counts.vocab_size))
    p_pair, p_uni = p_pair[seen], p_uni[seen]  # targets without a seen context do not depend on lam
    if len(p_pair) == 0:
        raise ValueError("no held-out target follows a token seen in training: lam cannot be tuned on it")
    grid = np.asarray(grid, dtype=np.float64)
    mean_nll = [-np.log(lam * p_pair + (1.0 - lam) * p_uni).mean() for lam in grid]
    return float(grid[int(np.argmin(mean_nll))])


def perplexity(nll: np.ndarray) -> tuple[float, float]:
    """(mean NLL in nats, perplexity = exp(mean NLL)) of per-target NLLs."""
    if len(nll) == 0:
        raise ValueError("no target to score: an evaluation array needs at least 2 tokens")
    mean = float(np.mean(nll))
    return mean, math.exp(mean)


def _unigram_prob(counts: NgramCounts, targets: np.ndarray) -> np.ndarray:
    return (counts.unigram[targets] + 1.0) / (counts.n_tokens + counts.vocab_size)


def _bigram_parts(counts: NgramCounts, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the targets t[1:]: c(u, w) / c(u) (0 where c(u) = 0), p_unigram(w), and c(u) > 0."""
    u, w = tokens[:-1], tokens[1:]
    codes = u * counts.vocab_size + w
    # Where each code would sit in the sorted table of seen pairs; a pair is seen iff it sits there.
    at = np.minimum(np.searchsorted(counts.pair_codes, codes), len(counts.pair_codes) - 1)
    pair = np.where(counts.pair_codes[at] == codes, counts.pair_counts[at], 0)
    context = counts.context[u]
    p_pair = pair / np.maximum(context, 1)  # pair > 0 implies context > 0, so this is c(u, w) / c(u)
    return p_pair, _unigram_prob(counts, w), context > 0
