"""A training set made of separate token sequences: how it is stored.

`distill.py` (teacher continuations) and `python -m data.subset` (chunks of real text) both write one:

    layout    each sequence is preceded by <|endoftext|> (id 50256), the document separator GPT-2 was
              trained with, and the sequences are concatenated into one `train` split:
                  EOT s0[0] s0[1] ... EOT s1[0] s1[1] ... EOT s2[0] ...
              so a training window that spans two sequences sees where one ends and the next begins.
    shards    train_{i:06d}.bin in llm.c's format, written atomically (data.shards.write_data_dir)
    manifest  manifest.json in data.prepare's layout ("splits" -> "train" -> "shards"), so that
              `data.loader.SplitTokens` reads and checks it like any prepared split; plus what made it.

There is no val or test split here: train on it with `train.py --val_data_dir` pointing at the real data.

How varied such a set is (distinct-n, repetition) is measured by `gpt2.metrics.diversity`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from data.shards import write_data_dir
from gpt2 import tokenizer

LAYOUT = ("each sequence is preceded by <|endoftext|> (50256) as a document separator; the sequences are "
          "concatenated into the train split; there is no val or test split (train with --val_data_dir)")


def write_sequences(out_dir: str | Path, sequences: list[np.ndarray], record: dict, *, shard_tokens: int,
                    argv: list[str] | None, prog: list[str]) -> dict:
    """Write `sequences` as EOT-separated train shards in `out_dir` and manifest.json (which gets
    `record`, the layout, the shard list and the command line: `prog` + argv). Returns the manifest.
    Written by `data.shards.write_data_dir`: no manifest until every shard is there, no stale shards."""
    eot = np.array([tokenizer.EOT_ID], dtype=np.uint16)
    stream = np.concatenate([piece for s in sequences for piece in (eot, np.asarray(s, dtype=np.uint16))])
    manifest = {
        **record,
        "tokenizer": {"name": "gpt2", "vocab_size": tokenizer.VOCAB_SIZE, "eot_id": tokenizer.EOT_ID,
                      "eot_inserted": True},
        "layout": LAYOUT,
        "splits": {"train": {"n_sequences": len(sequences)}},
        "command": shlex.join([*prog, *(sys.argv[1:] if argv is None else argv)]),
    }
    return write_data_dir(out_dir, {"train": stream}, manifest, shard_tokens)
