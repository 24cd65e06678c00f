"""study_report.py: the paired ratio and the teacher checks on hand-made numbers, and its command line.
(tests/test_study.py runs it on what a toy study wrote.)"""

from __future__ import annotations

import json
import math

import pytest

import study_report


def test_teacher_checks_compare_with_the_bigram_and_real_text():
    arms = {"teacher": {"loss": {"mean": math.log(700.0), "half_width": None}}}
    ngram = {"bigram": {"ppl": 717.0}}
    sets = [{"set": "alpha=1-s0", "distinct_2": 0.60}, {"set": "alpha=1-s1", "distinct_2": 0.70},
            {"set": "alpha=-1-s0", "distinct_2": 0.99}, {"set": "subset-s0", "distinct_2": 0.80}]
    text = study_report.teacher_checks(arms, ngram, sets)
    assert "teacher 700.0 against the interpolated bigram's 717.0: below it" in text
    assert "alpha = 1 sets 0.650 against the real subsets' 0.800 (-18.8%" in text
    arms["teacher"]["loss"]["mean"] = math.log(720.0)
    assert "NOT below" in study_report.teacher_checks(arms, ngram, sets)
    assert study_report.teacher_checks({}, None, []) == ""


def test_paired_ratio_matches_seeds():
    def run(name, loss):
        return {"name": name, "perplexity": {"loss": loss}}

    arm = [run("alpha=1-s2", 7.3), run("alpha=1-s0", 7.0), run("alpha=1-s1", 7.1), run("alpha=1-s9", 9.0)]
    subset = [run("subset-s0", 6.9), run("subset-s1", 7.1), run("subset-s2", 7.0)]
    diff = study_report.paired_ratio(arm, subset)  # s9 has no partner; the pairs differ by 0.1, 0.0, 0.3
    assert diff["n"] == 3 and math.isclose(diff["mean"], 0.4 / 3)
    sd = math.sqrt(((0.1 - 0.4 / 3) ** 2 + (0.4 / 3) ** 2 + (0.3 - 0.4 / 3) ** 2) / 2)
    assert math.isclose(diff["half_width"], 4.303 * sd / math.sqrt(3), rel_tol=1e-5)
    assert study_report.ratio_ci(diff).startswith(f"x{math.exp(0.4 / 3):.2f} [")
    assert study_report.paired_ratio(arm[:1], subset) is None and study_report.ratio_ci(None) == "—"


def test_command_line_writes_study_md_and_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit, match="make study"):
        study_report.main(["--results_dir", str(tmp_path)])
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "alpha=1-s0.json").write_text(json.dumps({"name": "alpha=1-s0", "perplexity": {"loss": 5.0}}))
    text = study_report.main(["--results_dir", str(tmp_path)])
    assert text == (tmp_path / "study.md").read_text() and "| alpha=1 | 1 | 148.4 |" in text
    assert json.loads((tmp_path / "study.json").read_text())["arms"]["alpha=1"]["seeds"] == 1
    assert f"written to {tmp_path / 'study.md'} and study.json" in capsys.readouterr().out
