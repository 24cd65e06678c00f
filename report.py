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

The studies' reports are `python -m studies report sweep|retrain` (studies/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import run_config
from gpt2.formatting import count, duration, fixed
from gpt2.records import read_json, read_log


@dataclass
class ReportConfig:
    """Tabulate (and plot) the evaluated models of the experiment."""

    results_dir: str = "results"  # where evaluate.py wrote <name>.<split>.json
    runs_dir: str = "runs"  # train.py run directories, for the loss curves
    split: str = "test"  # the evaluation split to tabulate
    out: str = "results/experiment.md"  # the markdown report
    plots: bool = True  # also draw the plots into results_dir when matplotlib is importable


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


def main(argv: list[str] | None = None) -> str:
    cfg, text = run_config(ReportConfig, argv, report)
    print(text)
    print(f"written to {cfg.out}")
    return text


if __name__ == "__main__":
    main()
