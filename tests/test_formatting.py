"""gpt2/formatting.py: how the tables print counts, durations and missing figures."""

from __future__ import annotations

import math

from gpt2.formatting import count, duration, fixed
from studies.stats import perplexity_ci


def test_figures_print_short_and_missing_ones_as_a_dash():
    assert [count(n) for n in (None, 999, 1000, 1_234_567, 2.5e9)] == ["—", "999", "1.00k", "1.23M", "2.50B"]
    assert [duration(s) for s in (None, 42, 119.4, 210, 7200)] == ["—", "42 s", "119 s", "3.5 min", "2.00 h"]
    assert fixed(None, 2) == "—" and fixed(3.14159, 2) == "3.14"


def test_a_perplexity_interval_exponentiates_both_ends():
    loss = {"mean": math.log(1500.0), "half_width": 0.1}
    assert perplexity_ci(loss) == f"1500.0 [{1500 * math.exp(-0.1):.1f}, {1500 * math.exp(0.1):.1f}]"
    assert perplexity_ci(loss, ",") == "1,500.0 [1,357.3, 1,657.8]"
    assert perplexity_ci({"mean": math.log(947.4), "half_width": None}) == "947.4" and perplexity_ci(None) == "—"
