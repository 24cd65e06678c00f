"""Means with 95% confidence intervals over a few seeds: Student's t, because n is small (3 to 10).

With n runs of an arm, the interval is mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard
deviation. For n = 3 that is 4.30 standard errors, not the normal 1.96: three seeds say little, and the
interval says so.

Two arms compared on the same seeds are compared seed by seed (`paired_contrast`: a paired t-test), and a
dose-response over seeds is a slope with seed as a fixed effect (`trend_test`); a contrast measured under two
teachers is compared across them as two independent samples (`welch_contrast`). Their p-values need
Student's t distribution function, computed here (`t_cdf`) so that the product needs no scipy.

Two checks on those p-values: `sign_flip_test`, the exact paired permutation test, which assumes no normal
distribution (only that, with no difference between the arms, each seed's difference is as likely negative as
positive) and says how small a p-value n seeds can give at all (5 seeds: 0.0625); and `holm`, Holm's
adjustment of a family of p-values for the number of contrasts read together.
"""

from __future__ import annotations

import math
import sys

# t(0.975, df): the two-sided 95% quantile of Student's t with df degrees of freedom.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_975(df: int) -> float:
    """t(0.975, df), from the table (the next smaller tabulated df when df is not listed: a wider interval)."""
    if df < 1:
        raise ValueError(f"a confidence interval needs at least 2 values (df >= 1), got df={df}")
    return T_975[max(k for k in T_975 if k <= df)] if df <= 120 else 1.960


def mean_ci(values: list[float]) -> dict:
    """{"mean", "half_width", "n", "values"}: half_width is None for a single value (no interval)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "half_width": None, "n": 1, "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "half_width": t_975(n - 1) * sd / math.sqrt(n), "n": n, "values": values}


def format_ci(ci: dict, digits: int = 1) -> str:
    """'123.4 ± 5.6' (or '123.4' for one value)."""
    if ci["half_width"] is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} ± {ci['half_width']:.{digits}f}"


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method
    (Numerical Recipes, 3rd ed., section 6.4, betacf). Converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15  # tiny keeps a denominator off zero (Lentz); eps: stop at double precision
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),  # the even step, then the odd one
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise RuntimeError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _betai(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (Numerical Recipes' betai), given x and y = 1 - x
    (the caller computes y without cancellation): the continued fraction for I_x(a, b) or, where that
    converges slowly, 1 - I_y(b, a)."""
    if x <= 0.0 or y <= 0.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_x(df/2, 1/2) with x = df / (df + t^2).
    Computed directly, not as 1 - cdf, so that small p-values keep their relative precision."""
    if df <= 0:
        raise ValueError(f"Student's t needs df > 0, got df={df}")
    if math.isinf(t):
        return 0.0
    return _betai(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom, by the regularized incomplete beta function."""
    tail = t_two_sided_p(t, df) / 2.0  # P(T >= |t|)
    return 1.0 - tail if t > 0 else tail


