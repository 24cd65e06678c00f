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
  neural LM's sliding-window evaluation, or `gpt2.metrics.ngram`'s `*_nll`).
- `set_statistics(sequences, train_counts, buckets)`: what a (synthetic) training set contains:
  diversity, entropy, which train types it covers, how its tokens fall into the buckets.
"""

from __future__ import annotations

import numpy as np

from gpt2.metrics.diversity import text_stats
from gpt2.tokenizer import EOT_ID

BUCKETS = ("head", "mid", "tail", "unseen")  # bucket i is named BUCKETS[i] in the (V,) bucket arrays
HEAD, MID, TAIL, UNSEEN = range(len(BUCKETS))


def frequency_buckets(train_counts: np.ndarray, cuts: tuple[float, float] = (0.5, 0.9)) -> np.ndarray:
    """(V,) int8: the bucket (HEAD, MID, TAIL or UNSEEN) of every type, from its train count (see the
    boundary rule above). `train_counts`: (V,) counts, e.g. `gpt2.metrics.ngram.type_counts(train)`."""
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
            "train_share": _share(counts.sum(), n_train),
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
            "share_targets": _share(count, len(targets)),
            "mean_nll": mean,
            "ppl": None if mean is None else float(np.exp(mean)),
            "share_nll": _share(total, nll.sum()),
        }
    return table


def set_statistics(sequences: list[np.ndarray] | np.ndarray, train_counts: np.ndarray, buckets: np.ndarray) -> dict:
    """What a training set holds, measured against the real train split.

    sequences: the set's sequences, or its flat token stream as `data.sequences` writes it (split at
    <|endoftext|> by `split_at_eot`; the separators are not counted).
    Returns distinct-1/2/3 and the repeated 4-gram fraction (`gpt2.metrics.diversity.text_stats`), the unigram
    entropy of the set in bits, how many of the train split's types it contains, and per bucket:
    types_in_set (the bucket's types that occur in the set), share_of_bucket_types (of the bucket's
    types), token_share (the share of the set's tokens that are of the bucket's types)."""
    if isinstance(sequences, np.ndarray) and sequences.ndim == 1:
        sequences = split_at_eot(sequences)
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
    tokens = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= len(train_counts)):
        raise ValueError(f"token ids must lie in [0, {len(train_counts)}), got ids from {tokens.min()} to {tokens.max()}")
    set_counts = np.bincount(tokens, minlength=len(train_counts))
    in_set, in_train = set_counts > 0, np.asarray(train_counts) > 0
    stats = {"n_sequences": len(sequences), "n_tokens": len(tokens), "n_types": int(in_set.sum()),
             **text_stats(sequences), "entropy_bits": entropy_bits(set_counts)}
    stats["train_types_in_set"] = int((in_set & in_train).sum())
    stats["share_of_train_types"] = _share(stats["train_types_in_set"], in_train.sum())
    for index, name in enumerate(BUCKETS):
        of_bucket = buckets == index
        stats[name] = {
            "types_in_set": int((in_set & of_bucket).sum()),
            "share_of_bucket_types": _share((in_set & of_bucket).sum(), of_bucket.sum()),
            "token_share": _share(set_counts[of_bucket].sum(), len(tokens)),
        }
    return stats


def entropy_bits(counts: np.ndarray) -> float | None:
    """Entropy of the distribution counts / counts.sum(), in bits (None when there are no counts)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]  # 0 log 0 = 0
    if not len(counts):
        return None
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def split_at_eot(tokens: np.ndarray) -> list[np.ndarray]:
    """A stored set's stream `EOT s0 EOT s1 ...` -> [s0, s1, ...], the separators dropped. A stream without
    EOT (the real train split) is one sequence; a sequence that itself held an EOT comes back as two."""
    tokens = np.asarray(tokens)
    pieces = np.split(tokens, np.flatnonzero(tokens == EOT_ID))  # every piece but the first starts with EOT
    first = [pieces[0]] if len(pieces[0]) else []  # text before the first EOT (all of it when there is none)
    return first + [p[1:] for p in pieces[1:]]


def _share(part, whole) -> float | None:
    return float(part / whole) if whole else None
