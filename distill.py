"""Dataset distillation: turn a fine-tuned teacher into a synthetic training set of its own text.

    python distill.py --teacher runs/finetune --out_dir shards/distilled-hard                    # hard (default)
    python distill.py --teacher runs/finetune --strategy sample --min_p 0.1 --out_dir shards/distilled-sample

How a set is made:
1. Prompts: `prompt_tokens`-token windows of the REAL train split (--data_dir) at random offsets,
   drawn from one generator seeded with --seed (so two strategies run with one seed share prompts).
2. Continuations: the teacher continues each prompt by up to `gen_tokens` tokens, a batch at a time,
   with the KV-cached sampler (gpt2/sampler.py) and the chosen strategy. The default is "hard":
   inside the plausible set (tokens with p >= min_p * p_max, min_p 0.1) tokens are drawn with weight
   p^-beta, so the set is full of tokens the teacher finds plausible but unlikely. The control is
   "sample" with the same --min_p: the same plausible set drawn in proportion to p.
3. Filter: a continuation that repeats itself (more than --max_repeat_4gram of its 4-grams seen
   earlier in it), is dominated by one token (more than --max_token_share of it), or ended at
   <|endoftext|> before --min_gen_tokens is dropped and counted by reason.
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
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from data.loader import SplitTokens
from data.sequences import read_manifest, repeated_fraction, text_stats, top_token_share, write_sequences
from data.shards import ShardError
from gpt2.atomic import atomic_open
from gpt2.device import resolve_device_and_dtype
from gpt2 import tokenizer
from gpt2.checkpoint import CheckpointError, load_model
from gpt2.cli import config_to_dict, parse_config
from gpt2.sampler import HARD_DEFAULT_MIN_P, USES, SamplingConfig, generate
from gpt2.weights import DownloadError, WeightsError

DEFAULT_FRACTION = 0.25  # of the train split's tokens, when neither --n_tokens nor --fraction is given


@dataclass
class DistillConfig(SamplingConfig):
    """Distil a teacher into a synthetic training set: its continuations of prompts from the real train split."""

    strategy: Literal["greedy", "sample", "hard", "band", "mix"] = "hard"  # how the teacher picks each token
                                                                           # (hard: p^-beta in the plausible set)
    teacher: str = "runs/finetune"  # the model to distil: a train.py run or checkpoint, a published name, an HF folder
    data_dir: str = "shards/wikitext2"  # real data: prompts come from its train split
    out_dir: str = "shards/distilled-hard"  # folder for train_NNNNNN.bin, manifest.json and samples.txt
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
    patience: int = 10  # stop with an error after this many batches in a row from which the filter kept nothing
    preview: int = 20  # sequences decoded into samples.txt
    shard_tokens: int = 100_000_000  # tokens per shard file
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # autocast precision; auto: bf16 (else fp16) on CUDA,
                                                              # fp32 on CPU

    def __post_init__(self) -> None:
        super().__post_init__()  # the sampling fields
        if self.n_tokens is not None and self.fraction is not None:
            raise ValueError("give --n_tokens or --fraction, not both")
        if self.n_tokens is not None and self.n_tokens < 2:
            raise ValueError(f"--n_tokens must be at least 2 (a separator and a token), got {self.n_tokens}")
        if self.fraction is not None and not self.fraction > 0:
            raise ValueError(f"--fraction must be positive, got {self.fraction}")
        for name in ("prompt_tokens", "gen_tokens", "batch_size", "patience", "shard_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("max_repeat_4gram", "max_token_share"):
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
    """The strategy's settings as the sampler applies them (the implicit hard plausible set made explicit)."""
    out = {"strategy": s.strategy, **{k: v for k, v in dataclasses.asdict(s).items() if k in USES[s.strategy] and v is not None}}
    if s.strategy in ("hard", "mix") and s.min_p is None and s.top_p is None:
        out["min_p"] = HARD_DEFAULT_MIN_P  # what hard_logits uses when neither is given
    return out


def preview_text(rows: list[dict], limit: int) -> str:
    parts = []
    for i, r in enumerate(rows[:limit]):
        parts.append(f"=== sequence {i}: prompt at train offset {r['offset']}, {len(r['generated'])} generated tokens, "
                     f"mean surprisal {r['surprisal']:.2f} nats{' (dropped: ' + r['reason'] + ')' if r.get('reason') else ''} ===\n"
                     f"[PROMPT] {tokenizer.decode(r['prompt'].tolist())} [/PROMPT]{tokenizer.decode(r['generated'].tolist())}\n")
    return "\n".join(parts)


