"""Real text at the budget of a distilled set: random chunks of the train split, stored like distill.py's output.

    python -m data.subset --data_dir shards/wikitext2 --like shards/distilled-inverted --out_dir shards/subset
    python -m data.subset --data_dir shards/wikitext2 --n_tokens 500000 --out_dir shards/subset

The train split is cut into consecutive chunks of `chunk_tokens` tokens on a grid whose start is a
random shift in [0, chunk_tokens); a random selection of those chunks, without replacement and in
random order, is written with each chunk preceded by <|endoftext|> (data/sequences.py), exactly
`n_tokens` tokens in all (the last chunk is cut to fit). With --like the token count and the chunk
length (prompt + generated tokens) are those of that distilled set, so a model trained on either sees
the same number of sequences of the same length: the "real data at the same budget" control.

select_by_score picks chunks by a score (e.g. a model's loss on each) instead of at random: the hardest,
the middle or the easiest k, for continuing a model on challenging real examples at the same budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import ShardError, read_manifest
from gpt2.cli import config_to_dict, run_config
from gpt2.metrics.diversity import text_stats


@dataclass
class SubsetConfig:
    """A random subset of the real train split, in whole chunks, at a given token budget."""

    data_dir: str = "shards/wikitext2"  # real data: the subset comes from its train split
    out_dir: str = "shards/subset"  # folder for train_NNNNNN.bin and manifest.json
    n_tokens: int | None = None  # size of the subset in tokens (separators included)
    like: str | None = None  # or: a folder written by distill.py whose token count and sequence length to match
    chunk_tokens: int = 256  # tokens per chunk (with --like: the distilled prompt_tokens + gen_tokens)
    seed: int = 0  # seeds the grid shift and the choice of chunks
    shard_tokens: int = 100_000_000  # tokens per shard file

    def __post_init__(self) -> None:
        if (self.n_tokens is None) == (self.like is None):
            raise ValueError("give exactly one of --n_tokens N and --like DISTILLED_DIR")
        if self.n_tokens is not None and self.n_tokens < 2:
            raise ValueError(f"--n_tokens must be at least 2 (a separator and a token), got {self.n_tokens}")
        if self.chunk_tokens <= 0 or self.shard_tokens <= 0:
            raise ValueError("--chunk_tokens and --shard_tokens must be positive")


class SubsetError(RuntimeError):
    """A subset that cannot be drawn as asked; the message says what to change."""


def choose_chunks(n_split: int, chunk: int, n_tokens: int, seed: int) -> list[int]:
    """Start offsets of the chunks to take, in the order to write them: ceil(n_tokens / (chunk + 1))
    distinct chunks of a grid shifted by a random amount (each chunk costs chunk + 1 tokens with its separator)."""
    rng = np.random.default_rng(seed)
    shift = int(rng.integers(0, chunk)) if n_split >= 2 * chunk else 0
    grid = np.arange(shift, n_split - chunk + 1, chunk)  # every whole chunk after the shift
    need = math.ceil(n_tokens / (chunk + 1))
    if need > len(grid):
        raise SubsetError(f"{n_tokens:,} tokens need {need:,} chunks of {chunk} tokens (+1 separator each), but the "
                          f"train split ({n_split:,} tokens) holds only {len(grid):,}: ask for fewer tokens, or "
                          "shorter --chunk_tokens")
    return [int(s) for s in rng.permutation(grid)[:need]]


def take_chunks(train: SplitTokens, chunk: int, n_tokens: int, seed: int) -> tuple[list[int], list[np.ndarray]]:
    """The chunks of a set of `n_tokens` tokens (`choose_chunks`): their start offsets and their tokens, the
    last one cut so that with one separator each the total is exactly n_tokens."""
    starts = choose_chunks(len(train), chunk, n_tokens, seed)
    chunks = [train[s : s + chunk] for s in starts]
    chunks[-1] = chunks[-1][: n_tokens - (len(chunks) - 1) * (chunk + 1) - 1]  # the total is exactly n_tokens
    return starts, chunks


def select_by_score(scores: np.ndarray, k: int, which: Literal["hardest", "middle", "easiest"]) -> np.ndarray:
    """Indices (ascending) of k chunks chosen by score, higher = harder (e.g. a model's mean loss on each).

    Whether to train on the hardest, typical or easiest examples is the open question this answers for us:
    keeping the hardest pays only with enough data (Sorscher et al. 2022, "Beyond neural scaling laws"),
    and for language-model pre-training the middle by perplexity did best (Marion et al. 2023, "When
    less is more"). So the three are windows of one ranking, ascending by (score, index): a tie goes
    to the lower index as the easier, deterministically, and the three never overlap when 3k <= n.
      easiest: ranks 0 .. k-1;  hardest: ranks n-k .. n-1;
      middle: ranks s .. s+k-1 with s = (n - k) // 2, the window centred on the median rank (n - 1) / 2
      (when n - k is odd no window is centred exactly; this one sits half a rank to the easier side).
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"select_by_score needs one score per chunk (a 1-D array), got shape {scores.shape}")
    n = len(scores)
    if not 1 <= k <= n:
        raise ValueError(f"select_by_score: k={k} chunks asked of {n}: choose k between 1 and {n}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"select_by_score: score of chunk {int(np.flatnonzero(~np.isfinite(scores))[0])} is not "
                         "finite: score every chunk, or leave the unscored ones out (and map the indices back)")
    starts = {"hardest": n - k, "middle": (n - k) // 2, "easiest": 0}  # first rank of each window
    if which not in starts:
        raise ValueError(f"select_by_score: which={which!r}; choose one of {', '.join(starts)}")
    ranking = np.argsort(scores, kind="stable")  # ascending score; a stable sort keeps ties in index order
    return np.sort(ranking[starts[which] : starts[which] + k]).astype(np.int64)


def make_subset(cfg: SubsetConfig, argv: list[str] | None = None) -> dict:
    """Write the subset as configured; returns its manifest."""
    n_tokens, chunk, like = cfg.n_tokens, cfg.chunk_tokens, None
    if cfg.like is not None:
        like = read_manifest(cfg.like)
        try:
            n_tokens = like["splits"]["train"]["n_tokens"]
            chunk = like["config"]["prompt_tokens"] + like["config"]["gen_tokens"]
        except (KeyError, TypeError) as e:
            raise SubsetError(f"{cfg.like}/manifest.json was not written by distill.py (no {e}); use --n_tokens") from e
    if Path(cfg.out_dir).resolve() == Path(cfg.data_dir).resolve():
        raise SubsetError(f"--out_dir {cfg.out_dir} is the real data folder (--data_dir): choose another folder")
    train = SplitTokens(cfg.data_dir, "train")
    starts, chunks = take_chunks(train, chunk, n_tokens, cfg.seed)
    source = read_manifest(cfg.data_dir) if (Path(cfg.data_dir) / "manifest.json").is_file() else {}
    record = {
        "kind": "subset",
        "source": {"data_dir": cfg.data_dir, "split": "train", "split_tokens": len(train),
                   "fraction_taken": n_tokens / len(train)},
        "like": {"dir": cfg.like, "strategy": like.get("sampling", {}).get("strategy")} if like else None,
        "seed": cfg.seed,
        "val_data_dir": cfg.data_dir,
        "offline": source.get("offline"),
        "counts": {"requested_tokens": n_tokens, "tokens": sum(len(c) + 1 for c in chunks), "sequences": len(chunks),
                   "separator_tokens": len(chunks), "chunk_tokens": chunk, "text_tokens": sum(len(c) for c in chunks)},
        "quality": {**text_stats(chunks), "measured_on": "all tokens of the chunks (gpt2/metrics/diversity.py)"},
        "chunk_offsets": starts,
        "config": config_to_dict(cfg),
    }
    return write_sequences(cfg.out_dir, chunks, record, shard_tokens=cfg.shard_tokens, argv=argv,
                           prog=["python", "-m", "data.subset"])


def main(argv: list[str] | None = None) -> dict:
    cfg, manifest = run_config(SubsetConfig, argv, lambda cfg: make_subset(cfg, argv), errors=(SubsetError, FileNotFoundError, ShardError))
    c, q = manifest["counts"], manifest["quality"]
    print(f"{cfg.out_dir}: {c['tokens']:,} tokens, {c['sequences']:,} chunks of {c['chunk_tokens']} from "
          f"{cfg.data_dir} ({manifest['source']['fraction_taken']:.1%} of its train split); distinct-1/2/3 "
          f"{q['distinct_1']:.3f}/{q['distinct_2']:.3f}/{q['distinct_3']:.3f}")
    return manifest


if __name__ == "__main__":
    main()
