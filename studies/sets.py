"""What a training set holds, measured against the real train split: the study's set statistics.

- `set_statistics(sequences, train_counts, buckets)`: diversity, entropy, which train types the set covers,
  how its tokens fall into the frequency buckets of `gpt2.metrics.tail`.
"""

from __future__ import annotations

import numpy as np

from gpt2.metrics.diversity import text_stats
from gpt2.metrics.tail import BUCKETS, share_of
from gpt2.tokenizer import EOT_ID


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
    stats["share_of_train_types"] = share_of(stats["train_types_in_set"], in_train.sum())
    for index, name in enumerate(BUCKETS):
        of_bucket = buckets == index
        stats[name] = {
            "types_in_set": int((in_set & of_bucket).sum()),
            "share_of_bucket_types": share_of((in_set & of_bucket).sum(), of_bucket.sum()),
            "token_share": share_of(set_counts[of_bucket].sum(), len(tokens)),
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
