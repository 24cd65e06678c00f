"""The tables of the retrain study, from the JSON files it wrote: study-retrain.md and study-retrain.json.

    python -m studies report retrain --results_dir results/study-retrain

Every figure is on the held-out slice of the test split. Per arm, over the seeds whose result exists:
    held-out ppl    exp(mean log-perplexity) with its 95% t interval (studies.stats.mean_ci on the losses)
    vs base         the change of perplexity against the base (one model, the same for every seed), in %
    gain kept       (base loss - arm loss) / (base loss - teacher loss): the share of what fine-tuning gave
    vs real         the ratio of perplexity to the arm on real text of the same size, paired by seed
                    (stats.paired_contrast on the losses; a KD student against the KD student on real text at
                    its weight), with its 95% interval and p-value
then the paired contrasts (neighbouring alphas, the two plausible sets, hard / easy real chunks against the
middle, the ceiling against real text, real text against no new data) and the trend over alpha with seed as a
fixed effect (stats.trend_test); the perplexity by the target's frequency in the train split (gpt2.metrics.tail),
mean over seeds; and the sets' statistics.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2.atomic import atomic_open
from gpt2.cli import parse_config
from gpt2.formatting import fixed
from gpt2.metrics.tail import BUCKETS
from studies.plots import curves_plot, gain_plot
from studies.stats import holm, mean_ci, paired_contrast, perplexity_ci, sign_flip_test, trend_test
from studies.time_to_gain import arm_times, times_table

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


def summarize(results: Path, name: str, ref: str, seeds: list[int], refs: dict[str, dict]) -> dict | None:
    """An arm over its seeds: the held-out loss (mean, 95% CI), by frequency bucket, its change against the base,
    the share of the fine-tuning gain (base -> teacher) it kept, and its ratio to `ref` paired by seed."""
    runs = arm_losses(results, name, seeds)
    if not runs:
        return None
    losses = [r["perplexity"]["loss"] for r in runs.values()]
    row = {"seeds": sorted(runs), "loss": mean_ci(losses),
           "by_frequency": {b: _mean([r["by_frequency"][b]["mean_nll"] for r in runs.values()]) for b in BUCKETS}}
    if "base" in refs:
        base = refs["base"]["loss"]
        row["vs_base"] = mean_ci([v - base for v in losses])
        if "teacher" in refs and refs["teacher"]["loss"] < base:
            row["gain_kept"] = mean_ci([(base - v) / (base - refs["teacher"]["loss"]) for v in losses])
        base_f, teacher_f = (frequent_loss(refs[k]["by_frequency"]) if k in refs else None for k in ("base", "teacher"))
        if teacher_f is not None and teacher_f < base_f:
            row["gain_kept_frequent"] = mean_ci([(base_f - frequent_loss(r["by_frequency"])) / (base_f - teacher_f)
                                                 for r in runs.values()])
    if name != ref:
        row["vs_real"] = {"against": ref, **(paired(results, name, ref, seeds) or {})}
    return row


def frequent_loss(by_frequency: dict) -> float:
    """Mean NLL over the frequent ("head") and mid-frequency targets together (gpt2.metrics.tail's buckets): the
    targets a fine-tuning gain can be read on without the rare and unseen types that dominate the mean."""
    parts = [by_frequency[b] for b in ("head", "mid")]
    return sum(p["mean_nll"] * p["n_targets"] for p in parts) / sum(p["n_targets"] for p in parts)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def share(ci: dict | None) -> str:
    if ci is None:
        return ""
    m, h = ci["mean"], ci["half_width"]
    return f"{m:.2f}" if h is None else f"{m:.2f} [{m - h:.2f}, {m + h:.2f}]"


def change(ci: dict | None) -> str:
    if ci is None:
        return ""
    pct = lambda x: f"{100 * (math.exp(x) - 1):+.1f}%"  # noqa: E731
    return pct(ci["mean"]) if ci["half_width"] is None else \
        f"{pct(ci['mean'])} [{pct(ci['mean'] - ci['half_width'])}, {pct(ci['mean'] + ci['half_width'])}]"


def contrast(c: dict | None) -> str:
    if not c or "p" not in c:
        return ""
    text = f"×{math.exp(c['mean']):.3f} [{math.exp(c['low']):.3f}, {math.exp(c['high']):.3f}], p = {c['p']:.2g}"
    flip = c.get("sign_flip")
    return text + (f" (sign-flip {flip['p']:.2g})" if flip else "") + (f", Holm {c['holm']:.2g}" if "holm" in c else "")


def versus(c: dict | None) -> str:
    """contrast(), naming the arm it is against where that is not real text of the same size."""
    return "" if not c else (f"vs {c['against']}: " if c["against"] != "real" and "p" in c else "") + contrast(c)


def adjust_for_multiplicity(arms: dict[str, dict], contrasts: list[dict]) -> int:
    """Holm-adjusted p-values ("holm") on every paired test of the report, one family (a test shown twice, in the
    headline and among the contrasts, counts once); returns the family's size."""
    tests: dict[str, list[dict]] = {}
    for name, row in arms.items():
        if "p" in row.get("vs_real", {}):
            tests.setdefault(f"{name} vs {row['vs_real']['against']}", []).append(row["vs_real"])
    for c in contrasts:
        if "p" in c:
            tests.setdefault(f"{c['a']} vs {c['b']}", []).append(c)
    for key, p in holm({k: shown[0]["p"] for k, shown in tests.items()}).items() if tests else ():
        for c in tests[key]:
            c["holm"] = p
    return len(tests)


def buckets(by_frequency: dict) -> str:
    return " | ".join("" if by_frequency.get(b) is None else f"{math.exp(by_frequency[b]):,.0f}" for b in BUCKETS)


def synthetic(name: str) -> tuple[float, float] | None:
    """'alpha=A,min_p=M' -> (A, M); None for any other arm (a mixture, an edit, a deduplicated set, ...)."""
    match = re.fullmatch(r"alpha=([-+\d.e]+),min_p=([\d.e-]+)", name)
    return (float(match[1]), float(match[2])) if match else None


def contrast_pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """(a, b, what a - b asks), paired by seed: neighbouring alphas at each min_p, each alpha's two plausible sets,
    the hardest and easiest real chunks against the middle ones, the ceiling against real text of the same size,
    and real text against no new data (does new text beat the same steps on the base's own?)."""
    sets = {n: synthetic(n) for n in names if synthetic(n)}
    pairs = []
    for min_p in sorted({m for _, m in sets.values()}, reverse=True):
        alphas = sorted((a for a, m in sets.values() if m == min_p), reverse=True)
        pairs += [(f"alpha={lo:g},min_p={min_p:g}", f"alpha={hi:g},min_p={min_p:g}",
                   "a lower alpha: less likely tokens") for hi, lo in zip(alphas, alphas[1:])]
    for alpha in sorted({a for a, _ in sets.values()}, reverse=True):
        min_ps = sorted((m for a, m in sets.values() if a == alpha), reverse=True)
        pairs += [(f"alpha={alpha:g},min_p={wide:g}", f"alpha={alpha:g},min_p={narrow:g}", "a wider plausible set")
                  for narrow, wide in zip(min_ps, min_ps[1:])]
    wanted = [("hardest", "middle", "harder real chunks"), ("easiest", "middle", "easier real chunks"),
              ("part-b", "real", "all of part B, not a same-size sample"), ("real", "part-a", "new real text")]
    for name in names:  # the third edition's: less real data, and what synthetic text adds to it
        if match := re.fullmatch(r"(real[\d.]+)\+(.+)", name):
            wanted.append((name, match[1], "the rest of the size as synthetic text"))
        elif re.fullmatch(r"real[\d.]+", name):
            wanted.append((name, "real", "less real text, the same steps"))
        elif match := re.fullmatch(r"real@(lr=.+)", name):
            wanted.append((name, "real", f"the second recipe ({match[1]})"))
    return pairs + [(a, b, what) for a, b, what in wanted if a in names and b in names]


def alpha_trends(results: Path, names: list[str], seeds: list[int]) -> dict[str, dict]:
    """Per min_p: trend_test of held-out log perplexity on alpha, seed as a fixed effect."""
    sets = {n: synthetic(n) for n in names if synthetic(n)}
    trends = {}
    for min_p in sorted({m for _, m in sets.values()}, reverse=True):
        points = [(a, s, r["perplexity"]["loss"]) for n, (a, m) in sets.items() if m == min_p
                  for s, r in arm_losses(results, n, seeds).items()]
        try:
            trends[f"min_p={min_p:g}"] = trend_test([a for a, _, _ in points], [y for _, _, y in points],
                                                    [s for _, s, _ in points])
        except ValueError:  # too few alphas or seeds for a slope
            pass
    return trends


def paired(results: Path, a: str, b: str, seeds: list[int]) -> dict | None:
    """paired_contrast of held-out loss, arm a minus arm b, over the seeds both have (None under two)."""
    la, lb = arm_losses(results, a, seeds), arm_losses(results, b, seeds)
    common = [s for s in seeds if s in la and s in lb]
    if len(common) < 2:
        return None
    c = paired_contrast([la[s]["perplexity"]["loss"] for s in common], [lb[s]["perplexity"]["loss"] for s in common])
    return {**c, "sign_flip": sign_flip_test(c["differences"])}


def headline_table(refs: dict[str, dict], arms: dict[str, dict], what: dict[str, str]) -> list[str]:
    lines = ["| arm | what | seeds | held-out ppl [95% CI] | vs base [95% CI] | fine-tuning gain kept [95% CI] | "
             "gain kept, frequent + mid targets | vs real, paired by seed [95% CI] |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    base, teacher = refs.get("base", {}).get("loss"), refs.get("teacher", {}).get("loss")
    for name, row in refs.items():
        single = None if base is None or name not in ("teacher", "student-cut") else \
            {"mean": row["loss"] - base, "half_width": None}
        kept = f"{(base - row['loss']) / (base - teacher):.2f}" if single and teacher is not None else ""
        seeds = "—" if name in ("unigram", "bigram") else "1"
        lines.append(f"| {name} | {WHAT[name]} | {seeds} | {math.exp(row['loss']):,.1f} | {change(single)} | "
                     f"{kept} | | |")
    for name, row in arms.items():
        lines.append(f"| {name} | {what[name]} | {len(row['seeds'])} | {perplexity_ci(row['loss'], ',')} | "
                     f"{change(row.get('vs_base'))} | {share(row.get('gain_kept'))} | "
                     f"{share(row.get('gain_kept_frequent'))} | {versus(row.get('vs_real'))} |")
    return lines


def bucket_table(refs: dict[str, dict], arms: dict[str, dict]) -> list[str]:
    lines = ["| arm | " + " | ".join(f"{b} ppl" for b in BUCKETS) + " |", "|---|" + "---:|" * len(BUCKETS)]
    for name, row in refs.items():
        lines.append(f"| {name} | {buckets({b: row['by_frequency'][b]['mean_nll'] for b in BUCKETS})} |")
    lines += [f"| {name} | {buckets(row['by_frequency'])} |" for name, row in arms.items()]
    return lines


def contrasts_table(contrasts: list[dict], trends: dict[str, dict]) -> list[str]:
    lines = ["| a | b | what a adds | ppl ratio a / b, paired by seed [95% CI] |", "|---|---|---|---:|"]
    lines += [f"| {c['a']} | {c['b']} | {c['what']} | {contrast(c)} |" for c in contrasts if "p" in c]
    for min_p, t in trends.items():
        lines.append(f"| alpha sweep at {min_p} | | the trend: ppl ratio per unit of alpha, seed a fixed effect "
                     f"({t['n']} runs, {t['n_seeds']} seeds) | {contrast({'mean': t['slope'], **t})} |")
    return lines


def sets_table(results: Path) -> list[str]:
    """The sets, mean over seeds: what the teacher thought of them (mean surprisal), how varied they are, how
    much of the train split's frequent and rare types they hold."""
    by_kind: dict[str, list[dict]] = {}
    for path in sorted((results / "sets").glob("*.json")):
        record = json.loads(path.read_text())
        by_kind.setdefault(record["set"].rsplit("-s", 1)[0], []).append(record)
    lines = ["| set | seeds | teacher surprisal (nats) | distinct-2 | entropy (bits) | head-type token share | "
             "tail types held | unseen-type token share |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, records in by_kind.items():
        mean = lambda f: _mean([f(r) for r in records])  # noqa: E731
        lines.append(f"| {kind} | {len(records)} | {fixed(mean(lambda r: r.get('teacher_surprisal')), 2)} | "
                     f"{fixed(mean(lambda r: r['distinct_2']), 3)} | {fixed(mean(lambda r: r['entropy_bits']), 2)} | "
                     f"{fixed(mean(lambda r: r['head']['token_share']), 3)} | "
                     f"{fixed(mean(lambda r: r['tail']['share_of_bucket_types']), 3)} | "
                     f"{fixed(mean(lambda r: r['unseen']['token_share']), 4)} |")
    return lines


def report(results: Path) -> str:
    """Write study-retrain.md and study-retrain.json in `results` (from its plan.json and piece files); return the
    markdown."""
    plan = json.loads((results / "plan.json").read_text())
    refs, seeds = reference_rows(results), plan["seeds"]
    arms = {a["name"]: summarize(results, a["name"], a["reference"], seeds, refs) for a in plan["arms"]}
    what = {a["name"]: a["what"] for a in plan["arms"]}
    arms = {k: v for k, v in arms.items() if v}
    contrasts = [{"a": a, "b": b, "what": w, **(paired(results, a, b, seeds) or {})}
                 for a, b, w in contrast_pairs(list(arms))]
    trends = alpha_trends(results, list(arms), seeds)
    family = adjust_for_multiplicity(arms, contrasts)
    begin, end = plan["heldout"]
    lines = [f"## The seed's regime: the base continued on each set, and the KD students (held-out: test tokens "
             f"{begin:,} to {end:,})", "", HEADLINE_NOTE, MULTIPLICITY_NOTE.format(family), "",
             *headline_table(refs, arms, what), "",
             "### Paired contrasts (held-out perplexity ratio, by seed)", "", *contrasts_table(contrasts, trends), "",
             "### Held-out perplexity by the target's frequency in the train split (mean over seeds)", "",
             *bucket_table(refs, arms), "", "### The sets (mean over seeds)", "", *sets_table(results)]
    lines += time_section(results, list(arms), seeds)
    text = "\n".join(lines) + "\n"
    with atomic_open(results / "study-retrain.md") as f:
        f.write(text.encode())
    with atomic_open(results / "study-retrain.json") as f:
        f.write((json.dumps({"references": refs, "arms": arms, "contrasts": contrasts, "trends": trends},
                            indent=2) + "\n").encode())
    gain_plot(arms, results)
    return text


def time_section(results: Path, names: list[str], seeds: list[int]) -> list[str]:
    """Time to gain in steps (studies/time_to_gain.py) where the arms kept val curves; the seconds, which differ
    between runs, go to time_to_gain.md beside seed 0's curves plotted against them (time_to_gain.png)."""
    teacher = read(results / "teacher.json") or {}
    if "curve_val_loss" not in teacher:
        return []
    timed = read(results / "curve_seconds.json") or {}
    seconds = lambda n: {s: timed[f"{n}-s{s}"] for s in seeds if f"{n}-s{s}" in timed}  # noqa: E731
    times = {n: t for n in names if (t := arm_times(arm_losses(results, n, seeds), teacher["curve_val_loss"],
                                                       seconds(n)))}
    if not times:
        return []
    curves = {n: [{**p, "elapsed_s": t + timed[f"{n}-s{seeds[0]}"]["set_seconds"]} for p, t in
                  zip(r["curve"], timed[f"{n}-s{seeds[0]}"]["elapsed_s"])]
              for n in times if (r := read(results / f"{n}-s{seeds[0]}.json")) and f"{n}-s{seeds[0]}" in timed}
    base = next(iter(arm_losses(results, next(iter(times)), seeds).values()))["curve"][0]["val_loss"]
    gain = base - teacher["curve_val_loss"]
    drawn = curves_plot(curves, results / "time_to_gain.png", {"50% of the gain": base - 0.5 * gain,
                                                               "80% of the gain": base - 0.8 * gain})
    with atomic_open(results / "time_to_gain.md") as f:
        f.write("\n".join(["# Time to gain, in steps and seconds (they differ between runs)", "", TIME_NOTE, "",
                           *times_table(times, with_seconds=True), "", f"Seed {seeds[0]}'s curves: {drawn}.", ""])
                .encode())
    return ["", "### Time to gain (val slice; seconds in time_to_gain.md)", "", TIME_NOTE, "",
            *times_table(times, with_seconds=False)]


TIME_NOTE = ("Each arm's val loss on a fixed slice of the val split every curve_interval steps; the fine-tuning "
             "gain is the base's loss there (each curve's step 0) minus the teacher's. For 50% and 80% of it: the "
             "seeds whose curve reached it, and the median step (and wall seconds: training so far plus the time "
             "that made the set) of the first evaluation at or below it, resolved to the evaluation interval.")


HEADLINE_NOTE = ("vs base: the change of held-out perplexity against the base. Fine-tuning gain kept: (base loss - "
                 "arm loss) / (base loss - teacher loss), 1 = all of what fine-tuning gave, 0 = none. vs real: each "
                 "arm against the base continued on real text of the same size, paired by seed; a KD student "
                 "against the KD student on real text at its own weight. Count baselines have no seeds (—).")


MULTIPLICITY_NOTE = (" Each paired test gives the t-test's p, the exact sign-flip test's (distribution-free; n seeds "
                     "cannot go below 2 / 2^n, 0.0625 at 5) and Holm's adjustment of the t-test's p over all {} "
                     "paired tests of this report, one family: read a contrast as shown only where Holm's p is small.")


@dataclass
class ReportConfig:
    """Redraw the retrain study's tables from the JSON files it wrote."""

    results_dir: str = "results/study-retrain"  # where the retrain study wrote plan.json and one JSON per piece


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ReportConfig, argv)
    if not (Path(cfg.results_dir) / "plan.json").exists():
        sys.exit(f"error: {cfg.results_dir}/plan.json is absent: run `python -m studies retrain` "
                 "(make study-retrain) first")
    print(report(Path(cfg.results_dir)))


if __name__ == "__main__":
    main()
