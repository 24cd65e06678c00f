"""The study, second edition: the seed's own regime. Does a pretrained model, continued on a set the fine-tuned
teacher drew from its lower-probability plausible tokens, keep (or gain) what fine-tuning gave, better than
the same model continued on real text of the same size? Measured on held-out test text that no choice looks at.

    python study_retrain.py          # everything, resumable: every finished piece is a file, skipped next time
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
7. The report (study_retrain_report.py): mean +- 95% CI over seeds, the change against the base, paired
   contrasts against real text of the same size, the frequency-bucket table.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import distill
import study_retrain_report
import train
from study_eval import cut_test_split, train_run, write_json
from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import write_data_dir
from data.subset import SubsetConfig, SubsetError, make_subset, select_by_score
from gpt2.atomic import atomic_open
from gpt2.checkpoint import CheckpointError, load_model
from gpt2.cli import config_to_dict, parse_config, require_positive
from gpt2.device import resolve_device_and_dtype
from gpt2.kd import make_student, student_layers
from gpt2.metrics import ngram, tail
from gpt2.metrics.perplexity import evaluate_perplexity


@dataclass
class RetrainConfig:
    """The seed's regime at CPU scale; every piece skipped when its file exists."""

    data_dir: str = "shards/wikitext2"  # the real data: train, val and test splits (make study-retrain: offline)
    work_dir: str = "study-retrain"  # runs, sets, parts A/B and per-token NLL (large, not committed)
    results_dir: str = "results/study-retrain"  # one JSON per piece, the report (small, committed)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seed: its prompts, draws, subsets, data order
    base_init: str = "scratch"  # "scratch": the base is pretrained here on part A; else the base is this model
                                # as it is (gpt2: make study-gpt2), part A its own pretraining text (not read),
                                # part B the whole train split, and no part-A arm
    part_a_share: float = 0.5  # scratch base: part A = this share of the train split, from its start; B = the rest
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.0, -1.0])  # synthetic sets: weights p^alpha
    min_ps: list[float] = field(default_factory=lambda: [0.1, 0.002])  # every alpha at each plausible set
                                                                       # {p >= min_p p_max}: 0.1 is the recipe's
                                                                       # (make distill), 0.002 the first study's
    set_tokens: int = 18_000  # tokens of every set (separators included); 3 x 71 chunks fit a half of part B
    prompt_tokens: int = 32  # real part-B tokens that start each synthetic sequence
    gen_tokens: int = 224  # tokens the teacher adds; prompt + gen is also the real sets' chunk length
    challenge_share: float = 0.5  # each seed picks hardest / middle / easiest from this random share of the chunks
    dev_test_tokens: int = 60_000  # the test split's first tokens: the dev-test, never reported here
    heldout_tokens: int = 120_000  # the held-out slice: this many tokens after the dev-test (0: all the rest of
                                   # the test split, 226K on Wikitext-2)
    n_layer: int = 4  # scratch base (and so teacher and arms): transformer blocks
    n_head: int = 6  # scratch base: attention heads
    n_embd: int = 192  # scratch base: model width
    base_steps: int = 160  # base: optimizer steps on part A (batch_tokens each); best.pt by val loss
    base_lr: float = 3e-3  # base: peak learning rate (cosine to 1/20 of it)
    teacher_steps: int = 80  # teacher: steps of fine-tuning the base on the whole train split; best.pt by val
    teacher_lr: float = 1e-3  # teacher: peak learning rate
    arm_steps: int = 20  # every arm (base continued, KD student): the same optimizer steps (4.6 passes over a set)
    arm_lr: float = 1e-3  # every arm's peak learning rate (a continued model: the teacher's fine-tuning rate)
    dropout: float = 0.1  # dropout in every training run
    kd_alphas: list[float] = field(default_factory=lambda: [1.0, -1.0])  # KD students: the synthetic sets they
                                                                         # train on (at kd_min_p), and the real subset
    kd_min_p: float = 0.1  # KD students: the plausible set of their synthetic sets (the pipeline's)
    kd_weights: list[float] = field(default_factory=lambda: [1.0, 0.5])  # KD loss weight w: w T^2 KL + (1-w) CE;
                                                                         # 1 is soft targets only (a sampled token
                                                                         # is then an input, not a target), 0.5
                                                                         # the pipeline's mix
    seq_len: int = 256  # training rows, evaluation windows (disjoint: stride = seq_len) and scored chunks
    batch_tokens: int = 4096  # tokens per optimizer step
    micro_batch_size: int | None = None  # rows per forward pass (lower it if memory runs out); None: the whole step
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"

    @property
    def pretrains_base(self) -> bool:
        return self.base_init == "scratch"

    def __post_init__(self) -> None:
        if not self.seeds or not self.alphas or not self.min_ps or not self.kd_weights:
            raise ValueError("--seeds, --alphas, --min_ps and --kd_weights must each list at least one value")
        require_positive(self, "set_tokens", "base_steps", "teacher_steps", "arm_steps", "seq_len", "batch_tokens",
                         "micro_batch_size", "prompt_tokens", "gen_tokens")
        if (self.pretrains_base and not 0 < self.part_a_share < 1) or not 0 < self.challenge_share <= 1:
            raise ValueError("need 0 < --part_a_share < 1 and 0 < --challenge_share <= 1")
        if any(a not in self.alphas for a in self.kd_alphas) or self.kd_min_p not in self.min_ps:
            raise ValueError("--kd_alphas must be among --alphas and --kd_min_p among --min_ps (their sets are made)")
        if self.prompt_tokens + self.gen_tokens > self.seq_len:
            raise ValueError(f"--prompt_tokens + --gen_tokens = {self.prompt_tokens + self.gen_tokens} must fit the "
                             f"models' context, --seq_len {self.seq_len}")
        if self.dev_test_tokens < 0 or self.heldout_tokens < 0:
            raise ValueError("--dev_test_tokens and --heldout_tokens must be >= 0 (0 heldout: to the end of the split)")


