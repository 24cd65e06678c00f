"""Dataset distillation: turn a fine-tuned teacher into a synthetic training set of its own text
(`distill(cfg)`; distill.py is its command line, and the studies call it too).

How a set is made:
1. Prompts: `prompt_tokens`-token windows of the REAL train split (--data_dir) at random offsets,
   drawn from one generator seeded with --seed (so two strategies run with one seed share prompts).
2. Continuations: the teacher continues each prompt by up to `gen_tokens` tokens, a batch at a time,
   with the KV-cached sampler (gpt2/sampler.py). Inside the plausible set (tokens with
   p >= min_p * p_max, min_p 0.1) tokens are drawn with weight p^alpha. The default alpha = -1 fills
   the set with tokens the teacher finds plausible but unlikely; alpha = 1 is ordinary sampling from
   the same set, 0 < alpha < 1 hotter sampling (temperature 1/alpha), alpha = 0 uniform over the set.
3. Filter: a continuation that repeats itself (more than --max_repeat_4gram of its 4-grams seen
   earlier in it), is dominated by one token (more than --max_token_share of it), or ended at
   <|endoftext|> before --min_gen_tokens is dropped and counted by reason. Across sequences (off by
   default): with --max_shared_ngrams below 1, a continuation of which more than that share of its
   --dedup_n-grams (8) already occur in the sequences kept before it (their prompts and continuations)
   is dropped as "near_duplicate"; the kept n-grams are remembered exactly, as a set of bytes (~85 MB
   per million tokens kept). Generation goes on until the set is full, whatever the filter dropped.
4. Output (data/sequences.py): every kept sequence, prompt + continuation, preceded by <|endoftext|>
   (50256) as a document separator, as train_NNNNNN.bin shards; the set holds exactly the requested
   number of tokens (separators included; the last sequence is cut to fit). The labels are the token
   ids themselves (next-token targets). manifest.json records the teacher, strategy, seed, counts
   (separators / prompt / generated tokens), mean surprisal of the generated tokens under the teacher,
   distinct-1/2/3, repetition, what the filter dropped, timings and the command; samples.txt shows the
   first sequences decoded, the prompt marked.

The output is deterministic for a given teacher, data, seed, batch size and device.
There is no val split in the output: train with `train.py --val_data_dir` on the real data.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import read_manifest
from gpt2.metrics.diversity import ngram_keys, repeated_fraction, shared_fraction, text_stats, top_token_share
from gpt2.atomic import atomic_open
from gpt2.device import compile_wanted, describe, resolve_device_and_dtype
from gpt2 import tokenizer
from gpt2.checkpoint import CheckpointError, load_model
from gpt2.cli import config_to_dict, require_positive
from gpt2.sampler import SamplingConfig, generate
from gpt2.weights import DownloadError, WeightsError

DEFAULT_FRACTION = 0.25  # of the train split's tokens, when neither --n_tokens nor --fraction is given


@dataclass
class DistillConfig(SamplingConfig):
    """Distil a teacher into a synthetic training set: its continuations of prompts from the real train split."""

    alpha: float = -1.0  # weight p^alpha inside the plausible set: -1 favours the less probable plausible tokens
                         # (weight 1/p); 1 is ordinary sampling, (0, 1) hotter, 0 uniform (gpt2/sampler.py)
    min_p: float | None = 0.1  # the plausible set: tokens with p >= min_p * p_max
    teacher: str = "runs/finetune"  # the model to distil: a train.py run or checkpoint, a published name, an HF folder
    data_dir: str = "shards/wikitext2"  # real data: prompts come from its train split
    out_dir: str = "shards/distilled-inverted"  # folder for train_NNNNNN.bin, manifest.json and samples.txt
    n_tokens: int | None = None  # size of the set in tokens (separators included)
    fraction: float | None = None  # or: this fraction of the train split's tokens; neither given: 0.25
    prompt_tokens: int = 32  # tokens of real text that start each sequence
    gen_tokens: int = 224  # tokens the teacher adds to each prompt (fewer if it ends with <|endoftext|>)
    batch_size: int = 64  # sequences generated together
    seed: int = 0  # seeds the prompt offsets and the sampling: the same seed gives the same set
    stop_at_eot: bool = True  # end a continuation where the teacher emits <|endoftext|> (not kept)
    max_repeat_4gram: float = 0.3  # filter: drop a continuation with more than this fraction of repeated 4-grams
    max_token_share: float = 0.3  # filter: drop a continuation whose most frequent token is more than this share
    min_gen_tokens: int = 16  # filter: drop a continuation that ended at <|endoftext|> before this many tokens
    max_shared_ngrams: float = 1.0  # filter: drop a continuation with more than this share of its dedup_n-grams
                                    # already in the sequences kept before it ("near_duplicate"); 1: off
    dedup_n: int = 8  # the n of max_shared_ngrams' n-grams
    patience: int = 10  # stop with an error after this many batches in a row from which the filter kept nothing
    preview: int = 20  # sequences decoded into samples.txt
    shard_tokens: int = 100_000_000  # tokens per shard file
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # the teacher's weights for generation; auto: bf16
                                                              # (else fp16) on CUDA; on CPU bf16 with bf16 units, else fp32
    compile: bool | None = None  # torch.compile the decode step (CUDA graphs on CUDA); None: on for CUDA

    def __post_init__(self) -> None:
        super().__post_init__()  # the sampling fields
        if self.n_tokens is not None and self.fraction is not None:
            raise ValueError("give --n_tokens or --fraction, not both")
        if self.n_tokens is not None and self.n_tokens < 2:
            raise ValueError(f"--n_tokens must be at least 2 (a separator and a token), got {self.n_tokens}")
        require_positive(self, "fraction", "prompt_tokens", "gen_tokens", "batch_size", "patience", "shard_tokens",
                         "dedup_n")
        for name in ("max_repeat_4gram", "max_token_share", "max_shared_ngrams"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"--{name} must lie in (0, 1] (1 turns that filter off), got {getattr(self, name)}")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingConfig)})


class DistillError(RuntimeError):
    """A distillation that cannot run as configured; the message says what to change."""


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch `batch`: an independent stream per (seed, batch)."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def drop_reason(generated: np.ndarray, ended_at_eot: bool, cfg: DistillConfig) -> str | None:
    """Why the quality filter drops a continuation, or None to keep it."""
    if ended_at_eot and len(generated) < cfg.min_gen_tokens:
        return "too_short"
    if repeated_fraction(generated) > cfg.max_repeat_4gram:
        return "repeated_4grams"
    if top_token_share(generated) > cfg.max_token_share:
        return "single_token"
    return None


def describe_sampling(s: SamplingConfig) -> dict:
    """The strategy's settings, in words a reader of the manifest can check."""
    if s.strategy == "greedy":
        return {"strategy": "greedy"}
    return {"strategy": "sample", "alpha": s.alpha, "weights": f"p^{s.alpha} inside the plausible set",
            **{k: getattr(s, k) for k in ("top_k", "top_p", "min_p") if getattr(s, k) is not None}}