def _paired_floats(a: list[float], b: list[float], what: str, names: tuple[str, str]) -> tuple[list, list]:
    """Both lists as floats, after checking they pair up and are finite (a diverged run reads as nan)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"{what} pairs {names[0]} and {names[1]} value by value, but they have {len(a)} and "
                         f"{len(b)} values: give one value per seed to each, in the same order")
    for name, values in zip(names, (a, b)):
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{what}: {name}[{bad[0]}] is {values[bad[0]]} (a diverged run?): leave that seed "
                             "out of both lists")
    return a, b


def _t_summary(estimate: float, se: float, df: int) -> dict:
    """t statistic, two-sided p-value and 95% interval of an estimate with standard error se on df degrees of
    freedom. A zero standard error (every difference equal) gives t = +-inf and p = 0, or t = 0 and p = 1
    when the estimate is 0 too: the limits of the test, not an error, so that identical arms still report."""
    if se > 0:
        t = estimate / se
    else:
        t = math.copysign(math.inf, estimate) if estimate != 0 else 0.0
    half = t_975(df) * se
    return {"se": se, "half_width": half, "low": estimate - half, "high": estimate + half,
            "t": t, "df": df, "p": t_two_sided_p(t, df)}


def paired_contrast(a: list[float], b: list[float]) -> dict:
    """Arm a minus arm b, measured on the same seeds in the same order: the mean of the per-seed differences
    a[i] - b[i] with its 95% t interval and the two-sided p-value of a paired t-test (df = n - 1).

    Pairing removes what a seed does to both arms alike (its data order, its initialisation), so a
    difference shows with fewer seeds than two independent means would need. For ratios of perplexity,
    pass log perplexities: the mean difference is then the log of the geometric-mean ratio.
    Returns {"mean", "half_width", "low", "high", "se", "t", "df", "p", "n", "differences"}; format_ci prints it.
    """
    a, b = _paired_floats(a, b, "paired_contrast", ("a", "b"))
    n = len(a)
    if n < 2:
        raise ValueError(f"paired_contrast needs at least 2 seeds measured in both arms, got {n}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return {"mean": mean, **_t_summary(mean, sd / math.sqrt(n), n - 1), "n": n, "differences": diffs}


def welch_contrast(a: list[float], b: list[float]) -> dict:
    """Mean of a minus mean of b for two independent samples (e.g. one contrast under two teachers: the seeds
    share numbers, not models), Welch's t-test: unequal variances, Welch-Satterthwaite df. The 95% interval uses
    t_975 at the df rounded down (a slightly wider interval where df is not tabulated); the p-value uses the
    exact df. Returns {"mean", "half_width", "low", "high", "se", "t", "df", "p", "n_a", "n_b"}."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch_contrast needs at least 2 values on each side, got {len(a)} and {len(b)}")
    var = lambda xs: sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / (len(xs) - 1)  # noqa: E731
    va, vb = var(a) / len(a), var(b) / len(b)
    se, mean = math.sqrt(va + vb), sum(a) / len(a) - sum(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    half = t_975(max(1, int(df))) * se
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "se": se, "t": t, "df": df,
            "p": t_two_sided_p(t, df) if t != 0 else 1.0, "n_a": len(a), "n_b": len(b)}


def trend_test(xs: list[float], ys: list[float], seeds: list) -> dict:
    """Linear trend of y on x with seed as a fixed effect: is y still rising (or falling) with x once each
    seed's own level is set aside? E.g. log perplexity against the share of distilled data, several
    shares per seed.

    Each seed's mean is subtracted from its x and its y (the within estimator, equal to least squares
    with one intercept per seed); the slope is then least squares through the origin, sum(x y) / sum(x^2).
    Its residual degrees of freedom are n - n_seeds - 1: one per seed intercept, one for the slope.
    Returns {"slope", "se", "half_width", "low", "high", "t", "df", "p", "n", "n_seeds"}.
    """
    xs, ys = _paired_floats(xs, ys, "trend_test", ("xs", "ys"))
    if len(seeds) != len(xs):
        raise ValueError(f"trend_test needs one seed per value: {len(xs)} values but {len(seeds)} seeds")
    groups: dict = {}
    for i, s in enumerate(seeds):
        groups.setdefault(s, []).append(i)
    n, df = len(xs), len(xs) - len(groups) - 1
    if df < 1:
        raise ValueError(f"trend_test needs at least n_seeds + 2 values (df = n - n_seeds - 1 >= 1), got {n} "
                         f"values over {len(groups)} seeds: measure more x values per seed")
    dx, dy = [0.0] * n, [0.0] * n
    for rows in groups.values():
        mx, my = sum(xs[i] for i in rows) / len(rows), sum(ys[i] for i in rows) / len(rows)
        for i in rows:
            dx[i], dy[i] = xs[i] - mx, ys[i] - my
    sxx = sum(v * v for v in dx)
    if sxx == 0:
        raise ValueError("trend_test: x never varies within a seed, so the seeds say nothing about a trend: "
                         "measure at least two x values on some seed")
    slope = sum(u * v for u, v in zip(dx, dy)) / sxx
    rss = sum((v - slope * u) ** 2 for u, v in zip(dx, dy))
    return {"slope": slope, **_t_summary(slope, math.sqrt(rss / df / sxx), df), "n": n, "n_seeds": len(groups)}


