"""python -m data.subset: exactly the requested tokens, in distinct chunks of the real train split,
deterministic for a seed, matched to a distilled set with --like."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data import subset
from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import write_shard
from data.subset import SubsetConfig, SubsetError, make_subset
from gpt2 import tokenizer
from gpt2.cli import parse_config

N_TRAIN = 5000


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A train split whose token i is i % 40_000: every window identifies its offset."""
    d = tmp_path / "real"
    d.mkdir()
    write_shard(d / "train_000000.bin", np.arange(N_TRAIN) % 40_000)
    write_shard(d / "val_000000.bin", np.arange(100))
    return d


def chunks_of(out_dir) -> list[np.ndarray]:
    stream = SplitTokens(out_dir, "train")[:].astype(np.int64)
    cuts = np.flatnonzero(stream == tokenizer.EOT_ID)
    assert cuts[0] == 0
    return [stream[a + 1 : b] for a, b in zip(cuts, list(cuts[1:]) + [len(stream)])]


def test_exact_size_distinct_real_chunks(data_dir, tmp_path):
    cfg = SubsetConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "sub"), n_tokens=1000, chunk_tokens=64, seed=3)
    manifest = make_subset(cfg, argv=[])
    chunks = chunks_of(tmp_path / "sub")
    assert SplitTokens(tmp_path / "sub", "train").n_tokens == manifest["counts"]["tokens"] == 1000
    assert len(chunks) == manifest["counts"]["sequences"] == 16  # ceil(1000 / 65)
    assert [len(c) for c in chunks] == [64] * 15 + [1000 - 15 * 65 - 1]
    starts = [int(c[0]) for c in chunks]
    assert starts == manifest["chunk_offsets"][: len(chunks)]
    for c in chunks:  # contiguous real text
        assert np.array_equal(c, np.arange(c[0], c[0] + len(c)))
    assert len(set(starts)) == len(starts) and all(abs(a - b) >= 64 for a in starts for b in starts if a != b)
    assert len({s % 64 for s in starts}) == 1  # one grid: chunks never overlap
    assert starts != sorted(starts)  # drawn in random order
    assert manifest["quality"]["distinct_1"] == pytest.approx(len(np.unique(np.concatenate(chunks))) / 984)


def test_deterministic_for_a_seed(data_dir, tmp_path):
    def run(out, seed):
        make_subset(SubsetConfig(data_dir=str(data_dir), out_dir=str(tmp_path / out), n_tokens=700, seed=seed), argv=[])
        return (tmp_path / out / "train_000000.bin").read_bytes()

    assert run("a", 0) == run("b", 0)
    assert run("a", 0) != run("c", 1)


def test_like_a_distilled_set(data_dir, tmp_path):
    """--like takes the token count and sequence length (prompt + generated) of a distilled set."""
    fake = [np.full(40, 7)] * 9 + [np.full(13, 7)]
    write_sequences(tmp_path / "distilled", fake, {"kind": "distilled", "sampling": {"strategy": "hard"},
                                                   "config": {"prompt_tokens": 8, "gen_tokens": 32}},
                    shard_tokens=10_000, argv=[], prog=["python", "distill.py"])
    like = json.loads((tmp_path / "distilled" / "manifest.json").read_text())
    cfg = parse_config(SubsetConfig, ["--data_dir", str(data_dir), "--like", str(tmp_path / "distilled"),
                                      "--out_dir", str(tmp_path / "sub")])
    manifest = make_subset(cfg, argv=[])
    assert manifest["counts"]["tokens"] == like["splits"]["train"]["n_tokens"] == 9 * 41 + 14
    assert manifest["counts"]["chunk_tokens"] == 40 and manifest["like"]["strategy"] == "hard"
    assert [len(c) for c in chunks_of(tmp_path / "sub")] == [40] * 9 + [13]


def test_too_big_a_subset_says_so(data_dir, tmp_path):
    with pytest.raises(SubsetError, match="holds only"):
        make_subset(SubsetConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "s"), n_tokens=N_TRAIN + 1), argv=[])
    with pytest.raises(SystemExit):
        parse_config(SubsetConfig, ["--n_tokens", "10", "--like", "x"])  # exactly one of the two

