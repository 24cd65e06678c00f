"""The study's report: every arm of the sweep's sweep over seeds, on the held-out test slice, dev-test beside it.

    python -m studies report sweep                # redraw it from results/study (the sweep writes it when it ends)
    make study-report                     # the same

Reads what the sweep wrote into its results folder, and nothing else:
    heldout/<arm>-s<seed>.json   evaluate.py (or the sweep's untrained "base"): one arm, one seed, held-out slice
    dev/<arm>-s<seed>.json       the same on the dev-test slice (where the sweep made its choices)
    heldout/teacher.json, ...    the models evaluated once: the teacher (before and after sharing the unseen
                                 rows) and a base model that is not trained from scratch
    heldout/ngram.json           the unigram and bigram of the train split (dev/ngram.json: on dev-test)
    heldout/set-ngrams/<set>.json  the unigram and bigram fitted on one training set
    sets/<set>.json              each training set's statistics (studies.sets.set_statistics)
    config.json                  the sweep's settings: which alphas form the sweep (else every alpha=A arm)

Writes, into the same folder: study.md (the headline table on held-out with dev-test beside it; paired
contrasts between neighbouring alphas and a trend test over alpha; perplexity by frequency bucket with the
n-gram rows; how much of each arm its set's own n-grams explain; BLEU/ROUGE apart; the sets; the teacher
checks), study.json (the numbers behind the tables) and, with matplotlib, dose_response.png.
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
from gpt2.records import read_json
from studies.plots import dose_response_plot
from studies.stats import format_ci, mean_ci, paired_contrast, perplexity_ci, trend_test

SINGLES = ("base", "teacher-as-trained", "teacher")  # models evaluated once, not once per seed
GPT2_WORD_PPL = 29.4  # GPT-2 124M zero-shot on WikiText-2, word level (Radford et al. 2019, Table 3)


@dataclass
class StudyReportConfig:
    """Tabulate (and plot) the study's arms from what the sweep wrote."""

    results_dir: str = "results/study"  # the sweep's --results_dir: its evaluations; the report is written here too


# ------------------------------------------------------------------------------------ reading

def study_arms(folder: Path) -> dict[str, list[dict]]:
    """Evaluations grouped by arm: 'alpha=-1-s0.json' -> arm 'alpha=-1', one entry per seed."""
    arms: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*-s[0-9]*.json")):
        r = read_json(path)
        if r is not None and "perplexity" in r:
            arms.setdefault(path.stem.rsplit("-s", 1)[0], []).append(r)
    return arms


def set_ngram_records(folder: Path) -> dict[str, list[dict]]:
    """set-ngrams/<set>.json grouped by arm: 'alpha=1-s0' -> 'alpha=1'."""
    groups: dict[str, list[dict]] = {}
    for path in sorted((folder / "set-ngrams").glob("*.json")):
        r = read_json(path)
        if r is not None:
            groups.setdefault(path.stem.rsplit("-s", 1)[0], []).append(r)
    return groups


def is_sweep_name(name: str) -> bool:
    """'alpha=-1' (at the study's min_p) is a point of the alpha axis; 'alpha=1,min_p=0.1' is not."""
    return name.startswith("alpha=") and "," not in name


def arm_order(name: str) -> tuple:
    """alpha from the coldest down, then the other sets, the controls, students and references."""
    if is_sweep_name(name):
        return (0, -float(name.removeprefix("alpha=")))
    return ({"subset": 2, "full-train": 3, "base": 5}.get(name, 1 if name.startswith("alpha=") else 4), name)


# ------------------------------------------------------------------------------------ statistics

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


def seed_of(r: dict) -> str:
    return r["name"].rsplit("-s", 1)[1]


def paired_ratio(runs: list[dict], reference: list[dict]) -> dict | None:
    """An arm against the reference arm, paired by seed (the same seed picks both sets' prompts and the same
    init, data order and dropout): the mean over seeds of the difference in test NLL, with its 95% interval.
    exp of it is the ratio of perplexities; None without two shared seeds."""
    ref = {seed_of(r): r["perplexity"]["loss"] for r in reference}
    diffs = [r["perplexity"]["loss"] - ref[seed_of(r)] for r in runs if seed_of(r) in ref]
    return mean_ci(diffs) if len(diffs) >= 2 else None


