"""The sweep's report (studies/sweep_report.py) on hand-made numbers: the paired ratio, the contrasts and the
trend test against studies.stats, the tables of a hand-made results folder, the teacher checks, the plot's labels and
its command line. (tests/test_study.py runs it on what a toy study wrote.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from studies import sweep_report as study_report
from studies.__main__ import main as studies_main
from studies.plots import band_label
from studies.stats import mean_ci, paired_contrast, trend_test


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
    """`python -m studies report sweep --results_dir DIR`; a command it does not know is named in the error."""
    with pytest.raises(SystemExit, match="make study"):
        studies_main(["report", "sweep", "--results_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="not 'report first'"):
        studies_main(["report", "first"])
    capsys.readouterr()
    assert studies_main(["--help"]) is None and "python -m studies report retrain" in capsys.readouterr().out
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "alpha=1-s0.json").write_text(json.dumps({"name": "alpha=1-s0", "perplexity": {"loss": 5.0}}))
    text = studies_main(["report", "sweep", "--results_dir", str(tmp_path)])
    assert text == (tmp_path / "study.md").read_text() and "| alpha=1 | 1 | 148.4 |" in text
    assert json.loads((tmp_path / "study.json").read_text())["arms"]["alpha=1"]["seeds"] == 1
    assert f"written to {tmp_path / 'study.md'} and study.json" in capsys.readouterr().out


# ------------------------------------------------------------- the second edition's pieces, on hand-made results

BUCKET_NLL = {"head": 3.0, "mid": 6.0, "tail": 8.0, "unseen": 12.0}


def evaluation(name: str, loss: float, *, word_ppl: float = 900.0) -> dict:
    """The parts of an evaluate.py JSON the report reads."""
    return {"name": name, "perplexity": {"loss": loss, "bits_per_byte": loss / 4, "word_ppl": word_ppl},
            "generation": {"bleu": 1.5, "rougeL": 0.12},
            "perplexity_by_frequency": {"buckets": {b: {"mean_nll": v + loss - 6} for b, v in BUCKET_NLL.items()}}}


def ngram_record(unigram: float, bigram: float, first: int, n: int) -> dict:
    def model(loss):
        return {"loss": loss, "ppl": math.exp(loss), "by_frequency": {b: {"mean_nll": v, "ppl": math.exp(v)}
                                                                       for b, v in BUCKET_NLL.items()}}
    return {"first_token": first, "eval_tokens": n, "unigram": model(unigram), "bigram": model(bigram)}


# held-out loss of each arm and seed: alpha falls -> loss rises; seed s adds 0.01 s to every arm (a seed effect)
ARMS = {"alpha=1": 6.0, "alpha=0": 6.5, "alpha=-1": 7.0, "alpha=2": 6.1, "alpha=1,min_p=0.1": 6.3, "subset": 5.9,
        "full-train": 5.5}
STEP = {0: 0.0, 1: 0.03, 2: -0.02}  # how much each seed's step differs, so the paired intervals have a width


def hand_made_study(root: Path) -> Path:
    for piece, shift, first, n in (("heldout", 0.0, 600, 2000), ("dev", 0.1, 0, 600)):
        folder = root / piece
        (folder / "set-ngrams").mkdir(parents=True)
        for arm, loss in ARMS.items():
            seeds = (0, 1, 2, 3) if arm in ("alpha=1", "subset") else (0, 1, 2)  # seed 3: an extra seed
            for s in seeds:
                value = loss + shift + 0.01 * s + (STEP.get(s, 0.0) if arm != "alpha=1" else 0.0)
                (folder / f"{arm}-s{s}.json").write_text(json.dumps(evaluation(f"{arm}-s{s}", value)))
                if arm != "full-train":
                    (folder / "set-ngrams" / f"{arm}-s{s}.json").write_text(json.dumps(
                        {"set": f"{arm}-s{s}", **ngram_record(7.5 + 0.1 * s, 7.0 + 0.1 * s, first, n)}))
        (folder / "teacher.json").write_text(json.dumps(evaluation("teacher", 5.0 + shift, word_ppl=450.0)))
        (folder / "ngram.json").write_text(json.dumps(ngram_record(7.4 + shift, 6.6 + shift, first, n)))
    (root / "config.json").write_text(json.dumps({"alphas": [1.0, 0.0, -1.0]}))
    return root


def test_contrast_pairs_neighbours_brackets_and_controls():
    names = ["alpha=2", "alpha=1", "alpha=0", "alpha=-1", "alpha=1,min_p=0.1", "alpha=-1,min_p=0.1", "subset", "full-train"]
    assert study_report.contrast_pairs(names, [1.0, 0.0, -1.0]) == [
        ("alpha=0", "alpha=1"), ("alpha=-1", "alpha=0"), ("alpha=2", "alpha=1"), ("alpha=1,min_p=0.1", "alpha=1"),
        ("alpha=-1,min_p=0.1", "alpha=-1"), ("alpha=1", "subset"), ("full-train", "subset")]
    assert study_report.contrast_pairs(["alpha=-1", "subset"], [1.0, -1.0]) == [("alpha=-1", "subset")]


def test_contrast_pairs_by_seed_as_stats_does():
    a = [evaluation("alpha=0-s2", 6.4), evaluation("alpha=0-s0", 6.5), evaluation("alpha=0-s1", 6.7)]
    b = [evaluation("alpha=1-s1", 6.1), evaluation("alpha=1-s0", 6.0), evaluation("alpha=1-s3", 5.0),
         evaluation("alpha=1-s2", 6.2)]
    got = study_report.contrast(a, b)  # seeds 0, 1, 2 in both; s3 has no partner
    want = paired_contrast([6.5, 6.7, 6.4], [6.0, 6.1, 6.2])
    assert got == want and got["n"] == 3 and math.isclose(got["mean"], 1.3 / 3, rel_tol=1e-12)
    assert study_report.contrast(a[:1], b) is None


def test_alpha_trend_is_stats_trend_test_without_the_single_alpha_seeds(tmp_path):
    held = study_report.summarise_slice(hand_made_study(tmp_path) / "heldout")
    got = study_report.alpha_trend(held["runs"], [1.0, 0.0, -1.0])
    xs, ys, seeds = [], [], []
    for alpha, arm in ((1.0, "alpha=1"), (0.0, "alpha=0"), (-1.0, "alpha=-1")):
        for s in (0, 1, 2):  # seed 3 has alpha=1 only: no slope to give
            xs.append(alpha), seeds.append(s)
            ys.append(ARMS[arm] + 0.01 * s + (STEP[s] if arm != "alpha=1" else 0.0))
    want = trend_test(xs, ys, seeds)
    assert got["n"] == 9 and got["n_seeds"] == 3
    assert math.isclose(got["slope"], want["slope"], rel_tol=1e-12) and math.isclose(got["p"], want["p"], rel_tol=1e-9)
    assert got["slope"] < 0  # perplexity rises as alpha falls


def test_report_on_hand_made_results(tmp_path):
    root = hand_made_study(tmp_path)
    text = study_report.report(root)
    sections = text.split("\n### ")
    headline = sections[0]
    assert "Held-out slice: test tokens 600 to 2,600 (2,000 tokens)" in headline
    rows = {line.split("|")[1].strip(): line for line in headline.splitlines() if line.startswith("| ")}
    cells = [c.strip() for c in rows["alpha=1"].split("|")[1:-1]]
    # four seeds (one extra), losses 6.00 + 0.01 s on held-out, 0.1 more on dev-test
    assert cells[1] == "4" and cells[2].startswith(f"{math.exp(6.015):.1f} [") and cells[3].startswith(f"{math.exp(6.115):.1f} [")
    assert "BLEU" not in headline and "ROUGE" not in headline  # out of the headline table
    assert rows["bigram (counts of the train split)"].split("|")[3].strip() == f"{math.exp(6.6):.1f}"
    contrasts = next(s for s in sections if s.startswith("Paired contrasts"))
    assert "| alpha=0 against alpha=1 | 3 | x1.65 [" in contrasts and "| alpha=1 against subset | 4 |" in contrasts
    assert "Trend over the sweep's alphas (1, 0, -1)" in contrasts and "9 runs over 3 seeds" in contrasts
    for title in ("Held-out perplexity by the target's frequency", "Dev-test perplexity by the target's frequency"):
        buckets = next(s for s in sections if s.startswith(title))
        for row in ("unigram of the train split", "bigram of the train split", "unigram of the alpha=1 sets",
                    "bigram of the subset sets", "alpha=-1"):
            assert f"| {row} |" in buckets, (title, row)
    continuations = next(s for s in sections if s.startswith("Continuations"))
    assert "kept out of the headline table" in continuations and "| alpha=1 | 1.50 ± 0.00 |" in continuations
    checks = next(s for s in sections if s.startswith("Is the teacher worth distilling"))
    assert f"teacher {math.exp(5.0):.1f} against the interpolated bigram's {math.exp(6.6):.1f}: below it" in checks
    assert "word perplexity: teacher 450.0; GPT-2 124M zero-shot reports 29.4" in checks
    assert text.count("29.4") == 1  # beside the teacher's word perplexity and nowhere else
    summary = json.loads((root / "study.json").read_text())
    assert summary["sweep"] == [1.0, 0.0, -1.0] and summary["arms"]["alpha=1"]["seeds"] == 4
    assert math.isclose(summary["dev_arms"]["alpha=1"]["loss"]["mean"], 6.115, rel_tol=1e-12)


def test_a_single_run_is_never_labelled_an_interval():
    assert band_label("teacher", mean_ci([5.0])) == "teacher (one run)"
    assert band_label("subset", mean_ci([5.0, 5.2, 5.1])) == "subset (95% CI over 3 seeds)"
