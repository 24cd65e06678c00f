"""gpt2/metrics/diversity.py (distinct-n, repeated 4-grams, the dominant token) against a plain-Python count."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2.metrics.diversity import distinct_n, repeated_fraction, text_stats, top_token_share


def test_text_statistics_match_a_plain_count():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 6, size=n) for n in (1, 2, 5, 30, 50)]  # a small alphabet: many repeats
    for n in (1, 2, 3):
        grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
        assert distinct_n(seqs, n) == pytest.approx(len(set(grams)) / len(grams))
    big = np.array([50256, 50255, 50256, 50255, 50256])  # the largest ids must not collide when coded
    assert distinct_n([big], 4) == 1.0 and repeated_fraction(big) == 0.0
    for s in seqs:
        grams = [tuple(s[i : i + 4]) for i in range(len(s) - 3)]
        assert repeated_fraction(s) == pytest.approx(1 - len(set(grams)) / len(grams) if grams else 0.0)
        assert top_token_share(s) == max(list(s).count(t) for t in set(s)) / len(s)
    assert text_stats([])["distinct_1"] is None