def contrast(a: list[dict], b: list[dict]) -> dict | None:
    """paired_contrast of log perplexity, arm a minus arm b, over the seeds both have (None under two)."""
    la, lb = ({seed_of(r): r["perplexity"]["loss"] for r in runs} for runs in (a, b))
    seeds = sorted(la.keys() & lb.keys(), key=int)
    return paired_contrast([la[s] for s in seeds], [lb[s] for s in seeds]) if len(seeds) >= 2 else None


def contrast_pairs(names: list[str], sweep: list[float]) -> list[tuple[str, str]]:
    """(a, b) pairs to contrast: each sweep alpha against its neighbour above it; an alpha=A arm off the sweep
    (alpha=2) against the nearest sweep alpha; a bracket at another min_p against the same alpha at the study's;
    the first sweep alpha (ordinary sampling) against the real subset; full-train against the subset."""
    present = [a for a in sorted(sweep, reverse=True) if f"alpha={a:g}" in names]
    pairs = [(f"alpha={lo:g}", f"alpha={hi:g}") for hi, lo in zip(present, present[1:])]
    for name in names:
        if is_sweep_name(name) and present and float(name.removeprefix("alpha=")) not in present:
            nearest = min(present, key=lambda a: abs(a - float(name.removeprefix("alpha="))))
            pairs.append((name, f"alpha={nearest:g}"))
        elif name.startswith("alpha=") and "," in name and name.split(",")[0] in names:
            pairs.append((name, name.split(",")[0]))
    if present and "subset" in names:
        pairs.append((f"alpha={present[0]:g}", "subset"))
    if "full-train" in names and "subset" in names:
        pairs.append(("full-train", "subset"))
    return pairs


def alpha_trend(runs: dict[str, list[dict]], sweep: list[float]) -> dict | None:
    """trend_test of log perplexity on alpha over the sweep, seed as a fixed effect; seeds with one alpha only
    (the extra seeds) say nothing about the slope and are left out. None when the test cannot run."""
    by_seed: dict[str, list[tuple[float, float]]] = {}
    for alpha in sweep:
        for r in runs.get(f"alpha={alpha:g}", []):
            by_seed.setdefault(seed_of(r), []).append((alpha, r["perplexity"]["loss"]))
    points = [(s, a, y) for s, values in by_seed.items() if len(values) >= 2 for a, y in values]
    try:
        return trend_test([a for _, a, _ in points], [y for _, _, y in points], [s for s, _, _ in points])
    except ValueError:
        return None


def set_ngram_summary(records: list[dict]) -> dict:
    """Mean +- CI over an arm's sets of its set-fitted unigram and bigram: loss and per-bucket mean NLL."""
    out = {}
    for kind in ("unigram", "bigram"):
        out[kind] = {"loss": mean_ci([r[kind]["loss"] for r in records])}
        for bucket in tail.BUCKETS:
            values = [r[kind]["by_frequency"][bucket]["mean_nll"] for r in records
                      if r[kind]["by_frequency"][bucket]["mean_nll"] is not None]
            out[kind][f"nll_{bucket}"] = mean_ci(values) if values else None
    return out


# ------------------------------------------------------------------------------------ formatting

def ratio_ci(diff: dict | None) -> str:
    if diff is None:
        return "—"
    mean, hw = diff["mean"], diff["half_width"]
    return f"x{math.exp(mean):.2f} [{math.exp(mean - hw):.2f}, {math.exp(mean + hw):.2f}]"


def p_value(test: dict | None) -> str:
    return "—" if test is None else "< 0.001" if test["p"] < 0.001 else f"{test['p']:.3f}"


def slice_line(ngram: dict | None, dev: dict | None) -> str:
    """Which test tokens each slice holds (from the n-gram records, which carry them)."""
    if not ngram:
        return ""
    first, n = ngram.get("first_token"), ngram.get("eval_tokens")
    if first is None or n is None:
        return ""
    dev_n = f"tokens 0 to {dev['eval_tokens']:,}" if dev and dev.get("eval_tokens") else "its first tokens"
    return (f"Held-out slice: test tokens {first:,} to {first + n:,} ({n:,} tokens), read by no choice. "
            f"Dev-test slice: {dev_n}, where every choice was made (the set each student is distilled on).\n\n")


# ------------------------------------------------------------------------------------ tables

