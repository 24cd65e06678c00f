"""Teacher strength as an axis: the third edition's arms under the weak teacher and the strong one, side by side,
from what `python -m studies report retrain` wrote in each results folder (study-retrain.json, ngram.json).

    python -m studies report teachers --weak results/study-weak --strong results/study-strong   # make study-teachers

Two tables and their JSON (teachers.md, teachers.json, in --out_dir):
    the teachers    each study's unigram, bigram, base and teacher on its held-out slice, all targets and by the
                    target's frequency in the train split; the teacher against the bigram (the goal: at most 0.6x
                    its perplexity, and lower in every bucket but unseen)
    the arms        per arm in both studies: the fine-tuning gain kept on all targets and on frequent + mid ones,
                    the ratio to real text of the same size (paired by seed) under each teacher, and how that
                    ratio moved from the weak teacher to the strong one: Welch's test on the per-seed log ratios
                    (the two studies share seed numbers, not models: independent samples)
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import parse_config
from gpt2.metrics.tail import BUCKETS
from studies.retrain_report import contrast, share
from studies.stats import welch_contrast

GOAL = 0.6  # the strong teacher's goal: at most this share of the bigram's held-out perplexity


def teacher_row(results: Path) -> dict:
    """A study's references on its held-out slice: {name: {"all": ppl, bucket: ppl}} and the teacher / bigram test."""
    report = json.loads((results / "study-retrain.json").read_text())
    rows = {name: {"all": math.exp(r["loss"]), **{b: math.exp(r["by_frequency"][b]["mean_nll"]) for b in BUCKETS}}
            for name, r in report["references"].items()}
    teacher, bigram = rows.get("teacher"), rows.get("bigram")
    verdict = None
    if teacher and bigram:
        ratio = teacher["all"] / bigram["all"]
        beats = [b for b in BUCKETS if b != "unseen" and teacher[b] < bigram[b]]
        verdict = {"ratio_to_bigram": ratio, "meets_goal": ratio <= GOAL and len(beats) == len(BUCKETS) - 1,
                   "buckets_beaten": beats}
    return {"rows": rows, "verdict": verdict, "heldout": json.loads((results / "plan.json").read_text())["heldout"]}


def moved(weak: dict | None, strong: dict | None) -> dict | None:
    """How an arm's log ratio to its reference moved from the weak teacher to the strong one (Welch)."""
    if not weak or not strong or "differences" not in weak or "differences" not in strong:
        return None
    return welch_contrast(strong["differences"], weak["differences"])


def arms_rows(weak: dict, strong: dict) -> dict[str, dict]:
    """The arms both studies have, in the strong study's order."""
    rows = {}
    for name, s in strong["arms"].items():
        w = weak["arms"].get(name)
        if w is None:
            continue
        rows[name] = {"weak": w, "strong": s, "moved": moved(w.get("vs_real"), s.get("vs_real"))}
    return rows


def ppl(x: float | None) -> str:
    return "" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def teachers_table(teachers: dict[str, dict]) -> list[str]:
    lines = ["| study | model | held-out ppl | " + " | ".join(f"{b} ppl" for b in BUCKETS) + " |",
             "|---|---|---:|" + "---:|" * len(BUCKETS)]
    for study, t in teachers.items():
        for name in ("unigram", "bigram", "base", "teacher"):
            if name in t["rows"]:
                r = t["rows"][name]
                lines.append(f"| {study} | {name} | {ppl(r['all'])} | " + " | ".join(ppl(r[b]) for b in BUCKETS) + " |")
    for study, t in teachers.items():
        v = t["verdict"]
        if v:
            lines.append(f"\n{study}: the teacher is {v['ratio_to_bigram']:.2f}x the bigram's held-out perplexity "
                         f"(goal: at most {GOAL}x), lower in {', '.join(v['buckets_beaten']) or 'no bucket'}; "
                         f"goal {'met' if v['meets_goal'] else 'not met'}.")
    return lines


def arms_table(rows: dict[str, dict]) -> list[str]:
    lines = ["| arm | gain kept, weak | gain kept, strong | frequent + mid, weak | frequent + mid, strong | "
             "vs reference, weak | vs reference, strong | the ratio's change, strong / weak (Welch) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        w, s, m = r["weak"], r["strong"], r["moved"]
        change = "" if not m else (f"×{math.exp(m['mean']):.3f} [{math.exp(m['low']):.3f}, {math.exp(m['high']):.3f}]"
                                   f", p = {m['p']:.2g}")
        lines.append(f"| {name} | {share(w.get('gain_kept'))} | {share(s.get('gain_kept'))} | "
                     f"{share(w.get('gain_kept_frequent'))} | {share(s.get('gain_kept_frequent'))} | "
                     f"{contrast(w.get('vs_real'))} | {contrast(s.get('vs_real'))} | {change} |")
    return lines


def report(weak: Path, strong: Path, out: Path) -> str:
    """Write teachers.md and teachers.json in `out`; return the markdown."""
    teachers = {"weak": teacher_row(weak), "strong": teacher_row(strong)}
    rows = arms_rows(*(json.loads((d / "study-retrain.json").read_text()) for d in (weak, strong)))
    text = "\n".join(["## The teachers (each study's held-out slice)", "", *teachers_table(teachers), "",
                      "## The arms under each teacher", "", ARMS_NOTE, "", *arms_table(rows)]) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "teachers.md") as f:
        f.write(text.encode())
    with atomic_open(out / "teachers.json") as f:
        f.write((json.dumps({"teachers": teachers, "arms": rows}, indent=2) + "\n").encode())
    return text


ARMS_NOTE = ("Gain kept: (base loss - arm loss) / (base loss - teacher loss), each study against its own base and "
             "teacher. vs reference: the perplexity ratio to the arm's reference (real text of the same size, or "
             "the set it varies), paired by seed. The change: the strong teacher's per-seed log ratios against the "
             "weak one's, Welch's test (below 1: the arm gained on its reference with the stronger teacher).")


@dataclass
class TeachersConfig:
    """Put the third edition's two studies side by side: the same arms under a weak and a strong teacher."""

    weak: str = "results/study-weak"  # results folder of the study under the weak teacher (make study-weak)
    strong: str = "results/study-strong"  # results folder of the study under the strong teacher (make study-strong)
    out_dir: str = "results"  # where teachers.md and teachers.json go


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TeachersConfig, argv)
    missing = [d for d in (cfg.weak, cfg.strong) if not (Path(d) / "study-retrain.json").exists()]
    if missing:
        sys.exit(f"error: {missing[0]}/study-retrain.json is absent: run its study first (make study-weak, make "
                 "study-strong), or redraw its report (python -m studies report retrain --results_dir ...)")
    print(report(Path(cfg.weak), Path(cfg.strong), Path(cfg.out_dir)))
