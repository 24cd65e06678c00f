"""Confidence intervals: the t table against scipy (when installed) and a hand computation."""

from __future__ import annotations

import math

import pytest

from gpt2.metrics.stats import T_975, format_ci, mean_ci, t_975


def test_t_table_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df, t in T_975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4), df


def test_mean_ci_by_hand():
    ci = mean_ci([10.0, 12.0, 14.0])  # mean 12, s = 2, n = 3
    assert ci["mean"] == 12.0 and ci["n"] == 3
    assert ci["half_width"] == pytest.approx(4.303 * 2 / math.sqrt(3))
    assert format_ci(ci) == "12.0 ± 5.0"
    assert mean_ci([5.0])["half_width"] is None and format_ci(mean_ci([5.0]), 2) == "5.00"
    assert t_975(22) == T_975[20]  # between rows: the wider interval
    with pytest.raises(ValueError):
        mean_ci([])