def headline_table(held: dict[str, dict], dev: dict[str, dict], ngram: dict | None, ngram_dev: dict | None) -> str:
    lines = ["| arm | seeds | held-out ppl [95% CI] | dev-test ppl [95% CI] | held-out ppl / subset's, paired by seed "
             "[95% CI] | bits/byte | word ppl |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, a in held.items():
        cells = [format_ci(a[k], d) if a[k] else "—" for k, d in (("bits_per_byte", 4), ("word_ppl", 1))]
        lines.append(f"| {name} | {a['seeds']} | {perplexity_ci(a['loss'])} | {perplexity_ci(dev.get(name, {}).get('loss'))} | "
                     f"{ratio_ci(a.get('vs_subset'))} | " + " | ".join(cells) + " |")
    for kind in ("unigram", "bigram"):
        if ngram:
            dev_ppl = fixed(ngram_dev[kind]["ppl"], 1) if ngram_dev else "—"
            lines.append(f"| {kind} (counts of the train split) | — | {ngram[kind]['ppl']:.1f} | {dev_ppl} | — | — | — |")
    return "\n".join(lines) + "\n"


def contrasts_table(contrasts: list[dict], trend: dict | None, trend_dev: dict | None, sweep: list[float]) -> str:
    lines = ["| contrast (a against b) | seeds | held-out ppl ratio a / b [95% CI] | p | dev-test ratio [95% CI] | p |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in contrasts:
        held, dev = c["heldout"], c["dev"]
        lines.append(f"| {c['a']} against {c['b']} | {held['n'] if held else '—'} | {ratio_ci(held)} | {p_value(held)} | "
                     f"{ratio_ci(dev)} | {p_value(dev)} |")
    text = "\n".join(lines) + "\n"
    if trend:
        def per_unit(t):
            return f"x{math.exp(t['slope']):.3f} [{math.exp(t['low']):.3f}, {math.exp(t['high']):.3f}], p {p_value(t)}"
        text += (f"\nTrend over the sweep's alphas ({', '.join(f'{a:g}' for a in sweep)}), seed as a fixed effect "
                 # the module trend_test lived in when the committed tables were drawn: they redraw byte for byte
                 f"(gpt2.metrics.stats.trend_test on log perplexity, {trend['n']} runs over {trend['n_seeds']} seeds, "
                 f"df {trend['df']}): held-out perplexity changes by {per_unit(trend)} per unit of alpha"
                 + (f"; on dev-test {per_unit(trend_dev)}" if trend_dev else "") + ".\n")
    return text


def bucket_table(arms: dict[str, dict], ngram: dict | None, set_ngrams: dict[str, dict]) -> str:
    """Perplexity by the target's frequency bucket: every arm, the n-grams of the train split, and the
    n-grams fitted on each arm's own sets."""
    lines = ["| arm | " + " | ".join(tail.BUCKETS) + " |", "|---|" + "---:|" * len(tail.BUCKETS)]
    for name, a in arms.items():
        lines.append(f"| {name} | " + " | ".join(perplexity_ci(a[f'nll_{b}']) for b in tail.BUCKETS) + " |")
    for kind in ("unigram", "bigram"):
        if ngram:
            lines.append(f"| {kind} of the train split | " + " | ".join(
                fixed(ngram[kind]["by_frequency"][b]["ppl"], 1) for b in tail.BUCKETS) + " |")
        for name, s in set_ngrams.items():
            lines.append(f"| {kind} of the {name} sets | " + " | ".join(perplexity_ci(s[kind][f'nll_{b}']) for b in tail.BUCKETS) + " |")
    return "\n".join(lines) + "\n"


def set_ngram_table(held: dict[str, dict], dev: dict[str, dict], set_held: dict[str, dict], set_dev: dict[str, dict]) -> str:
    lines = ["| set | arm, held-out ppl | its unigram | its bigram | arm, dev-test ppl | its unigram | its bigram |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in set_held.items():
        d = set_dev.get(name)
        lines.append(f"| {name} | {perplexity_ci(held.get(name, {}).get('loss'))} | {perplexity_ci(s['unigram']['loss'])} | "
                     f"{perplexity_ci(s['bigram']['loss'])} | {perplexity_ci(dev.get(name, {}).get('loss'))} | "
                     f"{perplexity_ci(d['unigram']['loss']) if d else '—'} | {perplexity_ci(d['bigram']['loss']) if d else '—'} |")
    return "\n".join(lines) + "\n"


def continuation_table(arms: dict[str, dict]) -> str:
    lines = ["| arm | BLEU | ROUGE-L |", "|---|---:|---:|"]
    for name, a in arms.items():
        if a["bleu"] or a["rougeL"]:
            lines.append(f"| {name} | {format_ci(a['bleu'], 2) if a['bleu'] else '—'} | "
                         f"{format_ci(a['rougeL'], 4) if a['rougeL'] else '—'} |")
    return "\n".join(lines) + "\n"


def sets_table(sets: list[dict]) -> str:
    lines = ["| set | teacher NLL (nats) | distinct-1 | distinct-2 | distinct-3 | entropy (bits) | train types held | "
             "tail types held | unseen-in-train tokens |", "|---|" + "---:|" * 8]
    for st in sets:  # the buckets are top-level keys of studies.sets.set_statistics
        lines.append(f"| {st['set']} | {fixed(st.get('teacher_nll'), 3)} | {fixed(st.get('distinct_1'), 3)} | "
                     f"{fixed(st.get('distinct_2'), 3)} | {fixed(st.get('distinct_3'), 3)} | {fixed(st.get('entropy_bits'), 2)} | "
                     f"{fixed(st.get('share_of_train_types'), 3)} | {fixed(st.get('tail', {}).get('share_of_bucket_types'), 3)} | "
                     f"{fixed(st.get('unseen', {}).get('token_share'), 4)} |")
    return "\n".join(lines) + "\n"


def teacher_checks(arms: dict[str, dict], ngram: dict | None, sets: list[dict]) -> str:
    """Is the teacher worth distilling? Its held-out perplexity against the bigram's, its word perplexity beside
    GPT-2's (both word-level), and the distinct-2 of its ordinary samples (alpha = 1) against the real subsets'
    (the sets have one size and sequence length)."""
    lines = []
    teacher = arms.get("teacher", {})
    if teacher.get("loss") and ngram:
        ppl, bigram = math.exp(teacher["loss"]["mean"]), ngram["bigram"]["ppl"]
        lines.append(f"- held-out perplexity: teacher {ppl:.1f} against the interpolated bigram's {bigram:.1f}: "
                     f"{'below' if ppl < bigram else 'NOT below'} it")
    if teacher.get("word_ppl"):
        lines.append(f"- held-out word perplexity: teacher {teacher['word_ppl']['mean']:.1f}; GPT-2 124M zero-shot "
                     f"reports {GPT2_WORD_PPL} on WikiText-2 (word level too, its whole test set)")
    def mean_distinct_2(prefix: str) -> float | None:
        values = [st["distinct_2"] for st in sets if st["set"].startswith(prefix) and st.get("distinct_2") is not None]
        return sum(values) / len(values) if values else None
    ordinary, real = mean_distinct_2("alpha=1-s"), mean_distinct_2("subset-s")
    if ordinary is not None and real:
        lines.append(f"- distinct-2 of its alpha = 1 sets {ordinary:.3f} against the real subsets' {real:.3f} "
                     f"({ordinary / real - 1:+.1%}; the bar is 20%)")
    return "\n".join(lines) + "\n" if lines else ""


# ------------------------------------------------------------------------------------ the report

def summarise_slice(folder: Path) -> dict:
    """One slice's arms (ordered, each with its ratio to the subset), singles, n-grams and set n-grams."""
    runs = dict(sorted(study_arms(folder).items(), key=lambda kv: arm_order(kv[0])))
    arms = {name: arm_summary(r) for name, r in runs.items()}
    for name in runs.keys() - {"subset", "base"}:
        arms[name]["vs_subset"] = paired_ratio(runs[name], runs.get("subset", []))
    for single in SINGLES:
        record = read_json(folder / f"{single}.json") if (folder / f"{single}.json").exists() else None
        if record:
            arms[single] = arm_summary([record])
    set_ngrams = {name: set_ngram_summary(r) for name, r in
                  sorted(set_ngram_records(folder).items(), key=lambda kv: arm_order(kv[0]))}
    ngram = read_json(folder / "ngram.json") if (folder / "ngram.json").exists() else None
    return {"runs": runs, "arms": arms, "ngram": ngram, "set_ngrams": set_ngrams}


def sweep_alphas(results_dir: Path, names: list[str]) -> list[float]:
    """The sweep's alphas: config.json's `alphas` when the sweep wrote it, else every alpha=A arm."""
    config = read_json(results_dir / "config.json") if (results_dir / "config.json").exists() else None
    if config and config.get("alphas"):
        return sorted(config["alphas"], reverse=True)
    return sorted((float(n.removeprefix("alpha=")) for n in names if is_sweep_name(n)), reverse=True)


BLEU_NOTE = ("BLEU and ROUGE-L are kept out of the headline table: each scores a greedy continuation against the one "
             "text that happened to follow its prompt, so it rewards copying that text rather than writing plausible "
             "text, and for models this small it sits near its floor for every arm. Held-out slice, mean +- 95% CI.\n")


def report(results_dir: str | Path) -> str:
    """results_dir/study.md and study.json (and dose_response.png with matplotlib) from what the sweep wrote."""
    results_dir = Path(results_dir)
    held, dev = summarise_slice(results_dir / "heldout"), summarise_slice(results_dir / "dev")
    if not held["arms"]:
        earlier = " (the earlier sweep, all on what is now dev-test, is in first-edition/ with its own study.md; " \
                  "a new `make study` writes the current sweep beside it)" if study_arms(results_dir / "first-edition") else ""
        raise FileNotFoundError(f"no study results in {results_dir / 'heldout'}{earlier}: run `python -m studies sweep` "
                                "(`make study`) first")
    sets = [r for r in (read_json(p) for p in sorted((results_dir / "sets").glob("*.json"))) if r]
    sweep = sweep_alphas(results_dir, list(held["runs"]))
    contrasts = [{"a": a, "b": b, "heldout": contrast(held["runs"][a], held["runs"][b]),
                  "dev": contrast(dev["runs"].get(a, []), dev["runs"].get(b, []))}
                 for a, b in contrast_pairs(list(held["runs"]), sweep)]
    trend, trend_dev = alpha_trend(held["runs"], sweep), alpha_trend(dev["runs"], sweep)
    text = (f"# Study: retraining on sets drawn with weight p^alpha\n\n{slice_line(held['ngram'], dev['ngram'])}"
            f"{headline_table(held['arms'], dev['arms'], held['ngram'], dev['ngram'])}"
            f"\n### Paired contrasts (log perplexity, paired by seed) and the trend over alpha\n\n"
            f"{contrasts_table(contrasts, trend, trend_dev, sweep)}"
            f"\n### Held-out perplexity by the target's frequency in the train split (mean over seeds)\n\n"
            f"{bucket_table(held['arms'], held['ngram'], held['set_ngrams'])}"
            f"\n### How much of each arm is its set's token frequencies: n-grams fitted on the set\n\n"
            f"{set_ngram_table(held['arms'], dev['arms'], held['set_ngrams'], dev['set_ngrams'])}"
            f"\n### Continuations (secondary)\n\n{BLEU_NOTE}\n{continuation_table(held['arms'])}"
            f"\n### The training sets\n\n{sets_table(sets)}"
            f"\n### Dev-test perplexity by the target's frequency (where the choices were made)\n\n"
            f"{bucket_table(dev['arms'], dev['ngram'], dev['set_ngrams'])}")
    checks = teacher_checks(held["arms"], held["ngram"], sets)
    text += f"\n### Is the teacher worth distilling? (held-out)\n\n{checks}" if checks else ""
    points = sorted((float(n.removeprefix("alpha=")), a["loss"]) for n, a in held["arms"].items()
                    if is_sweep_name(n) and a["loss"])
    figure = dose_response_plot(points, held["arms"], results_dir)
    text += f"\n![dose response]({figure.name})\n" if figure else "\n(no plot: matplotlib is not installed)\n"
    with atomic_open(results_dir / "study.md") as f:
        f.write(text.encode())
    summary = {"arms": held["arms"], "dev_arms": dev["arms"], "contrasts": contrasts, "trend": trend, "trend_dev": trend_dev,
               "sweep": sweep, "ngram": held["ngram"], "ngram_dev": dev["ngram"], "set_ngrams": held["set_ngrams"],
               "set_ngrams_dev": dev["set_ngrams"], "sets": sets}
    with atomic_open(results_dir / "study.json") as f:
        f.write((json.dumps(summary, indent=2) + "\n").encode())
    return text


def main(argv: list[str] | None = None) -> str:
    cfg, text = run_config(StudyReportConfig, argv, lambda cfg: report(cfg.results_dir))
    print(text)
    print(f"written to {Path(cfg.results_dir) / 'study.md'} and study.json")
    return text


if __name__ == "__main__":
    main()