def set_name(alpha: float, min_p: float) -> str:
    return f"alpha={alpha:g},min_p={min_p:g}"  # study.py's spelling of a set at a named min_p


REAL, CHALLENGE, PART_B, PART_A = "real", ("hardest", "middle", "easiest"), "part-b", "part-a"


def arm_names(cfg: RetrainConfig) -> list[str]:
    """The base continued: on each synthetic set, real text of the same size, the challenging chunks,
    the whole of part B (the ceiling) and part A (no new data; only where the base was pretrained here)."""
    brackets = [PART_B, PART_A] if cfg.pretrains_base else [PART_B]
    return [set_name(a, m) for m in cfg.min_ps for a in cfg.alphas] + [REAL, *CHALLENGE, *brackets]


def kd_names(cfg: RetrainConfig) -> list[tuple[str, str, float]]:
    """(student name, set, kd weight) of every KD student."""
    sets = [set_name(a, cfg.kd_min_p) for a in cfg.kd_alphas] + [REAL]
    return [(f"kd{w:g}-{s}", s, w) for w in cfg.kd_weights for s in sets]


WHAT = {REAL: "real text of part B, same size", "hardest": "part B's hardest chunks by the base",
        "middle": "part B's middle chunks by the base", "easiest": "part B's easiest chunks by the base",
        PART_B: "the whole of part B (ceiling)", PART_A: "part A again (no new data)"}


def plan_record(cfg: RetrainConfig, heldout: tuple[int, int]) -> dict:
    """What the report needs to know of the plan (plan.json): the seeds, the held-out slice of the test split, and
    every arm in order with what it is and the arm it is contrasted with, paired by seed."""
    arms = [{"name": n, "what": WHAT.get(n) or "teacher's continuations, p^{} in p ≥ {} p_max".format(
        *n.removeprefix("alpha=").split(",min_p=")), "reference": REAL} for n in arm_names(cfg)]
    arms += [{"name": k, "what": f"student cut from the teacher, KD weight {w:g}, on {s}",
              "reference": f"kd{w:g}-{REAL}"} for k, s, w in kd_names(cfg)]
    return {"seeds": cfg.seeds, "heldout": list(heldout), "arms": arms}


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


class Progress:
    """Prints each piece as it starts, with the share of the work done and an estimate of the time left
    (the seconds per unit of the pieces this session ran); records each piece's seconds in timings.json."""

    def __init__(self, pieces: list[Piece], timings: Path):
        self.total, self.timings_path, self.t0 = sum(p.units for p in pieces), timings, time.perf_counter()
        self.done = sum(p.units for p in pieces if p.output.exists())
        self.ran_units = self.ran_seconds = 0.0
        self.timings = json.loads(timings.read_text()) if timings.exists() else {}

    def say(self, text: str) -> None:
        print(f"[study-retrain {time.perf_counter() - self.t0:7.0f} s] {text}", flush=True)

    def left(self) -> str:
        if not self.ran_units:
            return "time left: estimated once a piece with work in it has run"
        return f"about {(self.total - self.done) * self.ran_seconds / self.ran_units / 60:.0f} min left"

    def run(self, piece: Piece) -> None:
        self.say(f"{piece.name} ({self.done / self.total:.0%} of the work done, {self.left()})")
        t = time.perf_counter()
        piece.make()
        seconds = time.perf_counter() - t
        self.done, self.ran_units, self.ran_seconds = self.done + piece.units, self.ran_units + piece.units, \
            self.ran_seconds + seconds
        self.timings[piece.name] = round(seconds, 1)
        write_json(self.timings_path, self.timings)


