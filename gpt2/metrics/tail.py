"""Metrics that can see the tail: does a training set teach the rare tokens, or only add noise?

The vocabulary is cut into frequency buckets by each type's count in the real train split
(`frequency_buckets`), and every figure is then reported per bucket:

    head     the most frequent types, together holding the first 50% of the train tokens
    mid      the next types, up to 90% of the train tokens
    tail     the remaining types seen in train
    unseen   the types never seen in train (count 0)

Boundary rule. A type's bucket depends only on its count c, through M(c) = the number of train tokens
of the types strictly more frequent than it: head if M(c) < 0.5 N, else mid if M(c) < 0.9 N, else
tail (N = train tokens; the cuts are the `cuts` argument). So a type that straddles a cut (its tokens
lie on both sides of it) goes to the more frequent bucket, and so do all the types with the same count:
the head holds at least 50% of the mass, and each bucket is a range of counts ("tail = types seen at
most k times"). A type whose tokens end exactly at a cut is inside it; the next type is not.

- `bucket_perplexity(targets, nll, buckets)`: a model's NLL per bucket of the targets it scored (a
  neural LM's sliding-window evaluation, or the study's n-gram baselines, `studies/ngram.py`).
- `type_counts(tokens)`: how often each type occurs, the counts the buckets are cut from.
"""

from __future__ import annotations

import numpy as np

from gpt2.tokenizer import VOCAB_SIZE

BUCKETS = ("head", "mid", "tail", "unseen")  # bucket i is named BUCKETS[i] in the (V,) bucket arrays
HEAD, MID, TAIL, UNSEEN = range(len(BUCKETS))


def type_counts(tokens: np.ndarray, vocab_size: int = VOCAB_SIZE) -> np.ndarray:
    """(V,) int64: how often each token id occurs in `tokens`."""
    tokens = checked_ids(tokens, vocab_size)
    return np.bincount(tokens, minlength=vocab_size).astype(np.int64)


def frequency_buckets(train_counts: np.ndarray, cuts: tuple[float, float] = (0.5, 0.9)) -> np.ndarray:
    """(V,) int8: the bucket (HEAD, MID, TAIL or UNSEEN) of every type, from its train count (see the
    boundary rule above). `train_counts`: (V,) counts, e.g. `type_counts(train)`."""
    head_cut, mid_cut = cuts
    if not 0.0 < head_cut <= mid_cut <= 1.0:
        raise ValueError(f"cuts must satisfy 0 < head <= mid <= 1 (shares of the train tokens), got {cuts}")
    train_counts = np.asarray(train_counts, dtype=np.int64)
    n_train = int(train_counts.sum())
    # M(c) for each distinct count: the mass of all larger counts (a reverse cumulative sum).
    values, inverse, n_types = np.unique(train_counts, return_inverse=True, return_counts=True)
    mass = values * n_types
    mass_above = np.cumsum(mass[::-1])[::-1] - mass
    buckets = np.select([mass_above < head_cut * n_train, mass_above < mid_cut * n_train], [HEAD, MID], TAIL)
    buckets = buckets[inverse.ravel()].astype(np.int8)
    buckets[train_counts == 0] = UNSEEN
    return buckets


def bucket_summary(train_counts: np.ndarray, buckets: np.ndarray) -> dict[str, dict]:
    """Per bucket: its number of types, its share of the train tokens and the range of its counts."""
    train_counts = np.asarray(train_counts, dtype=np.int64)
    n_train = int(train_counts.sum())
    table = {}
    for index, name in enumerate(BUCKETS):
        counts = train_counts[buckets == index]
        table[name] = {
            "n_types": len(counts),
            "train_share": share_of(counts.sum(), n_train),
            "min_count": int(counts.min()) if len(counts) else None,
            "max_count": int(counts.max()) if len(counts) else None,
        }
    return table


def bucket_perplexity(targets: np.ndarray, nll: np.ndarray, buckets: np.ndarray) -> dict[str, dict]:
    """A model's scored targets, split by the bucket of each target token.

    targets: (n,) token ids; nll: (n,) their NLL in nats. Per bucket, and for "all" of them:
    n_targets, share_targets (of n), mean_nll, ppl = exp(mean_nll), share_nll (of the summed NLL).
    A bucket without targets has mean_nll and ppl None."""
    targets, nll = np.asarray(targets, dtype=np.int64), np.asarray(nll, dtype=np.float64)
    if targets.shape != nll.shape or targets.ndim != 1:
        raise ValueError(f"targets and nll must be 1-D arrays of one length, got shapes {targets.shape} and {nll.shape}")
    of_target = buckets[targets]
    n = np.bincount(of_target, minlength=len(BUCKETS))
    summed = np.bincount(of_target, weights=nll, minlength=len(BUCKETS))
    rows = [(name, int(n[i]), float(summed[i])) for i, name in enumerate(BUCKETS)]
    rows.append(("all", len(targets), float(nll.sum())))
    table = {}
    for name, count, total in rows:
        mean = total / count if count else None
        table[name] = {
            "n_targets": count,
            "share_targets": share_of(count, len(targets)),
            "mean_nll": mean,
            "ppl": None if mean is None else float(np.exp(mean)),
            "share_nll": share_of(total, nll.sum()),
        }
    return table


def share_of(part, whole) -> float | None:
    return float(part / whole) if whole else None


def checked_ids(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """int64 token ids (uint16 shards would overflow in u * V + w), checked to lie in [0, V)."""
    tokens = np.asarray(tokens).astype(np.int64, copy=False)
    if tokens.ndim != 1:
        raise ValueError(f"expected a 1-D array of token ids, got shape {tokens.shape}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got ids from {tokens.min()} to {tokens.max()}")
    return tokens
