"""Where the study measures: two slices of the test split, and every evaluation of the sweep on both.

    dev-test   test tokens [0, dev_test_tokens)                         every choice is made here (or on val)
    held-out   test tokens [dev_test_tokens, + heldout_tokens, or end)  every headline figure; no choice reads it

(or, given the split's article starts, both cuts moved to the nearest boundary between Wikitext articles:
cut_test_split's `starts`, from data.articles.article_starts).

Each evaluation is written once per slice, side by side, under the sweep's results folder:

    dev/<name>.json, heldout/<name>.json                 a model (evaluate.py's JSON, or a base model's perplexity)
    dev/ngram.json, heldout/ngram.json                   add-one unigram and interpolated bigram of the train split
    dev/set-ngrams/<set>.json, heldout/set-ngrams/...     the same two models fitted on one training set

Models are scored in disjoint windows of seq_len tokens (stride = seq_len, as the retrain study does): half the
cost of evaluate.py's default overlapping windows. The earlier sweep's dev-test figures (results/study/first-edition) used stride seq_len / 2.

A file is written whole (atomically) when its evaluation ends and skipped when it exists, so an interrupted
study redoes only what it had not finished. The bigrams' lambda is tuned on the val split, never on test.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from data.articles import snap_to_article
from data.loader import SplitTokens, training_data
from gpt2 import evaluation, trainer
from gpt2.atomic import atomic_open
from gpt2.checkpoint import load_checkpoint, save_checkpoint
from gpt2.metrics import tail
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.train_config import TrainConfig
from gpt2.training import TrainingStopped
from studies import ngram

DEV, HELDOUT = "dev", "heldout"  # the slices' names: the folders their results go to


@dataclass(frozen=True)
class TestSlice:
    """A contiguous range of the test split."""

    name: str  # DEV or HELDOUT
    first: int  # the slice's first token
    n_tokens: int  # its length


def cut_test_split(n_test: int, dev_test_tokens: int, heldout_tokens: int,
                   starts: np.ndarray | None = None) -> tuple[TestSlice, TestSlice]:
    """(dev-test, held-out) of a test split of n_test tokens; heldout_tokens 0: to the end of the split.

    With `starts` (data.articles.article_starts of the split), both cuts fall between articles: the dev-test
    ends at the article start nearest to dev_test_tokens (data.articles.snap_to_article), and the held-out
    slice ends at the article boundary nearest to its first token + heldout_tokens, the split's end counting as
    one (the end of its last article) and the held-out slice keeping at least one article; to the end of the
    split when heldout_tokens is 0 or reaches past it. Without, the cuts are at exactly those token counts."""
    starts = None if starts is None else np.asarray(starts, dtype=np.int64)
    dev = dev_test_tokens if starts is None else snap_to_article(starts, dev_test_tokens)
    rest = n_test - dev
    if dev < 2 or rest < 2:
        snapped = "" if dev == dev_test_tokens else f" (snapped to the article start at token {dev:,})"
        raise ValueError(f"--dev_test_tokens {dev_test_tokens:,}{snapped} must leave at least 2 tokens on each side "
                         f"of the {n_test:,}-token test split: lower it")
    if not heldout_tokens or heldout_tokens >= rest:
        held = rest
    elif starts is None:
        held = heldout_tokens
    else:
        ends = np.append(starts[starts > dev], n_test)  # the boundaries after the held-out slice's first article
        held = snap_to_article(ends, dev + heldout_tokens) - dev
    return TestSlice(DEV, 0, dev), TestSlice(HELDOUT, dev, held)


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write((json.dumps(record, indent=2) + "\n").encode())


def train_run(settings, run_dir: Path, keep_last: bool = False, **overrides) -> Path:
    """A training run into run_dir (train.py's: gpt2.trainer.train on the shards its config names), and its
    best.pt (keep_last: last.pt, the last step's weights); skipped when its summary.json is there (the run finished).
    `settings` is the study's config (seq_len, batch_tokens, micro_batch_size, device, data_dir); `overrides` are
    the run's own flags. A cut run resumes from its latest.pt (written at each val evaluation), or starts afresh
    when cut before its first; latest.pt (weights + AdamW moments: only for resuming) goes once the run ends."""
    kept = run_dir / ("last.pt" if keep_last else "best.pt")
    if (run_dir / "summary.json").exists():
        return kept
    if run_dir.exists() and not (run_dir / "latest.pt").exists():
        shutil.rmtree(run_dir)  # cut before its first checkpoint: nothing to keep
    common = dict(seq_len=settings.seq_len, total_batch_tokens=settings.batch_tokens, eval_interval=10**9,
                  micro_batch_size=settings.micro_batch_size or settings.batch_tokens // settings.seq_len,
                  device=settings.device, val_data_dir=settings.data_dir, out_dir=str(run_dir),
                  resume=(run_dir / "latest.pt").exists())
    cfg = TrainConfig(**{**common, **overrides})
    summary = trainer.train(cfg, training_data(cfg))
    if summary["stopped_early"]:  # SIGINT / SIGTERM: the run saved latest.pt and stopped; it is not finished
        raise TrainingStopped(f"{run_dir.name} stopped at step {summary['steps']}; run the study again to resume it")
    if keep_last:  # the last step evaluated, so latest.pt holds it: its weights, without the AdamW moments
        state = load_checkpoint(run_dir / "latest.pt")
        save_checkpoint(kept, dataclasses.replace(state, optimizer=None, scaler=None, batches=None))
    write_json(run_dir / "summary.json", summary)
    (run_dir / "latest.pt").unlink(missing_ok=True)
    return kept


class Evaluations:
    """Every evaluation of the study, on both slices; `settings` holds the sweep's StudyConfig."""

    def __init__(self, settings, results: Path, train_tokens: np.ndarray, say: Callable[[str], None],
                 device, amp_dtype):
        self.cfg, self.results, self.say, self.device, self.amp_dtype = settings, results, say, device, amp_dtype
        self.train_tokens, self.train_counts = train_tokens, tail.type_counts(train_tokens)
        self.buckets = tail.frequency_buckets(self.train_counts)
        self.val_tokens = SplitTokens(settings.data_dir, "val")[:].astype(np.int64)
        n_test = len(SplitTokens(settings.data_dir, "test"))
        self.slices = cut_test_split(n_test, settings.dev_test_tokens, settings.heldout_tokens)

    def tokens(self, piece: TestSlice) -> np.ndarray:
        """The slice's test tokens, int64: read only here, one slice at a time."""
        return SplitTokens(self.cfg.data_dir, "test")[piece.first : piece.first + piece.n_tokens].astype(np.int64)

    def todo(self, relative: str) -> list[TestSlice]:
        """The slices whose result `relative` (e.g. 'alpha=1-s0.json') is not written yet."""
        return [s for s in self.slices if not (self.results / s.name / relative).exists()]

    def model(self, name: str, source: Path) -> None:
        """evaluate.py's evaluation on each slice: perplexity, frequency buckets and continuations, all inside the
        slice; its row in the slice's evaluations.md, then its JSON (gpt2.evaluation.save_results)."""
        cfg = self.cfg
        for piece in self.todo(f"{name}.json"):
            self.say(f"evaluating {name} on {piece.name} (test tokens {piece.first:,} + {piece.n_tokens:,})")
            folder = self.results / piece.name
            folder.mkdir(parents=True, exist_ok=True)
            settings = evaluation.EvalConfig(
                model=str(source), name=name, data_dir=cfg.data_dir, split="test", first_token=piece.first,
                max_eval_tokens=piece.n_tokens, seq_len=cfg.seq_len, stride=cfg.seq_len, gen_passages=cfg.gen_passages,
                gen_prompt_tokens=cfg.gen_prompt_tokens, gen_new_tokens=cfg.gen_new_tokens,
                gen_batch_size=cfg.gen_passages, device=cfg.device, out_json=str(folder / f"{name}.json"),
                table=str(folder / "evaluations.md"), progress=False)
            evaluation.table_rows(settings.table)  # a table we may not rewrite: say so before the work
            results = evaluation.evaluate(settings, SplitTokens(cfg.data_dir, "test"), SplitTokens(cfg.data_dir, "train"))
            evaluation.save_results(settings, results)

    def untrained(self, name: str, model) -> None:
        """Perplexity (and its frequency buckets) of a model built in memory: the arms' untrained base."""
        for piece in self.todo(f"{name}.json"):
            test = self.tokens(piece)
            ppl = evaluate_perplexity(model, test, seq_len=self.cfg.seq_len, stride=self.cfg.seq_len,
                                      progress=False, per_token=True, device=self.device, autocast_dtype=self.amp_dtype)
            write_json(self.results / piece.name / f"{name}.json", {
                "name": name, "data": {"first_token": piece.first, "n_tokens_evaluated": piece.n_tokens},
                "perplexity": ppl.as_dict(),
                "perplexity_by_frequency": {"buckets": tail.bucket_perplexity(test[1:], ppl.token_nll, self.buckets)}})

    def ngram_records(self, fitted_on: np.ndarray, pieces: list[TestSlice]) -> dict[str, dict]:
        """Add-one unigram and interpolated bigram fitted on `fitted_on` (lambda tuned on val), scored on each
        slice of `pieces`: {slice name: record}."""
        counts = ngram.count_ngrams(fitted_on)
        lam = ngram.tune_lambda(counts, self.val_tokens)
        records = {}
        for piece in pieces:
            test = self.tokens(piece)
            record = {"first_token": piece.first, "eval_tokens": piece.n_tokens, "fitted_tokens": len(fitted_on),
                      "bigram_lambda": lam}
            for kind, nll in (("unigram", ngram.unigram_nll(counts, test)), ("bigram", ngram.bigram_nll(counts, test, lam))):
                loss, ppl = ngram.perplexity(nll)
                record[kind] = {"loss": loss, "ppl": ppl, "by_frequency": tail.bucket_perplexity(test[1:], nll, self.buckets)}
            records[piece.name] = record
        return records

    def baselines(self) -> None:
        """The n-gram models of the train split, on both slices (ngram.json)."""
        pieces = self.todo("ngram.json")
        for name, record in (self.ngram_records(self.train_tokens, pieces) if pieces else {}).items():
            write_json(self.results / name / "ngram.json", record)
            self.say(f"baselines on {name}: unigram ppl {record['unigram']['ppl']:.1f}, "
                     f"bigram {record['bigram']['ppl']:.1f}")

    def set_ngrams(self, set_dir: Path) -> None:
        """The n-gram models of one training set, on both slices: how much of an arm is the set's frequencies."""
        relative = f"set-ngrams/{set_dir.name}.json"
        pieces = self.todo(relative)
        if pieces:
            tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
            for name, record in self.ngram_records(tokens, pieces).items():
                write_json(self.results / name / relative, {"set": set_dir.name, **record})
