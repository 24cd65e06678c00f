"""Token streams for training and evaluation, read from the shards that `python -m data.prepare` writes.

- `SplitTokens`: one split (all its `{split}_*.bin` shards) as one long sequence of token ids.
- `TrainBatches`: random windows of T+1 tokens -> (x, y), y = x shifted by one; a seeded, resumable
  generator per rank. With `ignore_first_tokens` N, the targets among the first N tokens of each sequence
  (after each <|endoftext|>) are IGNORE_INDEX: a distilled set's real prompts stay out of the loss.
- `training_data(cfg)`: what a training run reads (`gpt2.trainer.TrainData`), from the shards its config names.

The evaluation's windows (the whole split in order, every target scored once) belong to the perplexity
metric: `gpt2/metrics/windows.py`.

Shapes: B = batch size, T = sequence length (tokens per row).
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from data.shards import ShardError, open_shard
from gpt2.losses import IGNORE_INDEX
from gpt2.tokenizer import EOT_ID, VOCAB_SIZE
from gpt2.trainer import TrainData


def prepare_hint(data_dir) -> str:
    return (
        f"prepare it with `python -m data.prepare --out-dir {data_dir}` (`make data`), or on a machine "
        f"without internet `python -m data.prepare --raw-dir ../shared/wikitext-2-raw --offline --out-dir {data_dir}` "
        "(`make data-offline`)"
    )


class SplitTokens:
    """The token ids of one split, memory-mapped from its shards, addressed as one sequence."""

    def __init__(self, data_dir, split: str, vocab_size: int = VOCAB_SIZE):
        self.data_dir, self.split = Path(data_dir), split
        pattern = re.compile(rf"{re.escape(split)}_\d{{6}}\.bin")
        names = sorted(p.name for p in self.data_dir.glob(f"{split}_*.bin") if pattern.fullmatch(p.name))
        if not names:
            where = "does not exist" if not self.data_dir.is_dir() else f"holds no {split}_NNNNNN.bin shards"
            raise FileNotFoundError(f"no '{split}' split: {self.data_dir} {where}; {prepare_hint(self.data_dir)}")
        self.shards = [self.data_dir / n for n in names]
        self.manifest = self._read_manifest(names)  # what data.prepare recorded (source, offline flag), or None
        self._arrays = [open_shard(p, vocab_size) for p in self.shards]
        # offsets[i] = index of shard i's first token in the split; offsets[-1] = total.
        self._offsets = np.cumsum([0] + [len(a) for a in self._arrays])
        self.n_tokens = int(self._offsets[-1])

    def _read_manifest(self, names: list[str]) -> dict | None:
        """manifest.json, after checking it lists exactly the shards found: shards left from another run
        would otherwise silently join the split."""
        path = self.data_dir / "manifest.json"
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ShardError(f"{path}: not valid JSON ({e}); {prepare_hint(self.data_dir)}") from e
        try:
            listed = [s["file"] for s in manifest["splits"][self.split]["shards"]]
        except (KeyError, TypeError):
            return manifest  # it does not list this split's shards: nothing to compare
        if listed != names:
            raise ShardError(
                f"{self.data_dir}: the '{self.split}' shards on disk {names} are not the ones {path} lists "
                f"{listed} (files left from another run?); {prepare_hint(self.data_dir)}"
            )
        return manifest

    def __len__(self) -> int:
        return self.n_tokens

    def __getitem__(self, index: slice | int) -> np.ndarray:
        """tokens[a:b] -> a new (b - a,) uint16 array, joined across shard boundaries. Step 1 only."""
        if isinstance(index, (int, np.integer)):
            i = index + self.n_tokens if index < 0 else index
            if not 0 <= i < self.n_tokens:
                raise IndexError(f"token index {index} out of range for {self.n_tokens} tokens")
            return self[i : i + 1][0]
        start, stop, step = index.indices(self.n_tokens)
        if step != 1:
            raise ValueError("SplitTokens supports contiguous slices only (step 1)")
        out = np.empty(max(stop - start, 0), dtype=np.uint16)
        pos = start
        shard = int(np.searchsorted(self._offsets, start, side="right")) - 1
        while pos < stop:  # copy the part of each shard the slice covers
            lo = pos - self._offsets[shard]
            hi = min(stop, self._offsets[shard + 1]) - self._offsets[shard]
            out[pos - start : pos - start + hi - lo] = self._arrays[shard][lo:hi]
            pos += hi - lo
            shard += 1
        return out

    def __repr__(self) -> str:
        return f"SplitTokens({str(self.data_dir)!r}, {self.split!r}: {self.n_tokens:,} tokens in {len(self.shards)} shards)"


def eot_positions(tokens, block: int = 1 << 24) -> np.ndarray:
    """Indices (int64, ascending) of every <|endoftext|> in `tokens` (a SplitTokens or an array), read
    `block` tokens at a time: the split is never in memory at once."""
    found = [np.flatnonzero(tokens[a : a + block] == EOT_ID) + a for a in range(0, len(tokens), block)]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)


def ignore_sequence_starts(y: np.ndarray, starts: np.ndarray, eots: np.ndarray, n: int) -> None:
    """Set to IGNORE_INDEX, in place, the targets y (B, T) of windows starting at `starts` (B,) that lie at
    in-sequence index < n. y[r, t] is the token at p = starts[r] + 1 + t; its in-sequence index is p - e - 1,
    e the last <|endoftext|> before p (index 0: the token right after it). So the ignored targets are those
    at e + 1 .. e + n for each EOT e (ascending, `eots`): the last one at or before the window's start,
    whose sequence may run into the window, and those inside it. A target with no EOT before it counts,
    and so does each EOT itself unless it ends a sequence shorter than n."""
    T = y.shape[1]
    first = np.searchsorted(eots, starts + 1) - 1  # (B,) the last EOT <= start; -1: none
    stop = np.searchsorted(eots, starts + T)  # (B,) the EOTs before the last target
    for row, start in enumerate(starts):
        for e in eots[max(first[row], 0) : stop[row]]:
            lo, hi = max(e - start, 0), max(e + n - start, 0)  # the columns of e + 1 .. e + n
            y[row, lo:hi] = IGNORE_INDEX


class TrainBatches:
    """Random training windows: next() -> (x, y), int64 (B, T), y[:, t] = x[:, t + 1] of the same window.

    Each row is a window of T+1 consecutive tokens whose start is drawn uniformly from [0, N - T - 1]
    (windows may cross shard boundaries). Rank r of a seeded run draws from its own PCG64 stream,
    SeedSequence(seed, spawn_key=(r,)) (= SeedSequence(seed).spawn(n)[r]): distinct across ranks,
    the same on every run. state_dict() captures that stream exactly, so a resumed run draws the
    batches the uninterrupted run would have drawn.

    ignore_first_tokens = n > 0: targets at in-sequence index < n (`ignore_sequence_starts`) are
    IGNORE_INDEX; the windows drawn, x and the state are the same as with n = 0. The EOT positions
    (`eot_positions`, int64: 8 bytes per separator) are found once; pass them in to share them.
    """

    def __init__(self, tokens, batch_size: int, seq_len: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device="cpu", ignore_first_tokens: int = 0, eots: np.ndarray | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size ({batch_size}) and seq_len ({seq_len}) must be positive")
        if ignore_first_tokens < 0:
            raise ValueError(f"ignore_first_tokens must be >= 0, got {ignore_first_tokens}")
        if len(tokens) < seq_len + 1:
            name = repr(tokens) if isinstance(tokens, SplitTokens) else "the token sequence"
            raise ValueError(
                f"{name} has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1} needed for one "
                "training window: use a smaller seq_len or more text"
            )
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(rank,))))
        self.batches_drawn = 0
        self._window = np.empty((batch_size, seq_len + 1), dtype=np.uint16)  # reused scratch, never returned
        self.ignore_first_tokens = ignore_first_tokens
        self.eots = (eot_positions(tokens) if eots is None else eots) if ignore_first_tokens else None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        starts = self.rng.integers(0, len(self.tokens) - T, size=B)  # uniform in [0, N - T - 1]
        for row, start in enumerate(starts):
            self._window[row] = self.tokens[int(start) : int(start) + T + 1]
        x = torch.from_numpy(self._window[:, :-1].astype(np.int64))  # (B, T), a fresh copy
        y = self._window[:, 1:].astype(np.int64)  # (B, T)
        if self.ignore_first_tokens:
            ignore_sequence_starts(y, starts, self.eots, self.ignore_first_tokens)
        y = torch.from_numpy(y)
        self.batches_drawn += 1
        if self.device.type == "cuda":
            # Pinned (page-locked) host memory lets the copy run asynchronously with compute.
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def state_dict(self) -> dict:
        """Plain, JSON-serialisable: the generator's exact state and what it was drawn for."""
        return {
            "bit_generator": self.rng.bit_generator.state,
            "batches_drawn": self.batches_drawn,
            "seed": self.seed,
            "rank": self.rank,
            "n_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict) -> None:
        mine = {"seed": self.seed, "rank": self.rank, "n_tokens": len(self.tokens)}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(
                f"sampler state was saved for {theirs} but this sampler has {mine}: resume with the same "
                "seed, rank and data, or start the sampler afresh"
            )
        self.rng.bit_generator.state = state["bit_generator"]
        self.batches_drawn = int(state["batches_drawn"])


def micro_batch_streams(data_dir, batch_size: int, seq_len: int, *, seed: int, rank: int, accum: int, world: int,
                        device="cpu", ignore_first_tokens: int = 0) -> list[TrainBatches]:
    """This process's micro-batch slots of every optimizer step, one seeded stream each: slot
    g = rank * accum + m of world * accum reads the train split's windows of `TrainBatches(rank=g)`, so a
    step's data depends only on the global batch, not on how it is split over processes and accumulation.
    The slots share one array of the split's EOT positions when `ignore_first_tokens` asks for it."""
    tokens = SplitTokens(data_dir, "train")
    eots = eot_positions(tokens) if ignore_first_tokens else None
    if eots is not None and not len(eots):
        warnings.warn(f"--ignore_first_tokens {ignore_first_tokens}: {tokens!r} holds no <|endoftext|>, so no "
                      "sequence start is known and every target counts (is --data_dir a set written by "
                      "distill.py or data.subset?)")
    return [TrainBatches(tokens, batch_size, seq_len, seed=seed, rank=rank * accum + m, world_size=world * accum,
                         device=device, ignore_first_tokens=ignore_first_tokens, eots=eots) for m in range(accum)]


def training_data(cfg) -> TrainData:
    """What a training run (`gpt2.trainer.train`) reads, from the shards its TrainConfig `cfg` names: the
    train split's size and micro-batch streams (--data_dir; --ignore_first_tokens), the val split (--val_data_dir,
    else --data_dir)."""
    val_tokens = SplitTokens(cfg.val_data_dir or cfg.data_dir, "val")
    val_tokens = val_tokens if cfg.eval_tokens is None else val_tokens[: cfg.eval_tokens]
    return TrainData(n_train_tokens=len(SplitTokens(cfg.data_dir, "train")), val_tokens=val_tokens,
                     batches=functools.partial(micro_batch_streams, cfg.data_dir, cfg.micro_batch_size, cfg.seq_len,
                                               seed=cfg.seed, ignore_first_tokens=cfg.ignore_first_tokens))
