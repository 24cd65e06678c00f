"""Token-edit sets: real text with a share of its positions resampled by a teacher (the ToEdit idea of Zhu
et al. 2025, "How to Synthesize Text Data without Model Collapse?": edit real text token by token instead of
generating whole sequences, so the set keeps the real data's long tail).

    python -m data.token_edit --teacher runs/finetune --data_dir shards/wikitext2 --n_tokens 500000 \\
        --out_dir shards/token-edit

How a set is made:
1. Chunks: `chunk_tokens` (256) consecutive tokens of the REAL train split (--data_dir), chosen as
   `python -m data.subset` chooses them (`data.subset.take_chunks`, seeded by --seed): enough for exactly
   --n_tokens tokens with one <|endoftext|> before each chunk, the last chunk cut to fit.
2. Positions: in each chunk of L tokens (the cut one: its own length), round(edit_share * (L - 1)) positions,
   rounded half up, drawn uniformly without replacement from 1 .. L-1. Position 0 has no context inside the
   chunk and is never edited. Each chunk has its own seeded streams (--seed, its index) for its positions
   and its draws' noise, whatever --batch_size.
3. Draws: the teacher runs ONCE over each batch of real chunks (B, L). At a chosen position i the real token
   is replaced by a draw from the teacher's distribution there (its logits at i - 1: the REAL prefix,
   never an earlier edit) restricted to the plausible set {p >= min_p * p_max}, with weight p^alpha
   (`gpt2.sampler.plausible_weights`, Gumbel-max with a seeded torch.Generator). The draw may be the real
   token itself. Everything else is the real text.
4. Output (data/sequences.py): the chunks, each preceded by <|endoftext|>, as train_NNNNNN.bin shards.
   manifest.json records the teacher, alpha, min_p, edit_share, seed, the chunk offsets, counts (tokens,
   sequences, positions chosen, positions whose token changed), the teacher's mean surprisal of the new
   tokens (and of the real tokens they replaced), timings and the command.

The output is deterministic for a given teacher, data, seed, batch size and device. There is no val split in the
output: train with `train.py --val_data_dir` on the real data.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from data.distill import DistillError, load_teacher
from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import ShardError, read_manifest
from data.subset import SubsetError, take_chunks
from gpt2.cli import config_to_dict, require_positive, run_config
from gpt2.device import describe, resolve_device_and_dtype
from gpt2.model import GPT
from gpt2.sampler import draw, plausible_weights


@dataclass
class TokenEditConfig:
    """Real text with a share of its positions resampled by a teacher, conditioned on the real prefix."""

    teacher: str = "runs/finetune"  # the model that edits: a train.py run or checkpoint, a published name, an HF folder
    data_dir: str = "shards/wikitext2"  # real data: the chunks come from its train split
    out_dir: str = "shards/token-edit"  # folder for train_NNNNNN.bin and manifest.json
    n_tokens: int | None = None  # size of the set in tokens (separators included); required
    chunk_tokens: int = 256  # tokens per chunk (at most the teacher's context)
    edit_share: float = 0.15  # share of each chunk's positions 1 .. L-1 resampled, in (0, 1)
    alpha: float = -1.0  # weight p^alpha inside the plausible set: -1 favours the less probable plausible tokens
                         # (weight 1/p), 1 ordinary sampling, 0 uniform (gpt2/sampler.py)
    min_p: float = 0.1  # the plausible set: tokens with p >= min_p * p_max, in [0, 1]; 1: the teacher's argmax
    seed: int = 0  # seeds the chunks, the positions and the draws: the same seed gives the same set
    batch_size: int = 32  # chunks per teacher forward pass; the head reads only the positions before edits:
                          # two (batch_size x edit_share x chunk_tokens, V) float32 tensors. Lower it if memory runs out
    shard_tokens: int = 100_000_000  # tokens per shard file
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # the teacher's weights; auto: bf16 (else fp16) on
                                                              # CUDA; on CPU bf16 with bf16 units, else fp32

    def __post_init__(self) -> None:
        if self.n_tokens is None or self.n_tokens < 2:
            raise ValueError(f"--n_tokens N is required, at least 2 (a separator and a token), got {self.n_tokens}")
        require_positive(self, "chunk_tokens", "batch_size", "shard_tokens")
        if not 0 < self.edit_share < 1:
            raise ValueError(f"--edit_share must lie in (0, 1) (a share of each chunk's positions), "
                             f"got {self.edit_share}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"--alpha must be a finite number, got {self.alpha}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"--min_p must lie in [0, 1] (1: the teacher's most probable token), got {self.min_p}")
        if self.alpha <= 0 and self.min_p == 0:
            raise ValueError(f"--alpha {self.alpha} with --min_p 0 favours the least probable tokens of the whole "
                             "vocabulary: restrict the draw with --min_p (e.g. 0.1)")


class TokenEditError(DistillError):
    """A token-edit set that cannot be made as configured; the message says what to change."""


def n_edits(length: int, share: float) -> int:
    """Positions edited in a chunk of `length` tokens: share * (length - 1), rounded half up."""
    return math.floor(share * max(length - 1, 0) + 0.5)


def chunk_streams(seed: int, chunk: int) -> tuple[np.random.Generator, int]:
    """Chunk number `chunk`'s own randomness: a generator for its positions, and the seed of its draws."""
    positions, draws = np.random.SeedSequence([seed, chunk]).spawn(2)
    return np.random.default_rng(positions), int(draws.generate_state(1)[0])


