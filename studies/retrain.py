"""The retrain study: the seed's own regime. Does a pretrained model, continued on a set the fine-tuned
teacher drew from its lower-probability plausible tokens, keep (or gain) what fine-tuning gave, better than
the same model continued on real text of the same size? Measured on held-out test text that no choice looks at.

    python -m studies retrain          # everything, resumable: every finished piece is a file, skipped next time
    make study-retrain               # the same on the offline splits (2 CPU cores)

Design (every choice is a RetrainConfig field; issue #17, items 2-4):
1. The train split is cut into part A (its first `part_a_share`) and part B (the rest), both contiguous.
2. The base: a small GPT pretrained from scratch on part A (as GPT-2 was pretrained on other text). The
   teacher: the base fine-tuned on the whole train split (as GPT-2 -> fine-tuned GPT-2). With --base_init gpt2
   (make study-gpt2, a GPU) the base is GPT-2 itself, part A is its own pretraining text (WebText: not public,
   so no part-A arm) and part B is the whole train split.
3. Per seed, the sets, `set_tokens` each, all from part B: the teacher's continuations of part B's prompts
   (distill.py; weights p^alpha inside {p >= min_p p_max}, every alpha at every min_p); a random real subset
   of part B (data/subset.py); and challenging real examples: part B's chunks scored by the base (its mean
   NLL of each, a model that never trained on them), the hardest, middle and easiest of a random
   `challenge_share` of the chunks (data.subset.select_by_score; the seed draws the share).
4. The arms: the base continued for the same `arm_steps` on each set; and the brackets: on the whole of
   part B (the ceiling), on part A (no new data: the control for extra steps). The teacher is the reference.
5. KD with soft labels: students cut from the teacher (gpt2.kd.student_layers, DistilGPT2's evenly spaced
   map) trained with the teacher's soft targets (train.py --teacher) on the `kd_alphas` sets at `kd_min_p`
   and on the real subset, at every `kd_weights` (1: soft targets only); and the cut student untrained.
6. Protocol: the test split's first `dev_test_tokens` are the dev-test, where choices may look; every figure
   here is measured on the held-out slice after it (`heldout_tokens`; gpt2.metrics.perplexity, per-token NLL
   kept in work_dir/nll so that frequency buckets can be computed), beside the train split's n-gram baselines.
   Nothing in this script makes a choice on test tokens: base and teacher keep their best val checkpoint.
7. The report (studies/retrain_report.py): mean +- 95% CI over seeds, the change against the base, paired
   contrasts against real text of the same size (t and sign-flip tests, Holm over the report), the
   frequency-bucket table.
8. The third edition's arms (issue 28; each off unless its RetrainConfig list is given; make study-weak /
   study-strong): real text at a share of the size, mixtures of it with continuations (studies/retrain_sets.py),
   token edits (data/token_edit.py), sets deduplicated across sequences, the prompt out of the loss, a second
   recipe; with curve_interval every arm's val curve (studies/time_to_gain.py) and its last step evaluated.

Results land in `results_dir` (one JSON per piece; study-retrain.md/.json; timings.json, the only file that
differs between runs); runs, sets and per-token NLL in `work_dir`. A piece is finished when its result file is
there; what it needs from `work_dir` (the parts, the base, the teacher, a set, the chunk scores) is made again
when absent, so a fresh clone holding the committed results redoes only the pieces whose file is missing.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from data.articles import article_starts
from data.distill import DistillConfig, DistillError, distill
from data.loader import SplitTokens
from data.shards import write_data_dir
from data.subset import SubsetConfig, SubsetError, make_subset
from data.token_edit import TokenEditConfig, token_edit
from gpt2.atomic import atomic_open
from gpt2.checkpoint import CheckpointError, load_model
from gpt2.cli import config_to_dict, parse_config
from gpt2.device import resolve_device_and_dtype
from gpt2.kd import make_student, student_layers
from gpt2.metrics import tail
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.training import TrainingStopped
from studies import ngram, retrain_report
from studies.evaluations import cut_test_split, train_run, write_json
from studies.progress import Progress
from studies.retrain_plan import (CHALLENGE, PART_A, PART_B, REAL, Arm, RetrainConfig, edit_name, kd_names, mix_name,
                                  plan_record, same_settings, seed_arms, set_name)
from studies.retrain_plan import arm_names  # noqa: F401 (read by the tests and callers as retrain.arm_names)
from studies.retrain_sets import generation_seconds, write_challenge_set, write_less_data, write_mixture
from studies.time_to_gain import record_seconds, val_curve
from studies.sets import set_statistics


# What a piece costs, relative to scoring one token (a forward pass), for the time estimate only: a training
# token is a forward and a backward pass and its share of the AdamW step, a KD token adds the teacher's forward,
# a generated token is one cached decode step at batch size 64 (rough ratios for the 4 x 192 shape on 2 CPU
# cores; the estimate printed is rescaled by the seconds the pieces actually took).
COST = {"eval": 1.0, "train": 2.0, "kd": 3.5, "generate": 2.5}


@dataclass
class Piece:
    name: str  # what it makes, as printed
    output: Path  # the file whose existence marks it finished (written last, atomically)
    units: float  # its work in scored-token equivalents (COST), for the time estimate
    make: Callable[[], object]  # makes it; reads what earlier pieces wrote


class RetrainStudy:
    """The pieces, in order; each writes its output file last, and is skipped when that file exists."""

    def __init__(self, cfg: RetrainConfig):
        self.cfg, self.work, self.results = cfg, Path(cfg.work_dir), Path(cfg.results_dir)
        self.train_tokens = SplitTokens(cfg.data_dir, "train")[:].astype(np.int64)
        self.n_a = int(len(self.train_tokens) * cfg.part_a_share) if cfg.pretrains_base else 0  # part B: all
        self.train_counts = tail.type_counts(self.train_tokens)
        self.buckets = tail.frequency_buckets(self.train_counts)
        test = SplitTokens(cfg.data_dir, "test")
        starts = article_starts(test[:]) if cfg.article_cut else None  # the cut between articles, or at counts
        _, held = cut_test_split(len(test), cfg.dev_test_tokens, cfg.heldout_tokens, starts)  # the study's own cut
        n_test = len(test)
        if held.n_tokens < cfg.seq_len:
            raise ValueError(f"the test split ({n_test:,} tokens) leaves no held-out slice of --seq_len {cfg.seq_len} "
                             f"after the dev-test's --dev_test_tokens {cfg.dev_test_tokens:,}")
        self.heldout_range = (held.first, held.first + held.n_tokens)
        self.device, self.amp_dtype = resolve_device_and_dtype(cfg.device)
        self.dirs = {PART_A: self.work / "data" / PART_A, PART_B: self.work / "data" / PART_B}
        self.samplings = {set_name(a, m): (a, m) for m in cfg.min_ps for a in cfg.alphas}
        self.n_val = len(SplitTokens(cfg.data_dir, "val"))

    # ---- paths
    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    def set_dir(self, name: str, seed: int) -> Path:
        return self.dirs[name] if name in self.dirs else self.work / "sets" / f"{name}-s{seed}"

    def heldout(self) -> np.ndarray:
        """The held-out slice of the test split: the only test tokens this script reads."""
        begin, end = self.heldout_range
        return SplitTokens(self.cfg.data_dir, "test")[begin:end].astype(np.int64)

    # ---- 1. parts A and B, the n-gram baselines
    def part(self, name: str) -> Path:
        """Part A's or part B's data folder, written first if absent."""
        if not (self.dirs[name] / "manifest.json").exists():
            self.split_parts()
        return self.dirs[name]

    def split_parts(self) -> None:
        n = len(self.train_tokens)
        parts = {PART_A: (0, self.n_a), PART_B: (self.n_a, n)} if self.cfg.pretrains_base else {PART_B: (0, n)}
        for name, (begin, end) in parts.items():
            write_data_dir(self.dirs[name], {"train": self.train_tokens[begin:end]}, {
                "kind": name, "source": {"data_dir": self.cfg.data_dir, "split": "train", "range": [begin, end]},
                "splits": {"train": {}}}, shard_tokens=100_000_000)

    def baselines(self) -> None:
        heldout, counts = self.heldout(), ngram.count_ngrams(self.train_tokens)
        lam = ngram.tune_lambda(counts, SplitTokens(self.cfg.data_dir, "val")[:].astype(np.int64))  # chosen on val
        record = {"bigram_lambda": lam, "heldout": list(self.heldout_range)}
        for name, nll in (("unigram", ngram.unigram_nll(counts, heldout)),
                          ("bigram", ngram.bigram_nll(counts, heldout, lam))):
            record[name] = {"ppl": ngram.perplexity(nll)[1], "loss": float(nll.mean()),
                            "by_frequency": tail.bucket_perplexity(heldout[1:], nll, self.buckets)}
        write_json(self.results / "ngram.json", record)

    # ---- training and evaluation: what a piece needs in work_dir is made when it is absent
    def trained(self, name: str, keep: str = "best", **overrides) -> str:
        """The best.pt (keep="last": last.pt) of train.py's run work_dir/runs/<name> (evaluations.train_run: trained
        unless finished)."""
        lr = overrides["lr"]
        warmup = max(1, min(10, overrides["max_steps"] // 5))
        return str(train_run(self.cfg, self.run_dir(name), keep_last=keep == "last", **{
            "dropout": self.cfg.dropout, "warmup_steps": warmup, "min_lr": lr / 20, **overrides}))

    def base_checkpoint(self) -> str:
        """The base: pretrained on part A (its best val checkpoint), or --base_init as it is."""
        cfg = self.cfg
        if not cfg.pretrains_base:
            return cfg.base_init
        return self.trained("base", init="scratch", n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                            max_steps=cfg.base_steps, lr=cfg.base_lr, data_dir=str(self.part(PART_A)), seed=1337,
                            eval_interval=max(1, cfg.base_steps // 8))

    def teacher_checkpoint(self) -> str:
        """The teacher: the base fine-tuned on the whole train split (its best val checkpoint)."""
        cfg = self.cfg
        return self.trained("teacher", init=self.base_checkpoint(), max_steps=cfg.teacher_steps, lr=cfg.teacher_lr,
                            data_dir=cfg.data_dir, seed=1337, eval_interval=max(1, cfg.teacher_steps // 8))

    def evaluate(self, name: str, model_source: Callable, **extra) -> None:
        """Held-out perplexity of a model (model_source() builds it): the JSON record (with `extra`), and its
        per-token NLL in work_dir/nll/<name>.npy (float32, target i = held-out token i + 1)."""
        heldout = self.heldout()
        model = model_source().to(self.device, torch.float32)  # a bf16 export too: weights as trained, autocast
        result = evaluate_perplexity(model, heldout, seq_len=self.cfg.seq_len, stride=self.cfg.seq_len,
                                     device=self.device, autocast_dtype=self.amp_dtype, progress=False, per_token=True)
        nll_path = self.work / "nll" / f"{name}.npy"
        nll_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(nll_path) as f:
            np.save(f, result.token_nll)
        if self.cfg.curve_interval and name == "teacher":  # where the arms' val curves aim (they start at the base)
            val = SplitTokens(self.cfg.data_dir, "val")[: self.cfg.curve_tokens].astype(np.int64)
            extra["curve_val_loss"] = evaluate_perplexity(model, val, seq_len=self.cfg.seq_len, device=self.device,
                                                          autocast_dtype=self.amp_dtype, progress=False).loss
        write_json(self.results / f"{name}.json", {
            "name": name, "heldout": list(self.heldout_range), "perplexity": result.as_dict(),
            "by_frequency": tail.bucket_perplexity(heldout[1:], result.token_nll, self.buckets), **extra})

    @functools.cached_property
    def student_blocks(self) -> list[int]:
        """The teacher's blocks a cut student keeps (DistilGPT2's evenly spaced map)."""
        return student_layers(load_model(self.teacher_checkpoint()).config.n_layer)

    def cut_student(self):
        return make_student(load_model(self.teacher_checkpoint()), self.student_blocks)

    # ---- 3. the sets
    def set_data(self, name: str, seed: int) -> Path:
        """A set's folder (part A or B, a synthetic set, the real subset, a challenge set, a third-edition set), made
        first if absent."""
        if name in self.dirs:
            return self.part(name)
        out = self.set_dir(name, seed)
        if (out / "manifest.json").exists():
            return out
        if name == REAL:
            like = self.set_data(set_name(self.cfg.alphas[0], self.cfg.min_ps[0]), seed)  # its sequence lengths
            make_subset(SubsetConfig(data_dir=str(self.part(PART_B)), like=str(like), out_dir=str(out), seed=seed))
        elif name in CHALLENGE:
            self.challenge_set(name, seed)
        elif name in self.samplings:
            self.synthetic_set(*self.samplings[name], seed)
        else:
            self.third_edition_set(name, seed)
        return out

    def third_edition_set(self, name: str, seed: int) -> None:
        """The less-data, mixture, token-edit and deduplicated sets (studies/retrain_sets.py, data/token_edit.py)."""
        cfg, out, m = self.cfg, self.set_dir(name, seed), self.cfg.extra_min_p
        for share in cfg.less_data_shares:
            if name == f"real{share:g}":
                return write_less_data(out, self.set_data(REAL, seed), share, cfg.set_tokens)
        for share, alpha in ((s, a) for s in cfg.mix_shares for a in cfg.mix_alphas):
            if name == mix_name(share, set_name(alpha, m)):
                return write_mixture(out, self.set_data(REAL, seed), self.set_data(set_name(alpha, m), seed),
                                     share, cfg.set_tokens, seed)
        for alpha in cfg.edit_alphas:
            if name == edit_name(cfg.edit_share, alpha, m):
                return token_edit(TokenEditConfig(
                    teacher=self.teacher_checkpoint(), data_dir=str(self.part(PART_B)), out_dir=str(out), alpha=alpha,
                    min_p=m, edit_share=cfg.edit_share, n_tokens=cfg.set_tokens,
                    chunk_tokens=cfg.prompt_tokens + cfg.gen_tokens, seed=seed, device=cfg.device), argv=[])
        for alpha in cfg.dedup_alphas:
            if name == f"{set_name(alpha, m)},dedup":
                return self.synthetic_set(alpha, m, seed, out=out, max_shared_ngrams=cfg.dedup_max_shared)
        raise ValueError(f"no set is named {name!r} in this study's plan")

    def synthetic_set(self, alpha: float, min_p: float, seed: int, out: Path | None = None, **filters) -> None:
        cfg = self.cfg
        distill(DistillConfig(
            teacher=self.teacher_checkpoint(), data_dir=str(self.part(PART_B)),
            out_dir=str(out or self.set_dir(set_name(alpha, min_p), seed)), alpha=alpha, min_p=min_p,
            n_tokens=cfg.set_tokens, prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, seed=seed,
            device=cfg.device, preview=5, **filters))

    def set_statistics(self, set_dir: Path) -> None:
        """What a set holds (studies.sets.set_statistics) and what the teacher thought of it, in
        results/sets/<set>.json."""
        tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
        stats = set_statistics(tokens, self.train_counts, self.buckets)
        manifest = json.loads((set_dir / "manifest.json").read_text())
        write_json(self.results / "sets" / f"{set_dir.name}.json", {
            "set": set_dir.name, "kind": manifest.get("kind"), "sampling": manifest.get("sampling"), **stats,
            "teacher_surprisal": manifest.get("quality", {}).get("mean_surprisal_nats"),
            "dropped_by_filter": manifest.get("filter", {}).get("dropped_total")})

    # ---- 3. challenging real examples
    def chunk_scores(self) -> np.ndarray:
        """The base's mean NLL of each whole chunk of part B (chunk = prompt + gen tokens), each chunk its own
        only context: disjoint windows of exactly one chunk, so target i of the windows is chunk i // L's.
        Kept in work_dir/chunk_scores.npy, computed first if absent."""
        path, L = self.work / "chunk_scores.npy", self.cfg.prompt_tokens + self.cfg.gen_tokens
        if path.exists():
            return np.load(path)
        part_b = self.train_tokens[self.n_a :]
        n = len(part_b) // L
        model = load_model(self.base_checkpoint(), device=self.device, dtype=torch.float32)  # as every model here
        nll = evaluate_perplexity(model, part_b[: n * L], seq_len=L, stride=L, device=self.device,
                                  autocast_dtype=self.amp_dtype, progress=False, per_token=True).token_nll
        nll = np.concatenate([nll, [np.nan]]).reshape(n, L)[:, : L - 1]  # drop each window's look at the next chunk
        with atomic_open(path) as f:
            np.save(f, nll.mean(axis=1))
        return np.load(path)

    def challenge_set(self, which: str, seed: int) -> None:
        """The `which` (hardest / middle / easiest) chunks of part B by the base's score (retrain_sets)."""
        cfg = self.cfg
        write_challenge_set(self.set_dir(which, seed), self.train_tokens[self.n_a :], self.chunk_scores(), which,
                            seed, cfg.set_tokens, cfg.prompt_tokens + cfg.gen_tokens, cfg.challenge_share)

    # ---- the arms
    def continue_base(self, arm: Arm, seed: int) -> None:
        """The base continued for arm_steps on the arm's set (or part), with the arm's own flags, evaluated on the
        held-out slice; with curve_interval, its val curve (and the set's generation seconds) kept in the record."""
        cfg, name = self.cfg, f"{arm.name}-s{seed}"
        data = self.set_data(arm.data, seed)
        curve = {"eval_interval": cfg.curve_interval, "eval_tokens": cfg.curve_tokens, "keep": "last"} \
            if cfg.curve_interval else {}
        weights = self.trained(name, **{"init": self.base_checkpoint(), "max_steps": cfg.arm_steps, "lr": cfg.arm_lr,
                                        "data_dir": str(data), "seed": seed, **curve, **dict(arm.train)})
        extra = {}
        if curve:  # steps and losses in the record; seconds (they differ between runs) in curve_seconds.json
            points = val_curve(self.run_dir(name))
            record_seconds(self.results / "curve_seconds.json", name, points, generation_seconds(data))
            extra["curve"] = [{"step": p["step"], "val_loss": p["val_loss"]} for p in points]
        self.evaluate(name, lambda: load_model(weights), **extra)

    def kd_student(self, name: str, data: str, weight: float, seed: int) -> None:
        """A student cut from the teacher, trained for arm_steps with its soft targets (train.py --teacher)."""
        cfg, teacher = self.cfg, self.teacher_checkpoint()
        best = self.trained(name, init=teacher, init_layers=self.student_blocks, teacher=teacher, kd_weight=weight,
                            max_steps=cfg.arm_steps, lr=cfg.arm_lr, data_dir=str(self.set_data(data, seed)), seed=seed)
        self.evaluate(name, lambda: load_model(best))

    # ---- the plan: a piece is finished when its result file is there (what it needs is made on the way)
    def train_units(self, steps: int, kind: str = "train", evals: int = 2) -> float:
        """A run's cost: its steps, and the val split scored `evals` times."""
        return COST[kind] * steps * self.cfg.batch_tokens + evals * self.n_val

    def pieces(self) -> list[Piece]:
        cfg, held = self.cfg, self.heldout_range[1] - self.heldout_range[0]
        base_units = self.train_units(cfg.base_steps, evals=9) if cfg.pretrains_base else 0.0
        plan = [Piece("n-gram baselines", self.results / "ngram.json", 0.0, self.baselines),
                Piece("the base", self.results / "base.json", base_units + held,
                      lambda: self.evaluate("base", lambda: load_model(self.base_checkpoint()))),
                Piece("the teacher", self.results / "teacher.json", self.train_units(cfg.teacher_steps, evals=9) + held,
                      lambda: self.evaluate("teacher", lambda: load_model(self.teacher_checkpoint())))]
        if cfg.kd_weights:  # the KD students' starting point
            plan.append(Piece("the cut student, untrained", self.results / "student-cut.json", held,
                              lambda: self.evaluate("student-cut", self.cut_student)))
        for seed in cfg.seeds:  # seed by seed: a cut study has whole seeds to report
            plan += self.seed_pieces(seed)
        return plan

    def set_names(self, seed: int) -> list[str]:
        """Every set an arm of the seed trains on, once, in order (the parts are not sets)."""
        names = [*self.samplings, *(a.data for a in seed_arms(self.cfg, seed))]
        return [n for n in dict.fromkeys(names) if n not in self.dirs]

    @property
    def arm_evals(self) -> int:
        """Val evaluations of an arm: at its start and end, and every curve_interval steps."""
        return 2 + (self.cfg.arm_steps // self.cfg.curve_interval if self.cfg.curve_interval else 0)

    def seed_pieces(self, seed: int) -> list[Piece]:
        cfg, held = self.cfg, self.heldout_range[1] - self.heldout_range[0]
        rows = math.ceil(cfg.set_tokens / (cfg.prompt_tokens + cfg.gen_tokens + 1))  # sequences, in whole batches:
        batch = DistillConfig.batch_size
        drawn = [*self.samplings, *(f"{set_name(a, cfg.extra_min_p)},dedup" for a in cfg.dedup_alphas)]
        units = {name: COST["generate"] * math.ceil(rows / batch) * batch * cfg.gen_tokens for name in drawn}
        units |= {edit_name(cfg.edit_share, a, cfg.extra_min_p): COST["eval"] * cfg.set_tokens for a in cfg.edit_alphas}
        plan = [Piece(f"set {name}-s{seed}", self.results / "sets" / f"{name}-s{seed}.json", units.get(name, 0.0),
                      lambda name=name: self.set_statistics(self.set_data(name, seed)))
                for name in self.set_names(seed)]
        plan += [Piece(f"arm {arm.name}-s{seed}", self.results / f"{arm.name}-s{seed}.json",
                       self.train_units(cfg.arm_steps, evals=self.arm_evals) + held,
                       lambda arm=arm: self.continue_base(arm, seed))
                 for arm in seed_arms(cfg, seed)]
        plan += [Piece(f"student {student}-s{seed}", self.results / f"{student}-s{seed}.json",
                       self.train_units(cfg.arm_steps, "kd") + held,
                       lambda s=student, d=data, w=weight: self.kd_student(f"{s}-s{seed}", d, w, seed))
                 for student, data, weight in kd_names(cfg)]
        return plan

    def run(self) -> None:
        write_json(self.results / "plan.json", plan_record(self.cfg, self.heldout_range))
        plan = self.pieces()
        progress = Progress("retrain", total=sum(p.units for p in plan), timings=self.results / "timings.json",
                            done=sum(p.units for p in plan if p.output.exists()))
        for piece in plan:
            if not piece.output.exists():
                progress.run(piece.name, piece.units, piece.make)
        progress.say("done")


def main(argv: list[str] | None = None) -> None:
    """`python -m studies retrain`: the retrain study as configured, then its report."""
    cfg = parse_config(RetrainConfig, argv, description="python -m studies retrain: " + RetrainConfig.__doc__)
    print(config_to_dict(cfg))
    results = Path(cfg.results_dir)
    same_settings(results, cfg)
    write_json(results / "config.json", config_to_dict(cfg))
    try:
        RetrainStudy(cfg).run()
    except (TrainingStopped, DistillError, SubsetError, CheckpointError, FileNotFoundError,
            ValueError) as e:
        sys.exit(f"error: {e}")
    retrain_report.report(results)  # the tables, from what the pieces wrote
