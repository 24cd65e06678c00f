"""The experiment in one table (and, when matplotlib is installed, two plots).

    python report.py                      # after `make eval`: results/experiment.md (+ results/*.png)

Reads what the other scripts wrote, and nothing else:
    results/<name>.<split>.json   evaluate.py: perplexity, word perplexity, BLEU, ROUGE of one model
    runs/<run>/run.json           train.py: the run's config (init, data, teacher, student layers)
    runs/<run>/log.jsonl          train.py: training tokens, wall time, the validation loss curve
    <data_dir>/manifest.json      distill.py / data.subset / data.prepare: what the training set is

Writes results/experiment.md: the models (run, init, training data, training tokens, wall time, ppl,
word ppl, BLEU, ROUGE-L), then the training sets (kind, strategy, tokens, mean surprisal under the
teacher, distinct-n, repetition, filtered sequences). With matplotlib (`pip install -e .[plot]`; never
required): results/loss_curves.png (validation loss against training tokens, one line per run) and
results/ppl_vs_budget.png (test perplexity against training tokens, one point per model).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import config_to_dict, parse_config
from gpt2.metrics import tail
from gpt2.metrics.stats import format_ci, mean_ci
from gpt2.formatting import count, duration, fixed
from gpt2.records import read_log


@dataclass
class ReportConfig:
    """Tabulate (and plot) the evaluated models of the experiment."""

    results_dir: str = "results"  # where evaluate.py wrote <name>.<split>.json
    runs_dir: str = "runs"  # train.py run directories, for the loss curves
    split: str = "test"  # the evaluation split to tabulate
    out: str = "results/experiment.md"  # the markdown report
    plots: bool = True  # also draw the plots into results_dir when matplotlib is importable
    study: str | None = None  # instead: the study's report (study.md, study.json, plot) from study.py's results folder


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"warning: skipping {path}: {e}", file=sys.stderr)
        return None


def val_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """(training tokens, validation loss) at each evaluation of a run."""
    run = read_json(run_dir / "run.json") or {}
    tokens_per_step = run.get("config", {}).get("total_batch_tokens", 0)
    evals = [r for r in read_log(run_dir) if r.get("kind") == "eval"]
    return [r["step"] * tokens_per_step for r in evals], [r["val_loss"] for r in evals]


def describe_run(results: dict) -> dict:
    """init and training data of an evaluated model, from its run.json (a published model has neither)."""
    run = results["model"].get("run") or {}
    if not run.get("run_dir"):
        return {"init": "published" if not Path(results["model"]["source"]).exists() else "—", "data": "—",
                "order": (0, results["name"])}
    run_dir = Path(run["run_dir"])
    cfg = (read_json(run_dir / "run.json") or {}).get("config", {})
    init = cfg.get("init", "?")
    if init == "scratch":
        init = f"scratch {cfg.get('n_layer')}x{cfg.get('n_embd')}"
    if cfg.get("init_layers"):
        init += f" layers {','.join(map(str, cfg['init_layers']))}"
    data = Path(cfg.get("data_dir", "?")).name
    if cfg.get("teacher"):
        data += f" + KD from {Path(cfg['teacher']).name} (T={cfg.get('kd_temperature')}, kd_weight={cfg.get('kd_weight', cfg.get('kd_alpha'))})"
    start = (run_dir / "run.json").stat().st_mtime if (run_dir / "run.json").is_file() else 0.0
    return {"init": init, "data": data, "order": (1, start), "data_dir": cfg.get("data_dir")}


def models_table(results: list[dict]) -> str:
    lines = ["| run | params | init | training data | training tokens | wall time | ppl | word ppl | BLEU | ROUGE-L |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        run, ppl, gen = r["model"].get("run") or {}, r["perplexity"], r["generation"]
        lines.append(f"| {r['name']} | {count(r['model'].get('n_params'))} | {r['_run']['init']} | {r['_run']['data']} | "
                     f"{count(run.get('train_tokens'))} | {duration(run.get('train_seconds'))} | {fixed(ppl['ppl'], 2)} | "
                     f"{fixed(ppl.get('word_ppl'), 2)} | {fixed(gen['bleu'], 2)} | {fixed(gen['rougeL'], 4)} |")
    return "\n".join(lines) + "\n"


def datasets_table(data_dirs: list[str]) -> str:
    lines = ["| training set | kind | drawn with | tokens | sequences | mean surprisal (nats) | distinct-1 | distinct-2 | "
             "distinct-3 | repeated 4-grams | dropped by filter |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in data_dirs:
        m = read_json(Path(d) / "manifest.json") if (Path(d) / "manifest.json").is_file() else None
        if m is None:
            continue
        train = m.get("splits", {}).get("train", {})
        q = m.get("quality", {})
        sampling = m.get("sampling", {})
        drawn = f"p^{sampling['alpha']:g}, min_p {sampling.get('min_p', '—')}" if "alpha" in sampling else sampling.get("strategy", "—")
        lines.append(f"| {Path(d).name} | {m.get('kind', 'prepared')} | {drawn} | "
                     f"{count(train.get('n_tokens'))} | {train.get('n_sequences', '—')} | "
                     f"{fixed(q.get('mean_surprisal_nats'), 3)} | {fixed(q.get('distinct_1'), 3)} | {fixed(q.get('distinct_2'), 3)} | "
                     f"{fixed(q.get('distinct_3'), 3)} | {fixed(q.get('repeated_4gram_fraction'), 3)} | "
                     f"{m.get('filter', {}).get('dropped_total', '—')} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], runs_dir: Path, out_dir: Path) -> list[Path]:
    """The two figures; [] when matplotlib is not importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "log.jsonl").is_file()) if runs_dir.is_dir() else []:
        tokens, losses = val_curve(run_dir)
        if tokens:
            ax.plot(tokens, losses, marker="o", markersize=3, label=run_dir.name)
    ax.set(xlabel="training tokens", ylabel="validation loss (nats/token)", title="Validation loss during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(out_dir / "loss_curves.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    points = [(r["model"]["run"]["train_tokens"], r["perplexity"]["ppl"], r["name"]) for r in results
              if (r["model"].get("run") or {}).get("train_tokens")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tokens, ppl, name in points:
        ax.scatter(tokens, ppl)
        ax.annotate(name, (tokens, ppl), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel="training tokens", ylabel="perplexity", title="Perplexity against training budget")
    ax.grid(alpha=0.3)
    written.append(out_dir / "ppl_vs_budget.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def report(cfg: ReportConfig) -> str:
    """Write the report (and plots); returns the markdown."""
    results_dir = Path(cfg.results_dir)
    results = []
    for path in sorted(results_dir.glob(f"*.{cfg.split}.json")):
        r = read_json(path)
        if r is not None and {"name", "model", "perplexity", "generation"} <= r.keys():
            r["_run"] = describe_run(r)
            results.append(r)
    if not results:
        raise FileNotFoundError(f"no evaluation results (*.{cfg.split}.json) in {results_dir}: run evaluate.py "
                                "(`make eval`) first")
    results.sort(key=lambda r: r["_run"]["order"])
    data_dirs = list(dict.fromkeys(r["_run"]["data_dir"] for r in results if r["_run"].get("data_dir")))
    split = results[0]["data"]
    scope = "all" if split.get("whole_split") else f"the first {split['n_tokens_evaluated']:,} of"
    text = (f"# Experiment: {split['split']} split of {split['label']} ({scope} {split['n_tokens_split']:,} tokens)\n\n"
            f"{models_table(results)}\n## Training sets\n\n{datasets_table(data_dirs)}")
    if cfg.plots:
        figures = plot(results, Path(cfg.runs_dir), results_dir)
        text += "\n" + ("".join(f"![{p.stem}]({p.name})\n" for p in figures) if figures else
                        "(no plots: matplotlib is not installed; `pip install -e .[plot]` to draw them)\n")
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(cfg.out) as f:
        f.write(text.encode())
    return text


# ---------------------------------------------------------------------------------------------
# The study (study.py): arms over seeds, as mean +- 95% confidence interval.

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
    points = sorted((float(n.removeprefix("alpha=")), a["loss"]) for n, a in arms.items() if n.startswith("alpha="))
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


def study_report(results_dir: str | Path) -> str:
    """results_dir/study.md and study.json (and dose_response.png with matplotlib) from what study.py wrote."""
    results_dir = Path(results_dir)
    def order(name: str) -> tuple:  # alpha from ordinary sampling down, then the controls, students, references
        if name.startswith("alpha="):
            return (0, -float(name.removeprefix("alpha=")))
        return ({"subset": 1, "base": 3}.get(name, 2), name)

    runs = dict(sorted(study_arms(results_dir).items(), key=lambda kv: order(kv[0])))
    arms = {name: arm_summary(r) for name, r in runs.items()}
    for name in runs.keys() - {"subset", "base"}:
        arms[name]["vs_subset"] = paired_ratio(runs[name], runs.get("subset", []))
    for single in ("base", "teacher-as-trained", "teacher"):  # a base model that is not trained from scratch is one model, not one per seed
        if (results_dir / f"{single}.json").exists():
            arms[single] = arm_summary([read_json(results_dir / f"{single}.json")])
    ngram = read_json(results_dir / "ngram.json") if (results_dir / "ngram.json").exists() else None
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
    cfg = parse_config(ReportConfig, argv)
    print(json.dumps(config_to_dict(cfg)))
    try:
        text = study_report(cfg.study) if cfg.study else report(cfg)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(text)
    print(f"written to {cfg.out}")
    return text


if __name__ == "__main__":
    main()
