"""How figures print in the tables of evaluate.py, report.py and the studies' reports: a missing figure prints as '—'."""

from __future__ import annotations


def count(n: float | None) -> str:
    """1234567 -> '1.23M'; None -> '—'."""
    if n is None:
        return "—"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def duration(s: float | None) -> str:
    """Seconds as '42 s', '3.5 min' or '2.10 h'; None -> '—'."""
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def fixed(x: float | None, digits: int) -> str:
    """x with `digits` decimals; None -> '—'."""
    return "—" if x is None else f"{x:.{digits}f}"
