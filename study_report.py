"""The study's report: every arm of study.py's sweep over seeds, as mean +- 95% confidence interval.

    python study_report.py                # redraw it from results/study (study.py writes it when it ends)
    make study-report                     # the same

Reads what study.py wrote into its results folder, and nothing else:
    <arm>-s<seed>.json        evaluate.py (or study.py's untrained "base"): one arm, one seed
    teacher.json, ...         the models evaluated once: the teacher (before and after sharing the unseen
                              rows) and a base model that is not trained from scratch
    ngram.json                the unigram and bigram baselines
    sets/<set>.json           each training set's statistics (gpt2.metrics.tail.set_statistics)

Writes, into the same folder: study.md (the arms with their intervals and their ratio to the real subset
paired by seed, test perplexity by frequency bucket, the sets, and whether the teacher is worth
distilling), study.json (the numbers behind the tables) and, with matplotlib, dose_response.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import run_config
from gpt2.formatting import fixed
from gpt2.metrics import tail
from gpt2.metrics.stats import format_ci, mean_ci
from gpt2.records import read_json


@dataclass
class StudyReportConfig:
    """Tabulate (and plot) the study's arms from what study.py wrote."""

    results_dir: str = "results/study"  # study.py's --results_dir: its evaluations; the report is written here too


def study_arms(results_dir: Path) -> dict[str, list[dict]]:
    """Evaluations grouped by arm: 'alpha=-1-s0.json' -> arm 'alpha=-1', one entry per seed."""
    arms: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*-s[0-9]*.json")):
        r = read_json(path)
        if r is not None and "perplexity" in r:
            arms.setdefault(path.stem.rsplit("-s", 1)[0], []).append(r)
    return arms


def arm_summary(runs: list[dict]) -> dict:
    """Mean +- CI over seeds of each figure of an arm (perplexity through its log: the CI of the mean NLL)."""
    def ci(get):
        values = [v for v in (get(r) for r in runs) if v is not None]
        return mean_ci(values) if values else None
    out = {"seeds": len(runs), "loss": ci(lambda r: r["perplexity"]["loss"]),
           "bits_per_byte": ci(lambda r: r["perplexity"].get("bits_per_byte")),
           "word_ppl": ci(lambda r: r["perplexity"].get("word_ppl")),
           "bleu": ci(lambda r: (r.get("generation") or {}).get("bleu")),
           "rougeL": ci(lambda r: (r.get("generation") or {}).get("rougeL"))}
    for bucket in tail.BUCKETS:
        out[f"nll_{bucket}"] = ci(lambda r: (r.get("perplexity_by_frequency") or {}).get("buckets", {}).get(bucket, {}).get("mean_nll"))
    return out


def paired_ratio(runs: list[dict], reference: list[dict]) -> dict | None:
    """An arm against the reference arm, paired by seed (the same seed picks both sets' prompts and the same
    init, data order and dropout): the mean over seeds of the difference in test NLL, with its 95% interval.
    exp of it is the ratio of perplexities; None without two shared seeds."""
    def seed(r: dict) -> str:
        return r["name"].rsplit("-s", 1)[1]
    ref = {seed(r): r["perplexity"]["loss"] for r in reference}
    diffs = [r["perplexity"]["loss"] - ref[seed(r)] for r in runs if seed(r) in ref]
    return mean_ci(diffs) if len(diffs) >= 2 else None


def ratio_ci(diff: dict | None) -> str:
    if diff is None:
        return "—"
    mean, hw = diff["mean"], diff["half_width"]
    return f"x{math.exp(mean):.2f} [{math.exp(mean - hw):.2f}, {math.exp(mean + hw):.2f}]"


def ppl_ci(loss: dict | None) -> str:
    """exp of the mean NLL, with the interval's ends exponentiated too (perplexity is not symmetric)."""
    if loss is None:
        return "—"
    mean, hw = loss["mean"], loss["half_width"]
    return f"{math.exp(mean):.1f}" if hw is None else f"{math.exp(mean):.1f} [{math.exp(mean - hw):.1f}, {math.exp(mean + hw):.1f}]"