class RetrainStudy:
    """The pieces, in order; each writes its output file last, and is skipped when that file exists."""

    def __init__(self, cfg: RetrainConfig):
        self.cfg, self.work, self.results = cfg, Path(cfg.work_dir), Path(cfg.results_dir)
        self.train_tokens = SplitTokens(cfg.data_dir, "train")[:].astype(np.int64)
        self.n_a = int(len(self.train_tokens) * cfg.part_a_share) if cfg.pretrains_base else 0  # part B: all
        self.train_counts = ngram.type_counts(self.train_tokens)
        self.buckets = tail.frequency_buckets(self.train_counts)
        n_test = len(SplitTokens(cfg.data_dir, "test"))
        _, held = cut_test_split(n_test, cfg.dev_test_tokens, cfg.heldout_tokens)  # the study's own cut
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
    def trained(self, name: str, **overrides) -> str:
        """The best.pt of train.py's run work_dir/runs/<name> (study_eval.train_run: trained unless finished)."""
        lr = overrides["lr"]
        warmup = max(1, min(10, overrides["max_steps"] // 5))
        return str(train_run(self.cfg, self.run_dir(name), **{"dropout": self.cfg.dropout, "warmup_steps": warmup,
                                                            "min_lr": lr / 20, **overrides}))

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

    def evaluate(self, name: str, model_source: Callable) -> None:
        """Held-out perplexity of a model (model_source() builds it): the JSON record, and its per-token NLL
        in work_dir/nll/<name>.npy (float32, target i = held-out token i + 1)."""
        heldout = self.heldout()
        model = model_source().to(self.device)
        result = evaluate_perplexity(model, heldout, seq_len=self.cfg.seq_len, stride=self.cfg.seq_len,
                                     device=self.device, autocast_dtype=self.amp_dtype, progress=False, per_token=True)
        nll_path = self.work / "nll" / f"{name}.npy"
        nll_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(nll_path) as f:
            np.save(f, result.token_nll)
        write_json(self.results / f"{name}.json", {
            "name": name, "heldout": list(self.heldout_range), "perplexity": result.as_dict(),
            "by_frequency": tail.bucket_perplexity(heldout[1:], result.token_nll, self.buckets)})

    @functools.cached_property
    def student_blocks(self) -> list[int]:
        """The teacher's blocks a cut student keeps (DistilGPT2's evenly spaced map)."""
        return student_layers(load_model(self.teacher_checkpoint()).config.n_layer)

    def cut_student(self):
        return make_student(load_model(self.teacher_checkpoint()), self.student_blocks)

    # ---- 3. the sets
    def set_data(self, name: str, seed: int) -> Path:
        """A set's folder (part A or B, a synthetic set, the real subset, a challenge set), made first if absent."""
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
        else:
            self.synthetic_set(*self.samplings[name], seed)
        return out

    def synthetic_set(self, alpha: float, min_p: float, seed: int) -> None:
        cfg = self.cfg
        distill.distill(distill.DistillConfig(
            teacher=self.teacher_checkpoint(), data_dir=str(self.part(PART_B)),
            out_dir=str(self.set_dir(set_name(alpha, min_p), seed)), alpha=alpha, min_p=min_p, n_tokens=cfg.set_tokens,
            prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, seed=seed, device=cfg.device, preview=5))

    def set_statistics(self, set_dir: Path) -> None:
        """What a set holds (tail.set_statistics) and what the teacher thought of it: results/sets/<set>.json."""
        tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
        stats = tail.set_statistics(tokens, self.train_counts, self.buckets)
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
        model = load_model(self.base_checkpoint(), device=self.device)
        nll = evaluate_perplexity(model, part_b[: n * L], seq_len=L, stride=L, device=self.device,
                                  autocast_dtype=self.amp_dtype, progress=False, per_token=True).token_nll
        nll = np.concatenate([nll, [np.nan]]).reshape(n, L)[:, : L - 1]  # drop each window's look at the next chunk
        with atomic_open(path) as f:
            np.save(f, nll.mean(axis=1))
        return np.load(path)

    def challenge_set(self, which: str, seed: int) -> None:
        """The `which` (hardest / middle / easiest) chunks of part B by the base's score, set_tokens in all, picked
        from a random challenge_share of the chunks that the seed draws (data.subset.select_by_score)."""
        cfg, out = self.cfg, self.set_dir(which, seed)
        L = cfg.prompt_tokens + cfg.gen_tokens
        scores = self.chunk_scores()
        pool_size = max(1, round(len(scores) * cfg.challenge_share))
        pool = np.sort(np.random.default_rng(seed).permutation(len(scores))[:pool_size])
        k = math.ceil(cfg.set_tokens / (L + 1))  # each chunk costs L + 1 tokens with its separator
        if k > len(pool):
            raise SubsetError(f"--set_tokens {cfg.set_tokens:,} needs {k} chunks of {L} tokens, but a share "
                              f"{cfg.challenge_share} of part B holds {len(pool)}: lower --set_tokens or raise "
                              "--challenge_share")
        chosen = pool[select_by_score(scores[pool], k, which)]
        part_b = self.train_tokens[self.n_a :]
        chunks = [part_b[c * L : (c + 1) * L] for c in chosen]
        chunks[-1] = chunks[-1][: cfg.set_tokens - (k - 1) * (L + 1) - 1]  # exactly set_tokens, as data.subset does
        write_sequences(out, chunks, {
            "kind": f"challenge-{which}", "seed": seed, "chunk_tokens": L, "pool_chunks": len(pool),
            "overlapping_windows": 3 * k > len(pool), "chunk_indices": chosen.tolist(),
            "base_score_mean": float(scores[chosen].mean()), "base_score_pool_mean": float(scores[pool].mean())},
            shard_tokens=100_000_000, argv=[], prog=["python", "study_retrain.py"])

    # ---- the arms
    def continue_base(self, name: str, data: str, seed: int) -> None:
        """The base continued for arm_steps on a set (or part), evaluated on the held-out slice."""
        cfg = self.cfg
        best = self.trained(name, init=self.base_checkpoint(), max_steps=cfg.arm_steps, lr=cfg.arm_lr,
                            data_dir=str(self.set_data(data, seed)), seed=seed)
        self.evaluate(name, lambda: load_model(best))

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
                      lambda: self.evaluate("teacher", lambda: load_model(self.teacher_checkpoint()))),
                Piece("the cut student, untrained", self.results / "student-cut.json", held,
                      lambda: self.evaluate("student-cut", self.cut_student))]
        for seed in cfg.seeds:  # seed by seed: a cut study has whole seeds to report
            plan += self.seed_pieces(seed)
        return plan

    def seed_pieces(self, seed: int) -> list[Piece]:
        cfg, held = self.cfg, self.heldout_range[1] - self.heldout_range[0]
        rows = math.ceil(cfg.set_tokens / (cfg.prompt_tokens + cfg.gen_tokens + 1))  # sequences, in whole batches:
        batch = distill.DistillConfig.batch_size
        units = {name: COST["generate"] * math.ceil(rows / batch) * batch * cfg.gen_tokens for name in self.samplings}
        plan = [Piece(f"set {name}-s{seed}", self.results / "sets" / f"{name}-s{seed}.json", units.get(name, 0.0),
                      lambda name=name: self.set_statistics(self.set_data(name, seed)))
                for name in [*self.samplings, REAL, *CHALLENGE]]
        plan += [Piece(f"arm {arm}-s{seed}", self.results / f"{arm}-s{seed}.json",
                       self.train_units(cfg.arm_steps) + held,
                       lambda arm=arm: self.continue_base(f"{arm}-s{seed}", arm, seed))
                 for arm in arm_names(cfg)]
        plan += [Piece(f"student {student}-s{seed}", self.results / f"{student}-s{seed}.json",
                       self.train_units(cfg.arm_steps, "kd") + held,
                       lambda s=student, d=data, w=weight: self.kd_student(f"{s}-s{seed}", d, w, seed))
                 for student, data, weight in kd_names(cfg)]
        return plan

    def run(self) -> None:
        write_json(self.results / "plan.json", plan_record(self.cfg, self.heldout_range))
        plan = self.pieces()
        progress = Progress(plan, self.results / "timings.json")
        for piece in plan:
            if not piece.output.exists():
                progress.run(piece)
        progress.say("done")


def same_settings(results: Path, cfg: RetrainConfig) -> None:
    """A resumed study must be the same study: refuse when results_dir holds one run with other settings (a
    setting it does not name, added since, had its default value then)."""
    path, now, default = results / "config.json", config_to_dict(cfg), config_to_dict(RetrainConfig())
    before = {**default, **json.loads(path.read_text())} if path.exists() else now
    diffs = [f"{k}={before.get(k)!r} there, {v!r} now" for k, v in now.items() if k != "device" and before.get(k) != v]
    if diffs:
        sys.exit(f"error: {path} holds a study with other settings ({'; '.join(diffs)}): resume it with its own "
                 "settings, or give another --results_dir and --work_dir (or delete those folders)")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(RetrainConfig, argv)
    print(config_to_dict(cfg))
    results = Path(cfg.results_dir)
    same_settings(results, cfg)
    write_json(results / "config.json", config_to_dict(cfg))
    try:
        RetrainStudy(cfg).run()
    except (train.TrainingStopped, distill.DistillError, SubsetError, CheckpointError, FileNotFoundError,
            ValueError) as e:
        sys.exit(f"error: {e}")
    study_retrain_report.report(results)  # the tables, from what the pieces wrote


if __name__ == "__main__":
    main()
