"""Metric speed: gpt2.metrics.bleu against sacrebleu, gpt2.metrics.rouge against rouge-score, on generated text.

    python -m benchmarks.metrics [--pairs 10000] [--repeats 5]

--pairs (reference, hypothesis) pairs are drawn from a seeded Zipf-like vocabulary with
punctuation, numbers and a few HTML entities; the reference is the hypothesis with words dropped,
replaced and inserted (so that BLEU is far from zero), and a third of the texts span two or three
lines (so that ROUGE-Lsum differs from ROUGE-L). Measured, each as the median of --repeats runs
after one untimed warm-up:
1. corpus BLEU of all pairs: `sacrebleu.corpus_bleu(hyps, [refs])` vs `gpt2.metrics.bleu.corpus_bleu`;
2. ROUGE-1/2/L/Lsum of every pair: `RougeScorer([...]).score(ref, hyp)` vs `gpt2.metrics.rouge.score`;
3. the same with stemming (`use_stemmer=True`); ours starts each run with an empty stem cache.
All results are checked to agree (to 1e-9) before anything is timed. Prints a table, writes --out_json.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass

import sacrebleu
from rouge_score import rouge_scorer

from gpt2.metrics import bleu, porter, rouge
from gpt2.cli import config_to_dict, parse_config
from benchmarks.harness import median_time, print_table_and_save


@dataclass
class BenchConfig:
    """Time BLEU and ROUGE against their reference implementations."""

    pairs: int = 10_000  # (reference, hypothesis) pairs to score
    repeats: int = 5  # timed runs per measurement; the median is reported
    seed: int = 0  # seed of the text generator
    out_json: str = "bench_metrics.json"  # where the results go (JSON)


def make_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(5000)]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]  # Zipf: a few words are very common
    extras = [",", ".", ";", "(", ")", "\"", "'s", "1,000.5", "3-4", "&amp;", "&quot;", "café"]

    def words(k: int) -> list[str]:
        out = rng.choices(vocab, weights, k=k)
        for i in range(len(out)):
            if rng.random() < 0.12:
                out[i] = rng.choice(extras)
        return out

    def text(parts: list[str]) -> str:
        if rng.random() < 1 / 3:  # two or three lines
            cuts = sorted(rng.sample(range(1, len(parts)), rng.randint(1, 2)))
            lines = [parts[a:b] for a, b in zip([0] + cuts, cuts + [len(parts)])]
            return "\n".join(" ".join(line) for line in lines)
        return " ".join(parts)

    hyps, refs = [], []
    for _ in range(n):
        hyp = words(rng.randint(8, 40))
        ref = [w if rng.random() > 0.2 else rng.choice(vocab) for w in hyp if rng.random() > 0.1]
        ref = ref + words(rng.randint(0, 5)) if len(ref) > 3 else words(10)
        hyps.append(text(hyp))
        refs.append(text(ref))
    return refs, hyps


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv)
    refs, hyps = make_pairs(cfg.pairs, cfg.seed)
    scorer = rouge_scorer.RougeScorer(list(rouge.ROUGE_TYPES))
    stemming_scorer = rouge_scorer.RougeScorer(list(rouge.ROUGE_TYPES), use_stemmer=True)

    def ours_stemmed():
        porter.stem.cache_clear()  # every run stems its words afresh
        return [rouge.score(r, h, use_stemmer=True) for r, h in zip(refs, hyps)]

    # Same answers first: a fast wrong metric is worth nothing.
    ours, theirs = bleu.corpus_bleu(hyps, [refs]), sacrebleu.corpus_bleu(hyps, [refs])
    assert abs(ours.score - theirs.score) <= 1e-9, (ours, theirs)
    worst = 0.0
    for r, h in zip(refs, hyps):
        for a, b in ((rouge.score(r, h), scorer.score(r, h)),
                     (rouge.score(r, h, use_stemmer=True), stemming_scorer.score(r, h))):
            worst = max(worst, *(abs(getattr(a[k], f) - getattr(b[k], f))
                                 for k in rouge.ROUGE_TYPES for f in ("precision", "recall", "fmeasure")))
    assert worst <= 1e-9, worst

    results = {"config": config_to_dict(cfg), "bleu": ours.score, "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "sacrebleu": sacrebleu.__version__}}
    rows = []
    for name, mine, ref in [
        ("corpus BLEU", lambda: bleu.corpus_bleu(hyps, [refs]), lambda: sacrebleu.corpus_bleu(hyps, [refs])),
        ("ROUGE-1/2/L/Lsum, per pair", lambda: [rouge.score(r, h) for r, h in zip(refs, hyps)],
         lambda: [scorer.score(r, h) for r, h in zip(refs, hyps)]),
        ("ROUGE, stemmed, per pair", ours_stemmed, lambda: [stemming_scorer.score(r, h) for r, h in zip(refs, hyps)]),
    ]:
        t_ours, runs_ours = median_time(mine, cfg.repeats)
        t_ref, runs_ref = median_time(ref, cfg.repeats)
        results[name] = {"ours_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours,
                         "ours_runs": runs_ours, "reference_runs": runs_ref}
        rows.append((name, f"{t_ours:.3f}s", f"{t_ref:.3f}s", f"{t_ref / t_ours:.2f}x"))

    print(f"{cfg.pairs:,} pairs, median of {cfg.repeats} runs; BLEU = {ours.score:.2f}, "
          f"mean ROUGE-Lsum F = {rouge.corpus_rouge(refs, hyps)['rougeLsum'].fmeasure:.4f}")
    return print_table_and_save([("metric", 28), ("ours", 10), ("reference", 10), ("speedup", 8)], rows, results,
                                cfg.out_json)


if __name__ == "__main__":
    main()