def study_tables(arms: dict[str, dict], ngram: dict | None, sets: list[dict]) -> str:
    lines = ["| arm | seeds | test ppl [95% CI] | ppl / subset's, paired by seed [95% CI] | bits/byte | word ppl | BLEU | "
             "ROUGE-L |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, a in arms.items():
        cells = [format_ci(a[k], d) if a[k] else "—" for k, d in (("bits_per_byte", 4), ("word_ppl", 1), ("bleu", 2), ("rougeL", 4))]
        lines.append(f"| {name} | {a['seeds']} | {ppl_ci(a['loss'])} | {ratio_ci(a.get('vs_subset'))} | " + " | ".join(cells) + " |")
    for name in ("unigram", "bigram"):
        if ngram:
            lines.append(f"| {name} (counts of the train split) | — | {ngram[name]['ppl']:.1f} | — | — | — | — | — |")
    text = "\n".join(lines) + "\n\n### Test perplexity by the target's frequency in the train split (mean over seeds)\n\n"
    lines = ["| arm | " + " | ".join(tail.BUCKETS) + " |", "|---|" + "---:|" * len(tail.BUCKETS)]
    for name, a in arms.items():
        lines.append(f"| {name} | " + " | ".join(ppl_ci(a[f'nll_{b}']) for b in tail.BUCKETS) + " |")
    for name in ("unigram", "bigram"):
        if ngram:
            lines.append(f"| {name} | " + " | ".join(fixed(ngram[name]["by_frequency"][b]["ppl"], 1) for b in tail.BUCKETS) + " |")
    text += "\n".join(lines) + "\n\n### The training sets\n\n"
    lines = ["| set | teacher NLL (nats) | distinct-1 | distinct-2 | distinct-3 | entropy (bits) | train types held | "
             "tail types held | unseen-in-train tokens |", "|---|" + "---:|" * 8]
    for st in sets:
        b = st  # the buckets are top-level keys of tail.set_statistics
        lines.append(f"| {st['set']} | {fixed(st.get('teacher_nll'), 3)} | {fixed(st.get('distinct_1'), 3)} | "
                     f"{fixed(st.get('distinct_2'), 3)} | {fixed(st.get('distinct_3'), 3)} | {fixed(st.get('entropy_bits'), 2)} | "
                     f"{fixed(st.get('share_of_train_types'), 3)} | {fixed(b.get('tail', {}).get('share_of_bucket_types'), 3)} | "
                     f"{fixed(b.get('unseen', {}).get('token_share'), 4)} |")
    return text + "\n".join(lines) + "\n"


def teacher_checks(arms: dict[str, dict], ngram: dict | None, sets: list[dict]) -> str:
    """Is the teacher worth distilling? Its test perplexity against the bigram's, and the distinct-2 of its
    ordinary samples (alpha = 1) against the real subsets' (the sets have one size and sequence length)."""
    lines = []
    teacher = arms.get("teacher", {}).get("loss")
    if teacher and ngram:
        ppl, bigram = math.exp(teacher["mean"]), ngram["bigram"]["ppl"]
        lines.append(f"- test perplexity: teacher {ppl:.1f} against the interpolated bigram's {bigram:.1f}: "
                     f"{'below' if ppl < bigram else 'NOT below'} it")
    def mean_distinct_2(prefix: str) -> float | None:
        values = [st["distinct_2"] for st in sets if st["set"].startswith(prefix) and st.get("distinct_2") is not None]
        return sum(values) / len(values) if values else None
    ordinary, real = mean_distinct_2("alpha=1-s"), mean_distinct_2("subset-s")
    if ordinary is not None and real:
        lines.append(f"- distinct-2 of its alpha = 1 sets {ordinary:.3f} against the real subsets' {real:.3f} "
                     f"({ordinary / real - 1:+.1%}; the bar is 20%)")
    return "\n".join(lines) + "\n" if lines else ""


def dose_response_plot(arms: dict[str, dict], results_dir: Path) -> Path | None:
    """Test perplexity against alpha (mean and 95% CI over seeds), the real subset and the teacher as bands."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = sorted((float(n.removeprefix("alpha=")), a["loss"]) for n, a in arms.items()
                    if n.startswith("alpha=") and "," not in n)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if points:
        x = [p[0] for p in points]
        y = [math.exp(p[1]["mean"]) for p in points]
        lo = [y_ - math.exp(p[1]["mean"] - (p[1]["half_width"] or 0)) for y_, p in zip(y, points)]
        hi = [math.exp(p[1]["mean"] + (p[1]["half_width"] or 0)) - y_ for y_, p in zip(y, points)]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=4, label="synthetic set, weights p^alpha")
    for name, color in (("subset", "tab:green"), ("teacher", "tab:red")):
        if name in arms and arms[name]["loss"]:
            loss = arms[name]["loss"]
            hw = loss["half_width"] or 0
            ax.axhspan(math.exp(loss["mean"] - hw), math.exp(loss["mean"] + hw), color=color, alpha=0.2)
            ax.axhline(math.exp(loss["mean"]), color=color, label=f"{name} (95% CI band)")
    ax.set(xlabel="alpha (1 ordinary sampling, 0 uniform over the plausible set, < 0 inverted)",
           ylabel="test perplexity", title="Retraining on sets drawn with weight p^alpha")
    ax.invert_xaxis()  # from ordinary sampling on the left to the most inverted on the right
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = results_dir / "dose_response.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(results_dir: str | Path) -> str:
    """results_dir/study.md and study.json (and dose_response.png with matplotlib) from what study.py wrote."""
    results_dir = Path(results_dir)
    heldout = results_dir / "heldout"
    def order(name: str) -> tuple:  # alpha from ordinary sampling down, then the controls, students, references
        if name.startswith("alpha=") and "," not in name:
            return (0, -float(name.removeprefix("alpha=")))
        return ({"subset": 1, "base": 3}.get(name, 2), name)

    runs = dict(sorted(study_arms(heldout).items(), key=lambda kv: order(kv[0])))
    arms = {name: arm_summary(r) for name, r in runs.items()}
    for name in runs.keys() - {"subset", "base"}:
        arms[name]["vs_subset"] = paired_ratio(runs[name], runs.get("subset", []))
    for single in ("base", "teacher-as-trained", "teacher"):  # a base model that is not trained from scratch is one model, not one per seed
        if (heldout / f"{single}.json").exists():
            arms[single] = arm_summary([read_json(heldout / f"{single}.json")])
    ngram = read_json(heldout / "ngram.json") if (heldout / "ngram.json").exists() else None
    sets = [r for r in (read_json(p) for p in sorted((results_dir / "sets").glob("*.json"))) if r]
    if not arms:
        raise FileNotFoundError(f"no study results in {results_dir}: run `python study.py` (`make study`) first")
    text = f"# Study: retraining on sets drawn with weight p^alpha\n\n{study_tables(arms, ngram, sets)}"
    checks = teacher_checks(arms, ngram, sets)
    text += f"\n### Is the teacher worth distilling?\n\n{checks}" if checks else ""
    figure = dose_response_plot(arms, results_dir)
    text += f"\n![dose response]({figure.name})\n" if figure else "\n(no plot: matplotlib is not installed)\n"
    with atomic_open(results_dir / "study.md") as f:
        f.write(text.encode())
    with atomic_open(results_dir / "study.json") as f:
        f.write((json.dumps({"arms": arms, "ngram": ngram, "sets": sets}, indent=2) + "\n").encode())
    return text


def main(argv: list[str] | None = None) -> str:
    cfg, text = run_config(StudyReportConfig, argv, lambda cfg: report(cfg.results_dir))
    print(text)
    print(f"written to {Path(cfg.results_dir) / 'study.md'} and study.json")
    return text


if __name__ == "__main__":
    main()
