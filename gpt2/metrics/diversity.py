"""How varied a set of token sequences is: generated text that loops or says one thing again and again
scores low. Measured over sequences of token ids (a synthetic set, or chunks of real text):

    distinct-n          unique n-grams / total n-grams, counted over the whole set (n-grams never span
                        two sequences): low values mean the set says the same things again and again
    repeated_fraction   within one sequence, the fraction of its 4-grams that already occurred earlier
                        in it: 1 - unique / total (0 for text that never repeats itself)
    top_token_share     within one sequence, the share of its most frequent token
    shared_fraction     across sequences, the share of a sequence's n-grams already in a set of others'
                        (`ngram_keys`: exact keys for any n, where `ngram_ids`' int64 codes stop at n = 4)

`text_stats` is the set's summary that distill.py and data.subset record in their manifests, and that
the studies' set statistics include (studies/sets.py); data/distill.py's filter drops a continuation whose
repeated_fraction or top_token_share is too high, and (with --max_shared_ngrams) one whose shared_fraction
against the sequences it kept before is.
"""

from __future__ import annotations

import numpy as np

from gpt2 import tokenizer


def ngram_ids(tokens: np.ndarray, n: int) -> np.ndarray:
    """The n-grams of one sequence as int64 codes (one per n-gram; equal codes <=> equal n-grams).
    Base-V digits: V**4 < 2**63 for V = 50,257, so n <= 4."""
    if not 1 <= n <= 4:
        raise ValueError(f"n-grams are coded for 1 <= n <= 4, got n={n}")
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) < n:
        return np.zeros(0, dtype=np.int64)
    code = np.zeros(len(tokens) - n + 1, dtype=np.int64)
    for i in range(n):
        code = code * tokenizer.VOCAB_SIZE + tokens[i : len(tokens) - n + 1 + i]
    return code


def ngram_keys(tokens: np.ndarray, n: int) -> list[bytes]:
    """Every n-gram of one sequence (overlapping, in order) as the bytes of its n uint16 ids: exact keys
    for a Python set, any n (~85 bytes each in a set); none when the sequence is shorter than n."""
    if len(tokens) < n:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(tokens, dtype=np.uint16), n)  # (m, n)
    return np.ascontiguousarray(windows).view(np.dtype((np.void, 2 * n)))[:, 0].tolist()


def shared_fraction(tokens: np.ndarray, seen: set[bytes], n: int) -> float:
    """The share of a sequence's n-grams (counted with repeats) whose `ngram_keys` are in `seen`; 0 if it has none."""
    keys = ngram_keys(tokens, n)
    return sum(k in seen for k in keys) / len(keys) if keys else 0.0


def distinct_n(sequences: list[np.ndarray], n: int) -> float | None:
    """Unique n-grams / total n-grams over all sequences (None when there is no n-gram)."""
    codes = [ngram_ids(s, n) for s in sequences]
    total = sum(len(c) for c in codes)
    return len(np.unique(np.concatenate(codes))) / total if total else None


def repeated_fraction(tokens: np.ndarray, n: int = 4) -> float:
    """Fraction of a sequence's n-grams that repeat an earlier one of the same sequence (0 if it has none)."""
    codes = ngram_ids(tokens, n)
    return 1.0 - len(np.unique(codes)) / len(codes) if len(codes) else 0.0


def top_token_share(tokens: np.ndarray) -> float:
    """Share of a sequence's most frequent token (0 for an empty sequence)."""
    tokens = np.asarray(tokens)
    return int(np.unique(tokens, return_counts=True)[1].max()) / len(tokens) if len(tokens) else 0.0


def text_stats(sequences: list[np.ndarray]) -> dict:
    """distinct-1/2/3 over the set, and the mean within-sequence repeated 4-gram fraction."""
    return {
        "distinct_1": distinct_n(sequences, 1),
        "distinct_2": distinct_n(sequences, 2),
        "distinct_3": distinct_n(sequences, 3),
        "repeated_4gram_fraction": float(np.mean([repeated_fraction(s) for s in sequences])) if sequences else None,
    }