def perplexity_ci(loss: dict | None, grouping: str = "") -> str:
    """exp of a mean NLL ({"mean", "half_width"}) with its 95% interval's ends exponentiated too (perplexity is
    not symmetric): '1578.4 [1462.1, 1703.9]', or the mean alone without an interval; grouping="," prints
    '1,578.4'; None -> '—'."""
    if loss is None:
        return "—"
    m, h = loss["mean"], loss["half_width"]
    ppl = lambda x: f"{math.exp(x):{grouping}.1f}"  # noqa: E731
    return ppl(m) if h is None else f"{ppl(m)} [{ppl(m - h)}, {ppl(m + h)}]"


SIGN_FLIP_MAX_N = 16  # 2^16 = 65,536 sign assignments, summed in a fraction of a second


def sign_flip_test(differences: list[float]) -> dict:
    """The exact paired permutation (sign-flip) test of "the mean difference is 0", two-sided.

    With no difference between the arms, each seed's difference a[i] - b[i] is as likely to have either sign.
    All 2^n sign assignments are enumerated; the p-value is the share of them whose |mean| is at least the
    observed |mean| (ties included, the observed one among them): at least 2 / 2^n, the observed assignment
    and its mirror image, whatever the data. Sums within 100 ulps of sum(|d|) of the observed one count as
    ties (rounding of the same sum in another order), as scipy.stats.permutation_test does.
    Returns {"p", "n", "min_p" (= 2 / 2^n, capped at 1: the smallest p-value n seeds can give),
    "mean", "n_assignments" (= 2^n)}.
    """
    diffs = [float(d) for d in differences]
    n = len(diffs)
    if n == 0:
        raise ValueError("sign_flip_test needs at least one difference")
    if n > SIGN_FLIP_MAX_N:
        raise ValueError(f"sign_flip_test enumerates all 2^n sign assignments, and n = {n} is over its limit of "
                         f"{SIGN_FLIP_MAX_N} (2^{n} = {2 ** n:,}): with that many seeds, paired_contrast's t-test is "
                         "the test to use")
    bad = [i for i, d in enumerate(diffs) if not math.isfinite(d)]
    if bad:
        raise ValueError(f"sign_flip_test: difference {bad[0]} is {diffs[bad[0]]} (a diverged run?): "
                         "leave that seed out")
    sums = [0.0]
    for d in diffs:  # every assignment's sum, each added up in the same order as the observed one
        sums = [s + d for s in sums] + [s - d for s in sums]
    observed = abs(sums[0])  # all signs +: the data as measured
    tolerance = 100 * sys.float_info.epsilon * sum(abs(d) for d in diffs)
    extreme = sum(1 for s in sums if abs(s) >= observed - tolerance)
    return {"p": extreme / len(sums), "n": n, "min_p": min(1.0, 2.0 / len(sums)), "mean": sum(diffs) / n,
            "n_assignments": len(sums)}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family of m tests, by name (in the input's order).

    Sorted ascending, p_(1) <= ... <= p_(m), the adjusted p_(i) is max over j <= i of (m - j + 1) p_(j), capped
    at 1: the smallest family-wise error level at which Holm's step-down procedure rejects test i. Never below
    the raw p-value, and in the same order as the raw ones (the running maximum keeps it monotone).
    """
    p_values = {name: float(p) for name, p in p_values.items()}
    for name, p in p_values.items():
        if not 0.0 <= p <= 1.0:  # nan fails this too
            raise ValueError(f"holm: the p-value of {name!r} is {p}: a p-value lies in [0, 1]")
    m = len(p_values)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(sorted(p_values, key=p_values.__getitem__)):  # rank 0: the smallest p
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}