def distill(cfg: DistillConfig, argv: list[str] | None = None) -> dict:
    """Make the set as configured; returns the manifest (also written to out_dir)."""
    device, amp_dtype = resolve_device_and_dtype(cfg.device, cfg.dtype)
    amp_dtype = None if amp_dtype == torch.float32 else amp_dtype  # None: plain fp32, no autocast
    if Path(cfg.out_dir).resolve() == Path(cfg.data_dir).resolve():
        raise DistillError(f"--out_dir {cfg.out_dir} is the real data folder (--data_dir): choose another folder")
    train = SplitTokens(cfg.data_dir, "train")
    P, G = cfg.prompt_tokens, cfg.gen_tokens
    if len(train) < P:
        raise DistillError(f"{train!r} is shorter than one prompt of --prompt_tokens {P}")
    target = cfg.n_tokens or max(2, round((cfg.fraction or DEFAULT_FRACTION) * len(train)))
    try:
        teacher = load_model(cfg.teacher, device=device)
    except (CheckpointError, WeightsError, DownloadError) as e:
        raise DistillError(f"cannot load --teacher {cfg.teacher}: {e}") from e
    if P + G > teacher.config.n_positions:
        raise DistillError(f"--prompt_tokens {P} + --gen_tokens {G} exceed the teacher's context of "
                           f"{teacher.config.n_positions} tokens; lower them")
    strategy = cfg.sampling()
    stop = tokenizer.EOT_ID if cfg.stop_at_eot else None
    print(f"teacher {cfg.teacher}: {teacher.num_params():,} parameters; {describe_sampling(strategy)}; "
          f"{target:,} tokens wanted; {device}, {'autocast ' + str(amp_dtype).removeprefix('torch.') if amp_dtype else 'fp32'}")

    prompts_rng = np.random.default_rng(cfg.seed)
    kept: list[dict] = []  # {"offset", "prompt", "generated", "logprobs"}: one per sequence written
    dropped: dict[str, int] = {"too_short": 0, "repeated_4grams": 0, "single_token": 0}
    dropped_rows: list[dict] = []  # the first few, for samples.txt
    total, n_generated, n_eot_stops, cut, batch, barren = 0, 0, 0, False, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=target, unit="tok", unit_scale=True, desc=f"distill {cfg.strategy}", dynamic_ncols=True)
    with bar:
        while total < target:
            rows = min(cfg.batch_size, math.ceil((target - total) / (1 + P + G)))  # no bigger than needed
            offsets = prompts_rng.integers(0, len(train) - P + 1, size=rows)
            prompts = np.stack([train[int(o) : int(o) + P] for o in offsets]).astype(np.int64)  # (rows, P)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = generate(teacher, torch.from_numpy(prompts).to(device), G, strategy=strategy,
                               seed=batch_seed(cfg.seed, batch), stop_token=stop)
            new, logprobs = out.new_tokens.cpu().numpy(), out.logprobs.cpu().numpy()  # (rows, n) each
            lengths, finished = out.lengths.cpu().numpy(), out.finished.cpu().numpy()
            n_generated += int(lengths.sum())
            kept_before = len(kept)
            for r in range(rows):
                n = int(lengths[r]) - int(finished[r])  # the <|endoftext|> that ended a row is not kept
                n_eot_stops += int(finished[r])
                row = {"offset": int(offsets[r]), "prompt": prompts[r], "generated": new[r, :n],
                       "logprobs": logprobs[r, :n]}
                reason = drop_reason(row["generated"], bool(finished[r]), cfg)
                if reason:
                    dropped[reason] += 1
                    if len(dropped_rows) < 3:
                        dropped_rows.append({**row, "reason": reason})
                    continue
                if total >= target:
                    break
                room = target - total - 1  # tokens left after this sequence's separator
                if P + n > room:
                    cut = True
                    row["prompt"], row["generated"] = row["prompt"][:room], row["generated"][: max(0, room - P)]
                    row["logprobs"] = row["logprobs"][: len(row["generated"])]
                kept.append(row)
                total += 1 + len(row["prompt"]) + len(row["generated"])
                bar.update(1 + len(row["prompt"]) + len(row["generated"]))
            batch += 1
            barren = 0 if len(kept) > kept_before else barren + 1
            if barren >= cfg.patience:
                raise DistillError(
                    f"the quality filter dropped every sequence of {barren} batches in a row ({dropped}): the teacher "
                    f"{cfg.teacher} degenerates under {describe_sampling(strategy)}. Look at the dropped text, try "
                    "another strategy, or relax --max_repeat_4gram / --max_token_share / --min_gen_tokens")
            bar.set_postfix(kept=len(kept), dropped=sum(dropped.values()),
                            gen_tok_s=f"{n_generated / (time.perf_counter() - t0):,.0f}")
    seconds = time.perf_counter() - t0

    for row in kept + dropped_rows:
        row["surprisal"] = -float(row["logprobs"].mean()) if len(row["logprobs"]) else float("nan")
    generated = [r["generated"] for r in kept]
    n_gen_kept = sum(len(g) for g in generated)
    source = read_manifest(cfg.data_dir) if (Path(cfg.data_dir) / "manifest.json").is_file() else {}
    record = {
        "kind": "distilled",
        "teacher": {"source": cfg.teacher, "n_params": teacher.num_params(), "config": dataclasses.asdict(teacher.config)},
        "sampling": describe_sampling(strategy),
        "seed": cfg.seed,
        "prompts": {"data_dir": cfg.data_dir, "split": "train", "split_tokens": len(train), "prompt_tokens": P,
                    "offsets": "uniform over the split, numpy default_rng(seed), with replacement"},
        "val_data_dir": cfg.data_dir,  # where the real val / test splits of this experiment live
        "offline": source.get("offline"),
        "counts": {"requested_tokens": target, "tokens": total, "sequences": len(kept), "separator_tokens": len(kept),
                   "prompt_tokens": sum(len(r["prompt"]) for r in kept), "generated_tokens": n_gen_kept,
                   "last_sequence_cut": cut, "sequences_generated": len(kept) + sum(dropped.values()),
                   "tokens_generated": n_generated, "ended_at_eot": n_eot_stops},
        "quality": {"mean_surprisal_nats": -float(np.concatenate([r["logprobs"] for r in kept]).mean()) if n_gen_kept else None,
                    **text_stats(generated),
                    "measured_on": "the generated tokens of the kept sequences; surprisal = -log p under the teacher "
                                   "(temperature 1, unfiltered); distinct-n and repetition as in data/sequences.py"},
        "filter": {"max_repeat_4gram": cfg.max_repeat_4gram, "max_token_share": cfg.max_token_share,
                   "min_gen_tokens": cfg.min_gen_tokens, "dropped": dropped, "dropped_total": sum(dropped.values())},
        "timing": {"seconds": seconds, "generated_tokens_per_s": n_generated / seconds, "device": str(device),
                   "batches": batch},
        "config": config_to_dict(cfg),
    }
    manifest = write_sequences(cfg.out_dir, [np.concatenate([r["prompt"], r["generated"]]) for r in kept], record,
                               shard_tokens=cfg.shard_tokens, argv=argv, prog=["python", "distill.py"])
    text = preview_text(kept, cfg.preview)
    if dropped_rows:
        text += "\n\n##### dropped by the quality filter (first 3) #####\n\n" + preview_text(dropped_rows, 3)
    with atomic_open(Path(cfg.out_dir) / "samples.txt") as f:
        f.write(text.encode())
    return manifest


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(DistillConfig, argv)
    print(config_to_dict(cfg))
    try:
        manifest = distill(cfg, argv)
    except (DistillError, FileNotFoundError, ShardError, ValueError) as e:
        sys.exit(f"error: {e}")
    c, q, f = manifest["counts"], manifest["quality"], manifest["filter"]
    print(f"{cfg.out_dir}: {c['tokens']:,} tokens in {c['sequences']:,} sequences ({c['prompt_tokens']:,} prompt, "
          f"{c['generated_tokens']:,} generated, {c['separator_tokens']:,} separators); dropped {f['dropped']}; "
          f"mean surprisal {q['mean_surprisal_nats']:.3f} nats, distinct-1/2/3 {q['distinct_1']:.3f}/"
          f"{q['distinct_2']:.3f}/{q['distinct_3']:.3f}, repeated 4-grams {q['repeated_4gram_fraction']:.3f}; "
          f"{manifest['timing']['generated_tokens_per_s']:,.0f} generated tok/s")
    return manifest


if __name__ == "__main__":
    main()
