"""A training set made of separate token sequences: how it is stored.

`distill.py` (teacher continuations) and `python -m data.subset` (chunks of real text) both write one:

    layout    each sequence is preceded by <|endoftext|> (id 50256), the document separator GPT-2 was
              trained with, and the sequences are concatenated into one `train` split:
                  EOT s0[0] s0[1] ... EOT s1[0] s1[1] ... EOT s2[0] ...
              so a training window that spans two sequences sees where one ends and the next begins.
    shards    train_{i:06d}.bin in llm.c's format (data/shards.py), written atomically
    manifest  manifest.json in data.prepare's layout ("splits" -> "train" -> "shards"), so that
              `data.loader.SplitTokens` reads and checks it like any prepared split; plus what made it.

There is no val or test split here: train on it with `train.py --val_data_dir` pointing at the real data.

How varied such a set is (distinct-n, repetition) is measured by `gpt2.metrics.diversity`.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from data.shards import shard_name, write_shard
from gpt2.atomic import atomic_open
from gpt2 import tokenizer

LAYOUT = ("each sequence is preceded by <|endoftext|> (50256) as a document separator; the sequences are "
          "concatenated into the train split; there is no val or test split (train with --val_data_dir)")


def write_sequences(out_dir: str | Path, sequences: list[np.ndarray], record: dict, *, shard_tokens: int,
                    argv: list[str] | None, prog: list[str]) -> dict:
    """Write `sequences` as EOT-separated train shards in `out_dir` and manifest.json (which gets
    `record`, the layout, the shard list and the command line: `prog` + argv). Returns the manifest.

    The old manifest is removed first and written last, so a folder whose writing was interrupted
    has no manifest; shards of an earlier run that this one does not overwrite are deleted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    eot = np.array([tokenizer.EOT_ID], dtype=np.uint16)
    stream = np.concatenate([piece for s in sequences for piece in (eot, np.asarray(s, dtype=np.uint16))])
    shards = []
    for index, begin in enumerate(range(0, len(stream), shard_tokens)):
        piece = stream[begin : begin + shard_tokens]
        write_shard(out_dir / shard_name("train", index), piece)
        shards.append({"file": shard_name("train", index), "n_tokens": len(piece)})
    written = {s["file"] for s in shards}
    for stale in sorted(out_dir.iterdir()):
        if re.fullmatch(r"(train|val|test)_\d{6}\.bin", stale.name) and stale.name not in written:
            print(f"removing {stale} (not part of this run)", file=sys.stderr)
            stale.unlink()
    manifest = {
        "format": "llm.c token shards: 256 int32 header (magic 20240520, version 1, token count), uint16 tokens",
        **record,
        "tokenizer": {"name": "gpt2", "vocab_size": tokenizer.VOCAB_SIZE, "eot_id": tokenizer.EOT_ID,
                      "eot_inserted": True},
        "layout": LAYOUT,
        "splits": {"train": {"n_tokens": len(stream), "n_sequences": len(sequences), "shards": shards}},
        "command": shlex.join([*prog, *(sys.argv[1:] if argv is None else argv)]),
    }
    with atomic_open(out_dir / "manifest.json") as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest.json of a folder of shards, or a FileNotFoundError that says how to make one."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {data_dir} is not a finished data folder "
                                "(write one with `python distill.py`, `python -m data.subset` or `python -m data.prepare`)")
    return json.loads(path.read_text())
