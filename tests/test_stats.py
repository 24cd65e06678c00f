"""Confidence intervals, the t distribution function, the paired contrast, the trend test, the sign-flip test
and Holm's adjustment: against scipy.stats (when installed), numpy least squares, brute force, statsmodels'
formula written out and hand computations, on data the tests draw themselves."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from studies.stats import (T_975, format_ci, holm, mean_ci, paired_contrast, sign_flip_test, t_975, t_cdf,
                           t_two_sided_p, trend_test, welch_contrast)


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


def test_welch_contrast_matches_scipy():
    """Mean difference, Welch-Satterthwaite df, t and p against scipy.stats.ttest_ind(equal_var=False); the
    interval never narrower than scipy's exact one (t_975 at df rounded down), within 5% of it at these sizes."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for n_a, n_b, sd_b in [(2, 2, 1.0), (3, 5, 0.3), (5, 5, 2.0), (5, 3, 0.1), (8, 13, 1.0)]:
        a, b = rng.normal(0.4, 1.0, n_a), rng.normal(0.0, sd_b, n_b)
        got, ref = welch_contrast(list(a), list(b)), stats.ttest_ind(a, b, equal_var=False)
        assert got["mean"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
        assert got["t"] == pytest.approx(ref.statistic, rel=1e-9) and got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert got["df"] == pytest.approx(ref.df, rel=1e-9)
        low, high = ref.confidence_interval(0.95)
        assert got["half_width"] >= (high - low) / 2 * (1 - 1e-9)
        assert got["half_width"] <= (high - low) / 2 * 1.05 or got["df"] < 3
    assert welch_contrast([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    with pytest.raises(ValueError, match="at least 2 values on each side"):
        welch_contrast([1.0], [1.0, 2.0])


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


def _draw_differences(rng, n: int) -> np.ndarray:
    """Per-seed differences: continuous ones, or small integers with ties, zeros and mirrored values."""
    return rng.normal(0.03, 0.05, n) if rng.random() < 0.5 else rng.integers(-3, 4, n).astype(float)


def test_sign_flip_matches_brute_force():
    """Every sign assignment written out with itertools and numpy: the share whose |mean| reaches the observed."""
    rng = np.random.default_rng(5)
    for n in [1, 2, 3, 4, 5, 6, 8, 10, 12]:
        for _ in range(3):
            d = _draw_differences(rng, n)
            means = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product([1.0, -1.0], repeat=n)]
            expected = sum(m >= abs(np.mean(d)) - 1e-12 for m in means) / 2**n
            got = sign_flip_test(list(d))
            assert got["p"] == pytest.approx(expected, rel=1e-12), d
            assert (got["n"], got["n_assignments"], got["min_p"]) == (n, 2**n, min(1.0, 2 / 2**n))
            assert got["mean"] == pytest.approx(np.mean(d), rel=1e-12, abs=1e-15)


def test_sign_flip_matches_scipy_permutation_test():
    """scipy.stats.permutation_test on paired samples (permutation_type='samples' swaps a[i] and b[i], i.e. flips
    the sign of d[i]), every permutation (n_resamples=inf): its two-sided p, 2 min(P(T <= t), P(T >= t)), equals
    P(|T| >= |t|) because the sign-flip distribution is symmetric. To 1e-12 relative."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(11)
    for n in [2, 3, 4, 5, 7, 9, 12]:
        for _ in range(3):
            b = rng.normal(3.0, 0.5, n)
            a = b + _draw_differences(rng, n)
            ref = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                         permutation_type="samples", n_resamples=np.inf, alternative="two-sided")
            assert sign_flip_test(list(a - b))["p"] == pytest.approx(ref.pvalue, rel=1e-12), (a - b)


def test_sign_flip_on_signed_ranks_is_the_exact_wilcoxon_test():
    """On signed ranks (distinct |d|, no zeros), the mean's sign-flip test is Wilcoxon's signed-rank test: the
    sum of signed ranks is 2 T+ - n(n + 1)/2. scipy.stats.wilcoxon(method='exact'), to 1e-12 relative."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in [3, 5, 6, 8, 10, 14]:
        d = rng.normal(0.2, 1.0, n)
        ranks = stats.rankdata(np.abs(d))
        ref = stats.wilcoxon(d, method="exact")
        assert sign_flip_test(list(np.sign(d) * ranks))["p"] == pytest.approx(ref.pvalue, rel=1e-12), d


def test_sign_flip_edge_cases_and_errors():
    assert sign_flip_test([0.0, 0.0, 0.0])["p"] == 1.0  # no difference at all: every assignment ties
    one = sign_flip_test([0.4])
    assert one["p"] == 1.0 and one["min_p"] == 1.0 and one["n_assignments"] == 2  # one seed says nothing
    five = sign_flip_test([0.1, 0.2, 0.15, 0.3, 0.05])  # every seed the same way: the floor of 5 seeds
    assert five["p"] == five["min_p"] == 0.0625
    assert sign_flip_test([1.0, -1.0, 2.0, -2.0])["p"] == 1.0  # observed mean 0
    # 10 of the 16 assignments reach |sum| 0.4, one of them only up to rounding: flipping 0.1, 0.2 and -0.3
    # (which sum to 0) gives 0.39999999999999997 against the observed 0.4000000000000001; a tie, not 9 / 16
    assert sign_flip_test([0.1, 0.2, -0.3, 0.4])["p"] == 10 / 16
    assert sign_flip_test([1.0] * 16)["p"] == 2 / 2**16
    with pytest.raises(ValueError, match="n = 17 is over its limit of 16"):
        sign_flip_test([1.0] * 17)
    with pytest.raises(ValueError, match="at least one"):
        sign_flip_test([])
    with pytest.raises(ValueError, match="difference 1 is nan"):
        sign_flip_test([1.0, math.nan])


def _statsmodels_holm(p: np.ndarray) -> np.ndarray:
    """statsmodels.stats.multitest.multipletests(p, method='holm')[1], its code written out (statsmodels 0.14)."""
    order = np.argsort(p)
    ntests = len(p)
    corrected = np.maximum.accumulate(p[order] * np.arange(ntests, 0, -1))
    corrected[corrected > 1] = 1
    out = np.empty_like(corrected)
    out[order] = corrected
    return out


def test_holm_by_hand():
    """m = 4, sorted d < a < c < b: 4 x 0.005, 3 x 0.01, 2 x 0.03, then b's 1 x 0.04 raised to the running 0.06."""
    got = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(got) == ["a", "b", "c", "d"]
    assert got == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}  # 2 x 0.6 capped at 1, and y never below x
    assert holm({"only": 0.2}) == {"only": 0.2} and holm({}) == {}
    with pytest.raises(ValueError, match="'b' is 1.5"):
        holm({"a": 0.1, "b": 1.5})
    with pytest.raises(ValueError, match="is nan"):
        holm({"a": math.nan})


def test_holm_matches_statsmodels_formula():
    """Random families (with ties and p-values near 1): statsmodels' formula to 1e-15; never below the raw
    p-value, and ordered as the raw ones are."""
    rng = np.random.default_rng(29)
    for m in [1, 2, 3, 5, 8, 20]:
        for _ in range(5):
            p = rng.uniform(0, 1, m) ** 3
            p[rng.random(m) < 0.2] = p[0]  # ties
            got = holm({f"t{i}": v for i, v in enumerate(p)})
            adjusted = np.array(list(got.values()))
            np.testing.assert_allclose(adjusted, _statsmodels_holm(p), rtol=1e-15, atol=0)
            assert np.all(adjusted >= p) and np.all(adjusted <= 1)
            order = np.argsort(p, kind="stable")
            assert np.all(np.diff(adjusted[order]) >= 0)
