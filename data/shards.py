"""Token shards in llm.c's format: read, validate, write atomically.

A shard is one file:
    header  256 x int32, little-endian: [0] magic 20240520, [1] version 1, [2] token count, rest zero
    tokens  token count x uint16, little-endian (GPT-2 ids fit: 50,257 < 65,536)

Shards of a split are named `{split}_{index:06d}.bin` and sit in one data directory beside a
`manifest.json`. `write_data_dir` writes such a folder (for `python -m data.prepare`, distill.py and
`python -m data.subset` alike) and `read_manifest` reads its manifest back. Every check here raises
`ShardError` with a sentence naming the file, what is wrong with it and the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gpt2.atomic import atomic_open
from gpt2.tokenizer import VOCAB_SIZE

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4  # 1024
TOKEN_DTYPE = np.dtype("<u2")
FORMAT = "llm.c token shards: 256 int32 header (magic 20240520, version 1, token count), uint16 tokens"
SHARD_NAME = re.compile(r"(train|val|test)_\d{6}\.bin")  # what shard_name writes, for every split


class ShardError(ValueError):
    """A shard file that cannot be used as it is; the message says how to rebuild it."""


class ShardHeader(NamedTuple):
    magic: int
    version: int
    n_tokens: int


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def rebuild_hint(path: str | os.PathLike) -> str:
    """The command that writes shards into the folder holding `path`."""
    return (
        f"rebuild the shards with `python -m data.prepare --out-dir {Path(path).parent}` "
        "(`make data`; `make data-offline` on a machine without internet)"
    )


def _fail(path, problem: str) -> ShardError:
    return ShardError(f"{path}: {problem}; {rebuild_hint(path)}")


def read_header(path: str | os.PathLike) -> ShardHeader:
    """Read and check a shard's header against the file: size, magic, version, token count."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise _fail(path, f"file is {size} bytes, shorter than the {HEADER_BYTES}-byte shard header (truncated or not a shard)")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    magic, version, n_tokens = (int(v) for v in header[:3])
    if magic != MAGIC:
        raise _fail(path, f"magic number is {magic}, expected {MAGIC}: this is not an llm.c token shard (wrong file?)")
    if version != VERSION:
        raise _fail(path, f"shard version is {version}, this code reads version {VERSION}")
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    if size != expected:
        kind = "truncated" if size < expected else "extended"
        raise _fail(
            path,
            f"header says {n_tokens} tokens ({expected} bytes) but the file is {size} bytes: "
            f"the file was {kind} after it was written",
        )
    if n_tokens == 0:
        raise _fail(path, "shard holds no tokens")
    return ShardHeader(magic, version, n_tokens)


def open_shard(path: str | os.PathLike, vocab_size: int = VOCAB_SIZE) -> np.memmap:
    """Memory-map a checked shard's tokens: (n_tokens,) uint16, read-only."""
    header = read_header(path)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header.n_tokens,))
    # One vectorised pass over the file: an id outside the vocabulary would index past the embedding.
    if int(tokens.max()) >= vocab_size:
        bad = int(np.argmax(tokens >= vocab_size))
        raise _fail(
            path,
            f"token id {int(tokens[bad])} at position {bad} is outside the vocabulary (vocab_size {vocab_size}): "
            "the shard was written for another tokenizer or is corrupt",
        )
    return tokens


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write `tokens` (1-D ints in [0, 65535]) as a shard at `path`, atomically: a run stopped half-way
    leaves the previous file (or none) at `path`, never a shard that looks complete."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size == 0 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"write_shard({path}): need a non-empty 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"write_shard({path}): token ids must lie in [0, 65535] to be stored as uint16")
    if tokens.size > np.iinfo(np.int32).max:
        raise ValueError(f"write_shard({path}): {tokens.size} tokens do not fit the int32 count; use smaller shards")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    with atomic_open(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


def write_data_dir(out_dir: str | os.PathLike, tokens: dict[str, np.ndarray], manifest: dict, shard_tokens: int) -> dict:
    """Write a data folder: each split's `tokens` as shards of at most `shard_tokens`, then manifest.json.

    `manifest` is what the caller records about the data; its "splits" maps every split of `tokens` to
    that split's record, which gets "n_tokens" first and the list of its shards last. Returns the
    manifest as written ("format" first).

    The old manifest is removed first and the new one written last, so a folder whose writing was
    interrupted has no manifest; shards of an earlier run that this one does not overwrite (an earlier,
    larger run's train_000003.bin, or a split this run has not) are deleted, or they would join a split."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    splits = {}
    for split, split_tokens in tokens.items():
        shards = []
        for index, begin in enumerate(range(0, len(split_tokens), shard_tokens)):
            piece = split_tokens[begin : begin + shard_tokens]
            write_shard(out_dir / shard_name(split, index), piece)
            shards.append({"file": shard_name(split, index), "n_tokens": len(piece)})
        splits[split] = {"n_tokens": len(split_tokens), **manifest["splits"][split], "shards": shards}
    written = {s["file"] for info in splits.values() for s in info["shards"]}
    for stale in sorted(out_dir.iterdir()):
        if SHARD_NAME.fullmatch(stale.name) and stale.name not in written:
            print(f"removing {stale} (not part of this run)", file=sys.stderr)
            stale.unlink()
    manifest = {"format": FORMAT, **manifest, "splits": splits}  # "splits" keeps its place among the keys
    with atomic_open(out_dir / "manifest.json") as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest.json of a folder of shards, or a FileNotFoundError that says how to make one."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {data_dir} is not a finished data folder "
                                "(write one with `python distill.py`, `python -m data.subset` or `python -m data.prepare`)")
    return json.loads(path.read_text())
