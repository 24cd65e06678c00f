"""The tables of study_retrain.py, from the JSON files it wrote: study-retrain.md and study-retrain.json.

    python study_retrain_report.py --results_dir results/study-retrain

Every figure is on the held-out slice of the test split. Per arm, over the seeds whose result exists:
    held-out ppl    exp(mean log-perplexity) with its 95% t interval (gpt2.metrics.stats.mean_ci on the losses)
    vs base         the change of perplexity against the base (one model, the same for every seed), in %
    vs real         the ratio of perplexity to the arm on real text of the same size, paired by seed
                    (stats.paired_contrast on the losses; a KD student against the KD student on real text at
                    its weight), with its 95% interval and p-value
and the perplexity by the target's frequency in the train split (gpt2.metrics.tail), mean over seeds.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import parse_config
from gpt2.metrics.stats import mean_ci, paired_contrast
from gpt2.metrics.tail import BUCKETS

REFERENCES = ("unigram", "bigram", "base", "teacher", "student-cut")
WHAT = {"unigram": "add-one unigram of the train split", "bigram": "interpolated bigram of the train split",
        "base": "pretrained on part A", "teacher": "the base fine-tuned on the whole train split",
        "student-cut": "cut from the teacher, untrained"}


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def reference_rows(results: Path) -> dict[str, dict]:
    """{name: {"loss", "by_frequency"}} of the single-model references that exist."""
    rows, ngrams = {}, read(results / "ngram.json")
    for name in REFERENCES:
        record = (ngrams or {}).get(name) if name in ("unigram", "bigram") else read(results / f"{name}.json")
        if record:
            loss = record["loss"] if "loss" in record else record["perplexity"]["loss"]
            rows[name] = {"loss": loss, "by_frequency": record["by_frequency"]}
    return rows


def arm_losses(results: Path, name: str, seeds: list[int]) -> dict[int, dict]:
    """{seed: its evaluation record} for the seeds that have one."""
    return {s: r for s in seeds if (r := read(results / f"{name}-s{s}.json"))}


def summarize(results: Path, name: str, ref: str, seeds: list[int], base_loss: float | None) -> dict | None:
    runs, ref_runs = arm_losses(results, name, seeds), arm_losses(results, ref, seeds)
    if not runs:
        return None
    losses = [r["perplexity"]["loss"] for r in runs.values()]
    row = {"seeds": sorted(runs), "loss": mean_ci(losses),
           "by_frequency": {b: _mean([r["by_frequency"][b]["mean_nll"] for r in runs.values()]) for b in BUCKETS}}
    if base_loss is not None:
        row["vs_base"] = mean_ci([v - base_loss for v in losses])
    common = [s for s in sorted(runs) if s in ref_runs]
    if name != ref and len(common) >= 2:
        row["vs_real"] = {"against": ref, **paired_contrast([runs[s]["perplexity"]["loss"] for s in common],
                                                            [ref_runs[s]["perplexity"]["loss"] for s in common])}
    return row


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def ppl_ci(ci: dict) -> str:
    if ci["half_width"] is None:
        return f"{math.exp(ci['mean']):,.1f}"
    m, h = ci["mean"], ci["half_width"]
    return f"{math.exp(m):,.1f} [{math.exp(m - h):,.1f}, {math.exp(m + h):,.1f}]"


def change(ci: dict | None) -> str:
    if ci is None:
        return ""
    pct = lambda x: f"{100 * (math.exp(x) - 1):+.1f}%"  # noqa: E731
    return pct(ci["mean"]) if ci["half_width"] is None else \
        f"{pct(ci['mean'])} [{pct(ci['mean'] - ci['half_width'])}, {pct(ci['mean'] + ci['half_width'])}]"


def contrast(c: dict | None) -> str:
    if c is None:
        return ""
    return f"×{math.exp(c['mean']):.3f} [{math.exp(c['low']):.3f}, {math.exp(c['high']):.3f}], p = {c['p']:.2g}"


def buckets(by_frequency: dict) -> str:
    return " | ".join("" if by_frequency.get(b) is None else f"{math.exp(by_frequency[b]):,.0f}" for b in BUCKETS)


def report(results: Path) -> str:
    """Write study-retrain.md and study-retrain.json in `results` (from its plan.json and piece files); return the
    markdown."""
    plan = json.loads((results / "plan.json").read_text())
    refs = reference_rows(results)
    base_loss = refs.get("base", {}).get("loss")
    arms = {a["name"]: summarize(results, a["name"], a["reference"], plan["seeds"], base_loss) for a in plan["arms"]}
    what = {a["name"]: a["what"] for a in plan["arms"]}
    arms = {k: v for k, v in arms.items() if v}
    begin, end = plan["heldout"]
    lines = [f"## The seed's regime: the base continued on each set, and the KD students (held-out: test tokens "
             f"{begin:,} to {end:,})", "",
             "vs real: each arm against the base continued on real text of the same size, paired by seed; a KD "
             "student against the KD student on real text at its own weight. Count baselines have no seeds (—).", "",
             "| arm | what | seeds | held-out ppl [95% CI] | vs base [95% CI] | vs real, paired by seed [95% CI] | "
             + " | ".join(f"{b} ppl" for b in BUCKETS) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(BUCKETS)]
    for name, row in refs.items():
        vs_base = None if name in ("base", "unigram", "bigram") or base_loss is None else \
            {"mean": row["loss"] - base_loss, "half_width": None}
        seeds = "—" if name in ("unigram", "bigram") else "1"
        lines.append(f"| {name} | {WHAT[name]} | {seeds} | {math.exp(row['loss']):,.1f} | {change(vs_base)} | | "
                     f"{buckets({b: row['by_frequency'][b]['mean_nll'] for b in BUCKETS})} |")
    for name, row in arms.items():
        lines.append(f"| {name} | {what[name]} | {len(row['seeds'])} | {ppl_ci(row['loss'])} | "
                     f"{change(row.get('vs_base'))} | {contrast(row.get('vs_real'))} | {buckets(row['by_frequency'])} |")
    text = "\n".join(lines) + "\n"
    with atomic_open(results / "study-retrain.md") as f:
        f.write(text.encode())
    with atomic_open(results / "study-retrain.json") as f:
        f.write((json.dumps({"references": refs, "arms": arms}, indent=2) + "\n").encode())
    return text


@dataclass
class ReportConfig:
    """Redraw study_retrain.py's tables from the JSON files it wrote."""

    results_dir: str = "results/study-retrain"  # where study_retrain.py wrote plan.json and one JSON per piece


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ReportConfig, argv)
    if not (Path(cfg.results_dir) / "plan.json").exists():
        sys.exit(f"error: {cfg.results_dir}/plan.json is absent: run `python study_retrain.py` "
                 "(make study-retrain) first")
    print(report(Path(cfg.results_dir)))


if __name__ == "__main__":
    main()