def preview_text(rows: list[dict], limit: int) -> str:
    parts = []
    for i, r in enumerate(rows[:limit]):
        parts.append(f"=== sequence {i}: prompt at train offset {r['offset']}, {len(r['generated'])} generated tokens, "
                     f"mean surprisal {r['surprisal']:.2f} nats{' (dropped: ' + r['reason'] + ')' if r.get('reason') else ''} ===\n"
                     f"[PROMPT] {tokenizer.decode(r['prompt'].tolist())} [/PROMPT]{tokenizer.decode(r['generated'].tolist())}\n")
    return "\n".join(parts)


class SetBuilder:
    """The set as it grows: kept sequences up to the token budget, what the filter dropped, and counts."""

    def __init__(self, cfg: DistillConfig, target: int):
        self.cfg, self.target = cfg, target
        self.kept: list[dict] = []  # {"offset", "prompt", "generated", "logprobs"}: one per sequence written
        self.dropped = {"too_short": 0, "repeated_4grams": 0, "single_token": 0, "near_duplicate": 0}
        self.dedup = cfg.max_shared_ngrams < 1  # off at 1: nothing remembered, nothing compared
        self.seen: set[bytes] = set()  # the dedup_n-grams of every kept sequence (prompt + continuation)
        self.dropped_rows: list[dict] = []  # the first few, for samples.txt
        self.total = self.n_generated = self.n_eot_stops = self.barren = 0
        self.cut = False

    def add(self, offsets: np.ndarray, prompts: np.ndarray, out) -> int:
        """Filter one generated batch into the set; returns the tokens added."""
        new, logprobs = out.new_tokens.cpu().numpy(), out.logprobs.cpu().numpy()  # (rows, n) each
        lengths, finished = out.lengths.cpu().numpy(), out.finished.cpu().numpy()
        self.n_generated += int(lengths.sum())
        before, kept_before = self.total, len(self.kept)
        for r in range(len(offsets)):
            n = int(lengths[r]) - int(finished[r])  # the <|endoftext|> that ended a row is not kept
            self.n_eot_stops += int(finished[r])
            row = {"offset": int(offsets[r]), "prompt": prompts[r], "generated": new[r, :n], "logprobs": logprobs[r, :n]}
            reason = drop_reason(row["generated"], bool(finished[r]), self.cfg)
            if reason is None and self.total < self.target and self.near_duplicate(row["generated"]):
                reason = "near_duplicate"
            if reason:
                self.dropped[reason] += 1
                if len(self.dropped_rows) < 3:
                    self.dropped_rows.append({**row, "reason": reason})
            elif self.total < self.target:
                self.keep(row)
        self.barren = 0 if len(self.kept) > kept_before else self.barren + 1
        return self.total - before

    def near_duplicate(self, generated: np.ndarray) -> bool:
        """More than max_shared_ngrams of the continuation's n-grams occur in the sequences kept so far."""
        return self.dedup and shared_fraction(generated, self.seen, self.cfg.dedup_n) > self.cfg.max_shared_ngrams

    def keep(self, row: dict) -> None:
        room = self.target - self.total - 1  # tokens left after this sequence's separator
        if len(row["prompt"]) + len(row["generated"]) > room:  # the last sequence is cut to fit the budget
            self.cut = True
            row["prompt"], row["generated"] = row["prompt"][:room], row["generated"][: max(0, room - len(row["prompt"]))]
            row["logprobs"] = row["logprobs"][: len(row["generated"])]
        self.kept.append(row)
        self.total += 1 + len(row["prompt"]) + len(row["generated"])
        if self.dedup:
            self.seen.update(ngram_keys(np.concatenate([row["prompt"], row["generated"]]), self.cfg.dedup_n))


