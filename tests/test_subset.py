"""python -m data.subset: exactly the requested tokens, in distinct chunks of the real train split,
deterministic for a seed, matched to a distilled set with --like; select_by_score against a brute-force
reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import write_shard
from data.subset import SubsetConfig, SubsetError, make_subset, select_by_score
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



def brute_force_selection(scores, k: int, which: str) -> list[int]:
    """The definition, spelled out: rank chunks by (score, index); easiest = the k lowest ranks, hardest =
    the k highest, middle = the k ranks starting at (n - k) // 2."""
    ranked = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    start = {"easiest": 0, "middle": (len(scores) - k) // 2, "hardest": len(scores) - k}[which]
    return sorted(ranked[start : start + k])


def test_select_by_score_matches_brute_force():
    """Many random toy scorers, many ties (integer scores from a few values) or none (floats)."""
    rng = np.random.default_rng(5)
    for case in range(400):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 4, n) if case % 2 else rng.normal(size=n)
        k = int(rng.integers(1, n + 1))
        for which in ("hardest", "middle", "easiest"):
            got = select_by_score(scores, k, which)
            assert got.tolist() == brute_force_selection(scores.tolist(), k, which), (scores, k, which)
            assert got.dtype == np.int64 and len(set(got.tolist())) == k


def test_select_by_score_properties():
    """What the windows mean, checked without the ranking: the hardest score at least as high as any left
    out, the easiest at most as low; the middle has as many chunks ranked below it as above (one more
    above when n - k is odd), so its ranks are centred on the median rank; 3k <= n keeps them apart."""
    rng = np.random.default_rng(6)
    for _ in range(200):
        n = int(rng.integers(3, 60))
        scores, k = rng.integers(0, 6, n).astype(float), int(rng.integers(1, n // 3 + 1))
        key = [(scores[i], i) for i in range(n)]
        picked = {w: set(select_by_score(scores, k, w).tolist()) for w in ("hardest", "middle", "easiest")}
        rest = {w: [key[i] for i in range(n) if i not in picked[w]] for w in picked}
        assert min(key[i] for i in picked["hardest"]) > max(rest["hardest"])
        assert max(key[i] for i in picked["easiest"]) < min(rest["easiest"])
        below = sum(1 for c in rest["middle"] if c < min(key[i] for i in picked["middle"]))
        above = sum(1 for c in rest["middle"] if c > max(key[i] for i in picked["middle"]))
        assert below + above == n - k and above - below == (n - k) % 2  # contiguous, centred on the median
        ranks = [sorted(key).index(key[i]) for i in picked["middle"]]
        assert abs(np.mean(ranks) - (n - 1) / 2) <= 0.5
        assert not (picked["hardest"] & picked["middle"] or picked["middle"] & picked["easiest"]
                    or picked["hardest"] & picked["easiest"])


def test_select_by_score_ties_and_errors():
    scores = np.array([1.0, 5.0, 5.0, 5.0, 0.0, 5.0])  # four chunks tie at 5: lower index counts as easier
    assert select_by_score(scores, 2, "hardest").tolist() == [3, 5]
    assert select_by_score(scores, 2, "easiest").tolist() == [0, 4]
    assert select_by_score(scores, 2, "middle").tolist() == [1, 2]  # ranks 2, 3 of 0..5: median rank 2.5
    assert select_by_score(scores, 6, "middle").tolist() == list(range(6))
    with pytest.raises(ValueError, match="between 1 and 6"):
        select_by_score(scores, 7, "hardest")
    with pytest.raises(ValueError, match="between 1 and 6"):
        select_by_score(scores, 0, "easiest")
    with pytest.raises(ValueError, match="choose one of hardest, middle, easiest"):
        select_by_score(scores, 2, "median")
    with pytest.raises(ValueError, match="chunk 2 is not finite"):
        select_by_score(np.array([1.0, 2.0, np.nan]), 1, "hardest")
    with pytest.raises(ValueError, match="1-D"):
        select_by_score(np.zeros((2, 3)), 1, "hardest")
