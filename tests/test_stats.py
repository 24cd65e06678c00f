"""Confidence intervals, the t distribution function, the paired contrast and the trend test: against
scipy.stats (when installed), numpy least squares and hand computations, on data the tests draw themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studies.stats import (T_975, format_ci, mean_ci, paired_contrast, t_975, t_cdf, t_two_sided_p,
                                trend_test)


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


def test_t_cdf_matches_scipy():
    """Over a grid of t and df = 1..200 (and a few fractional df): the distribution function to 1e-12
    absolute, the two-sided p-value to 1e-9 relative (it is what a report prints, down to tiny p)."""
    stats = pytest.importorskip("scipy.stats")
    ts = [-100.0, -12.0, -4.3, -2.0, -1.0, -0.2, -1e-3, 0.0, 1e-3, 0.05, 0.7, 1.96, 3.0, 8.0, 30.0, 1e3]
    for df in [*range(1, 201), 0.5, 2.5, 37.3]:
        for t in ts:
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=0, abs=1e-12), (t, df)
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-300), (t, df)


def test_t_cdf_closed_forms():
    """df = 1 is Cauchy and df = 2 has a closed form: near t = 0, where scipy's own t.cdf loses digits."""
    for t in [-1e-8, 1e-12, 1e-8, 0.3, -7.0]:
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-14)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-14)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0 and t_two_sided_p(0.0, 5) == 1.0
    with pytest.raises(ValueError, match="df > 0"):
        t_cdf(1.0, 0)


def test_paired_contrast_matches_scipy():
    """Mean difference, t and p against scipy.stats.ttest_rel (1e-9 relative); the interval is
    t(0.975, df) * se with t from the table: within 3e-4 relative of scipy.stats.t.ppf where df is tabulated
    (the table is rounded to 3 decimals), and never narrower elsewhere (the table rounds df down)."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(17)
    for n in [2, 3, 4, 5, 8, 11, 21, 26, 60]:
        seed_effect = rng.normal(3.0, 0.5, n)  # what a seed does to both arms
        a = seed_effect + rng.normal(0.05, 0.03, n)
        b = seed_effect + rng.normal(0.0, 0.03, n)
        got, ref = paired_contrast(list(a), list(b)), stats.ttest_rel(a, b)
        assert got["mean"] == pytest.approx(np.mean(a - b), rel=1e-12) and got["df"] == n - 1 == ref.df
        assert got["t"] == pytest.approx(ref.statistic, rel=1e-9)
        assert got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert got["se"] == pytest.approx(stats.sem(a - b), rel=1e-9)
        exact = stats.t.ppf(0.975, n - 1) * got["se"]
        if n - 1 in T_975:
            assert got["half_width"] == pytest.approx(exact, rel=3e-4), n
        else:
            assert got["half_width"] >= exact, n
        assert got["low"] == pytest.approx(got["mean"] - got["half_width"]) and got["high"] > got["low"]


def test_paired_contrast_edge_cases_and_errors():
    same = paired_contrast([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # identical arms: no difference at all
    assert same["mean"] == 0.0 and same["t"] == 0.0 and same["p"] == 1.0 and same["half_width"] == 0.0
    shifted = paired_contrast([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # the same difference on every seed
    assert shifted["t"] == math.inf and shifted["p"] == 0.0
    assert format_ci(paired_contrast([10.0, 12.0, 14.0], [0.0, 0.0, 0.0])) == "12.0 ± 5.0"
    with pytest.raises(ValueError, match="3 and 2 values"):
        paired_contrast([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_contrast([1.0], [2.0])
    with pytest.raises(ValueError, match=r"b\[1\] is nan"):
        paired_contrast([1.0, 2.0], [1.0, math.nan])


def _draw_trend(rng, n_seeds: int, per_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several x values per seed (not all the same ones), a seed level, a slope of 0.3 and noise."""
    seeds = np.repeat(np.arange(n_seeds) * 7 + 1, per_seed)
    xs = rng.uniform(0.0, 1.0, len(seeds))
    ys = 0.3 * xs + rng.normal(0.0, 2.0, n_seeds)[np.arange(len(seeds)) // per_seed] + rng.normal(0, 0.2, len(seeds))
    return xs, ys, seeds


def test_trend_test_matches_least_squares_with_seed_intercepts():
    """The within estimator equals least squares with one intercept per seed (numpy lstsq; slope and its
    standard error to 1e-9 relative), and scipy.stats.linregress on the within-seed demeaned data gives
    the same slope; its standard error, rescaled from df = n - 2 to n - n_seeds - 1, and the p-value
    from scipy.stats.t.sf with that df match to 1e-9 relative. Intervals as for the paired contrast."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(23)
    for n_seeds, per_seed in [(1, 3), (2, 3), (3, 4), (3, 7), (5, 5), (10, 3), (4, 31)]:
        xs, ys, seeds = _draw_trend(rng, n_seeds, per_seed)
        got = trend_test(list(xs), list(ys), list(seeds))
        n, df = len(xs), len(xs) - n_seeds - 1
        assert (got["n"], got["n_seeds"], got["df"]) == (n, n_seeds, df)
        design = np.column_stack([xs, seeds[:, None] == np.unique(seeds)[None, :]]).astype(float)
        beta, rss, *_ = np.linalg.lstsq(design, ys, rcond=None)
        cov = rss[0] / df * np.linalg.inv(design.T @ design)
        assert got["slope"] == pytest.approx(beta[0], rel=1e-9)
        assert got["se"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
        demean = {s: (xs[seeds == s].mean(), ys[seeds == s].mean()) for s in np.unique(seeds)}
        dx = xs - np.array([demean[s][0] for s in seeds])
        dy = ys - np.array([demean[s][1] for s in seeds])
        ref = stats.linregress(dx, dy)
        se = ref.stderr * math.sqrt((n - 2) / df)
        assert got["slope"] == pytest.approx(ref.slope, rel=1e-9) and got["se"] == pytest.approx(se, rel=1e-9)
        assert got["p"] == pytest.approx(2 * stats.t.sf(abs(ref.slope / se), df), rel=1e-9)
        exact = stats.t.ppf(0.975, df) * got["se"]
        assert got["half_width"] == pytest.approx(exact, rel=3e-4) if df in T_975 else got["half_width"] >= exact


def test_trend_test_by_hand_and_errors():
    # Two seeds at levels 0 and 10: y = 2x exactly on s1; on s2, 2x + 10 but 1 too high at x = 1.
    got = trend_test([0, 1, 2, 0, 1, 2], [0, 2, 4, 10, 13, 14], ["s1", "s1", "s1", "s2", "s2", "s2"])
    assert got["slope"] == pytest.approx(2.0) and got["df"] == 3  # sum(dx dy) / sum(dx^2) = 8 / 4
    assert got["se"] == pytest.approx(math.sqrt((2 / 3) / 3 / 4))  # residuals 0, 0, 0, -1/3, 2/3, -1/3
    with pytest.raises(ValueError, match="one seed per value"):
        trend_test([0, 1, 2], [0, 1, 2], [0, 0])
    with pytest.raises(ValueError, match="3 and 2 values"):
        trend_test([0, 1, 2], [0, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="n_seeds \\+ 2"):
        trend_test([0, 1, 0], [0, 1, 0], [0, 0, 1])  # 3 values, 2 seeds: df = 3 - 2 - 1 = 0
    with pytest.raises(ValueError, match="never varies within a seed"):
        trend_test([0, 0, 1, 1], [0, 1, 0, 2], [0, 0, 1, 1])