def load_teacher(source: str, device: torch.device, dtype: torch.dtype, context: int, flags: str):
    """The teacher `source` (--teacher), which must see `context` tokens at once (`flags`, e.g. "--chunk_tokens",
    names the settings that ask for them), stored in the generation precision: no per-step casts of the weights."""
    try:
        teacher = load_model(source, device=device, dtype=dtype)
    except (CheckpointError, WeightsError, DownloadError) as e:
        raise DistillError(f"cannot load --teacher {source}: {e}") from e
    if context > teacher.config.n_positions:
        raise DistillError(f"{context} tokens at once ({flags}) exceed the teacher's context of "
                           f"{teacher.config.n_positions} tokens: lower {flags}")
    return teacher


def distill(cfg: DistillConfig, argv: list[str] | None = None) -> dict:
    """Make the set as configured; returns the manifest (also written to out_dir)."""
    device, dtype = resolve_device_and_dtype(cfg.device, cfg.dtype)
    if Path(cfg.out_dir).resolve() == Path(cfg.data_dir).resolve():
        raise DistillError(f"--out_dir {cfg.out_dir} is the real data folder (--data_dir): choose another folder")
    train = SplitTokens(cfg.data_dir, "train")
    P, G = cfg.prompt_tokens, cfg.gen_tokens
    if len(train) < P:
        raise DistillError(f"{train!r} is shorter than one prompt of --prompt_tokens {P}")
    target = cfg.n_tokens or max(2, round((cfg.fraction or DEFAULT_FRACTION) * len(train)))
    teacher = load_teacher(cfg.teacher, device, dtype, P + G, "--prompt_tokens + --gen_tokens")
    sampling, compile = cfg.sampling(), compile_wanted(cfg.compile, device)
    print(f"teacher {cfg.teacher}: {teacher.num_params():,} parameters; {describe_sampling(sampling)}; "
          f"{target:,} tokens wanted; {describe(device, dtype)}{', compiled decoding' if compile else ''}")
    prompts_rng, built, batch = np.random.default_rng(cfg.seed), SetBuilder(cfg, target), 0
    t0 = time.perf_counter()
    with tqdm(total=target, unit="tok", unit_scale=True, desc="distill", dynamic_ncols=True) as bar:
        while built.total < target:
            # Full batches always: one shape for the compiled decode step; extra rows are generated, not kept.
            offsets = prompts_rng.integers(0, len(train) - P + 1, size=cfg.batch_size)
            prompts = np.stack([train[int(o) : int(o) + P] for o in offsets]).astype(np.int64)  # (rows, P)
            out = generate(teacher, torch.from_numpy(prompts).to(device), G, sampling=sampling, compile=compile,
                           seed=batch_seed(cfg.seed, batch), stop_token=tokenizer.EOT_ID if cfg.stop_at_eot else None)
            bar.update(built.add(offsets, prompts, out))
            batch += 1
            if built.barren >= cfg.patience:
                raise DistillError(
                    f"the quality filter dropped every sequence of {built.barren} batches in a row ({built.dropped}): "
                    f"the teacher {cfg.teacher} degenerates under {describe_sampling(sampling)}. Look at the dropped "
                    "text, try another --alpha, or relax --max_repeat_4gram / --max_token_share / --min_gen_tokens / "
                    "--max_shared_ngrams")
            bar.set_postfix(kept=len(built.kept), dropped=sum(built.dropped.values()),
                            gen_tok_s=f"{built.n_generated / (time.perf_counter() - t0):,.0f}")
    timing = {"seconds": time.perf_counter() - t0, "device": describe(device, dtype), "batches": batch,
              "compiled_decoding": compile}
    return write_set(cfg, built, manifest_record(cfg, teacher, sampling, train, built, timing), argv)