def edit_positions(length: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """n_edits(length, share) distinct positions of 1 .. length-1, ascending (int64)."""
    k = n_edits(length, share)
    return np.sort(rng.choice(np.arange(1, length), size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


@torch.inference_mode()
def edit_batch(teacher: GPT, chunks: np.ndarray, positions: list[np.ndarray], draw_seeds: list[int],
               cfg: TokenEditConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample `positions[b]` of each real chunk chunks[b] (B, L): one forward pass of the teacher over the
    real chunks; the head only at the positions before the chosen ones. Returns the new tokens at the chosen
    positions, in order (n,), and the teacher's log p of the new and of the real tokens there (n,) each."""
    device = teacher.lm_head.weight.device
    x = torch.from_numpy(chunks.astype(np.int64)).to(device)  # (B, L)
    rows = torch.from_numpy(np.repeat(np.arange(len(chunks)), [len(p) for p in positions])).to(device)  # (n,)
    cols = torch.from_numpy(np.concatenate(positions).astype(np.int64)).to(device)  # (n,)
    hidden = teacher(x, return_hidden=True)  # (B, L, C)
    logp = teacher.lm_head(hidden[rows, cols - 1]).float().log_softmax(-1)  # (n, V): the prediction of position i
    V = logp.size(-1)
    noise = torch.cat([torch.rand(len(p), V, device=device, generator=torch.Generator(device).manual_seed(s))
                       for p, s in zip(positions, draw_seeds)])  # (n, V) uniform in [0, 1), each chunk its own
    new = draw(plausible_weights(logp, cfg.alpha, min_p=cfg.min_p), noise)  # (n,)
    real = x[rows, cols]  # (n,)
    return (new.cpu().numpy(), logp.gather(-1, new[:, None])[:, 0].cpu().numpy(),
            logp.gather(-1, real[:, None])[:, 0].cpu().numpy())


def edit_chunks(teacher: GPT, train: SplitTokens, starts: list[int], lengths: list[int],
                cfg: TokenEditConfig) -> tuple[list[np.ndarray], dict]:
    """Every chunk edited, batch by batch; and the counts and surprisals of the edits."""
    L, edited = cfg.chunk_tokens, []
    chosen = changed = 0
    new_logp, real_logp = [], []
    for first in tqdm(range(0, len(starts), cfg.batch_size), desc="token-edit", unit="batch", dynamic_ncols=True):
        batch = range(first, min(first + cfg.batch_size, len(starts)))
        # Whole chunks for the teacher (the last cut one too): a causal model's predictions at the kept
        # positions do not depend on the tokens after them.
        real = np.stack([train[starts[j] : starts[j] + L] for j in batch])  # (B, L) uint16
        streams = [chunk_streams(cfg.seed, j) for j in batch]
        positions = [edit_positions(lengths[j], cfg.edit_share, rng) for j, (rng, _) in zip(batch, streams)]
        new, lp_new, lp_real = edit_batch(teacher, real, positions, [s for _, s in streams], cfg)
        out, at = real.copy(), 0
        for b, p in enumerate(positions):
            out[b, p] = new[at : at + len(p)]
            changed += int((out[b, p] != real[b, p]).sum())
            at += len(p)
            edited.append(out[b, : lengths[batch[b]]])
        chosen += at
        new_logp.append(lp_new)
        real_logp.append(lp_real)
    new_logp, real_logp = np.concatenate(new_logp), np.concatenate(real_logp)
    stats = {"positions_chosen": chosen, "positions_changed": changed,
             "mean_surprisal_nats": -float(new_logp.mean()) if chosen else None,
             "real_mean_surprisal_nats": -float(real_logp.mean()) if chosen else None}
    return edited, stats


def token_edit(cfg: TokenEditConfig, argv: list[str] | None = None) -> dict:
    """Make the set as configured; returns the manifest (also written to out_dir)."""
    if Path(cfg.out_dir).resolve() == Path(cfg.data_dir).resolve():
        raise TokenEditError(f"--out_dir {cfg.out_dir} is the real data folder (--data_dir): choose another folder")
    device, dtype = resolve_device_and_dtype(cfg.device, cfg.dtype)
    train = SplitTokens(cfg.data_dir, "train")
    try:
        starts, chunks = take_chunks(train, cfg.chunk_tokens, cfg.n_tokens, cfg.seed)
    except SubsetError as e:
        raise TokenEditError(f"--data_dir {cfg.data_dir}: {e}") from e
    teacher = load_teacher(cfg.teacher, device, dtype, cfg.chunk_tokens, "--chunk_tokens")
    print(f"teacher {cfg.teacher}: {teacher.num_params():,} parameters; editing {cfg.edit_share:.0%} of "
          f"{len(chunks):,} chunks of {cfg.chunk_tokens} tokens; {describe(device, dtype)}")
    t0 = time.perf_counter()
    edited, stats = edit_chunks(teacher, train, starts, [len(c) for c in chunks], cfg)
    timing = {"seconds": time.perf_counter() - t0, "device": describe(device, dtype)}
    return write_sequences(cfg.out_dir, edited, manifest_record(cfg, teacher, train, starts, edited, stats, timing),
                           shard_tokens=cfg.shard_tokens, argv=argv, prog=["python", "-m", "data.token_edit"])


def manifest_record(cfg: TokenEditConfig, teacher: GPT, train: SplitTokens, starts: list[int],
                    edited: list[np.ndarray], stats: dict, timing: dict) -> dict:
    source = read_manifest(cfg.data_dir) if (Path(cfg.data_dir) / "manifest.json").is_file() else {}
    editable = sum(max(len(c) - 1, 0) for c in edited)  # positions 1 .. L-1 of every chunk
    return {
        "kind": "token-edit",
        "teacher": {"source": cfg.teacher, "n_params": teacher.num_params(),
                    "config": dataclasses.asdict(teacher.config)},
        "edit": {"alpha": cfg.alpha, "min_p": cfg.min_p, "edit_share": cfg.edit_share,
                 "weights": f"p^{cfg.alpha} inside the plausible set p >= {cfg.min_p} * p_max",
                 "positions": "per chunk of L tokens, floor(edit_share * (L - 1) + 0.5) of positions 1 .. L-1, "
                              "uniform without replacement; position 0 never",
                 "context": "the real prefix: the teacher runs once over the real chunk"},
        "seed": cfg.seed,
        "source": {"data_dir": cfg.data_dir, "split": "train", "split_tokens": len(train),
                   "fraction_taken": cfg.n_tokens / len(train)},
        "val_data_dir": cfg.data_dir,  # where the real val / test splits of this experiment live
        "offline": source.get("offline"),
        "counts": {"requested_tokens": cfg.n_tokens, "tokens": sum(len(c) + 1 for c in edited),
                   "sequences": len(edited), "separator_tokens": len(edited), "chunk_tokens": cfg.chunk_tokens,
                   "text_tokens": sum(len(c) for c in edited), "editable_positions": editable,
                   "positions_chosen": stats["positions_chosen"], "positions_changed": stats["positions_changed"]},
        "quality": {"mean_surprisal_nats": stats["mean_surprisal_nats"],
                    "real_mean_surprisal_nats": stats["real_mean_surprisal_nats"],
                    "measured_on": "the chosen positions: -log p under the teacher (temperature 1, unfiltered, "
                                   "given the real prefix) of the new tokens, and of the real tokens they replaced"},
        "chunk_offsets": starts,
        "timing": timing,
        "config": config_to_dict(cfg),
    }


def main(argv: list[str] | None = None) -> dict:
    cfg, manifest = run_config(TokenEditConfig, argv, lambda cfg: token_edit(cfg, argv), errors=(DistillError, FileNotFoundError, ShardError))
    c, q = manifest["counts"], manifest["quality"]
    surprisal = "" if q["mean_surprisal_nats"] is None else (f"; mean surprisal {q['mean_surprisal_nats']:.3f} nats "
                                                             f"(the real tokens': {q['real_mean_surprisal_nats']:.3f})")
    print(f"{cfg.out_dir}: {c['tokens']:,} tokens in {c['sequences']:,} chunks of {c['chunk_tokens']}; "
          f"{c['positions_chosen']:,} positions resampled, {c['positions_changed']:,} of them changed{surprisal}")
    return manifest


if __name__ == "__main__":
    main()
