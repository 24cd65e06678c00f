"""Means with 95% confidence intervals over a few seeds: Student's t, because n is small (3 to 10).

With n runs of an arm, the interval is mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard
deviation. For n = 3 that is 4.30 standard errors, not the normal 1.96: three seeds say little, and the
interval says so.
"""

from __future__ import annotations

import math

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