def manifest_record(cfg: DistillConfig, teacher, strategy: SamplingConfig, train, built: SetBuilder, timing: dict) -> dict:
    kept = built.kept
    generated = [r["generated"] for r in kept]
    n_gen_kept = sum(len(g) for g in generated)
    source = read_manifest(cfg.data_dir) if (Path(cfg.data_dir) / "manifest.json").is_file() else {}
    return {
        "kind": "distilled",
        "teacher": {"source": cfg.teacher, "n_params": teacher.num_params(), "config": dataclasses.asdict(teacher.config)},
        "sampling": describe_sampling(strategy),
        "seed": cfg.seed,
        "prompts": {"data_dir": cfg.data_dir, "split": "train", "split_tokens": len(train), "prompt_tokens": cfg.prompt_tokens,
                    "offsets": "uniform over the split, numpy default_rng(seed), with replacement"},
        "val_data_dir": cfg.data_dir,  # where the real val / test splits of this experiment live
        "offline": source.get("offline"),
        "counts": {"requested_tokens": built.target, "tokens": built.total, "sequences": len(kept),
                   "separator_tokens": len(kept), "prompt_tokens": sum(len(r["prompt"]) for r in kept),
                   "generated_tokens": n_gen_kept, "last_sequence_cut": built.cut,
                   "sequences_generated": len(kept) + sum(built.dropped.values()),
                   "tokens_generated": built.n_generated, "ended_at_eot": built.n_eot_stops},
        "quality": {"mean_surprisal_nats": -float(np.concatenate([r["logprobs"] for r in kept]).mean()) if n_gen_kept else None,
                    **text_stats(generated),
                    "measured_on": "the generated tokens of the kept sequences; surprisal = -log p under the teacher "
                                   "(temperature 1, unfiltered): the teacher's mean NLL of its own set; distinct-n and "
                                   "repetition as in gpt2/metrics/diversity.py"},
        "filter": {"max_repeat_4gram": cfg.max_repeat_4gram, "max_token_share": cfg.max_token_share,
                   "min_gen_tokens": cfg.min_gen_tokens, "max_shared_ngrams": cfg.max_shared_ngrams,
                   "dedup_n": cfg.dedup_n, "dropped": built.dropped,
                   "dropped_total": sum(built.dropped.values())},
        "timing": {**timing, "generated_tokens_per_s": built.n_generated / timing["seconds"]},
        "config": config_to_dict(cfg),
    }


def write_set(cfg: DistillConfig, built: SetBuilder, record: dict, argv: list[str] | None) -> dict:
    """Shards and manifest.json (data/sequences.py), then samples.txt."""
    for row in built.kept + built.dropped_rows:
        row["surprisal"] = -float(row["logprobs"].mean()) if len(row["logprobs"]) else float("nan")
    manifest = write_sequences(cfg.out_dir, [np.concatenate([r["prompt"], r["generated"]]) for r in built.kept], record,
                               shard_tokens=cfg.shard_tokens, argv=argv, prog=["python", "distill.py"])
    text = preview_text(built.kept, cfg.preview)
    if built.dropped_rows:
        text += "\n\n##### dropped by the quality filter (first 3) #####\n\n" + preview_text(built.dropped_rows, 3)
    with atomic_open(Path(cfg.out_dir) / "samples.txt") as f:
        f.write(text.encode())
    return manifest

