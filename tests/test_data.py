"""The data layer: shard format and its errors, atomic writes, lossless tokenization, samplers, eval windows."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data import prepare
from data.loader import SplitTokens, TrainBatches
from data.shards import (HEADER_BYTES, MAGIC, VERSION, ShardError, open_shard, read_header, read_manifest, write_data_dir,
                         write_shard)
from gpt2.losses import IGNORE_INDEX
from gpt2.metrics.windows import EvalBatches, eval_windows

# ---------------------------------------------------------------- shard format


def test_header_round_trip(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50257, size=1000).astype(np.uint16)
    path = tmp_path / "train_000000.bin"
    write_shard(path, tokens)
    assert read_header(path) == (MAGIC, VERSION, 1000)
    assert path.stat().st_size == HEADER_BYTES + 2 * 1000
    header = np.fromfile(path, dtype="<i4", count=256)
    assert (header[:3] == [20240520, 1, 1000]).all() and not header[3:].any()
    mm = open_shard(path)
    assert mm.dtype == np.uint16 and np.array_equal(mm, tokens)


def _corrupt(tmp_path, edit) -> Path:
    path = tmp_path / "val_000000.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(data)))
    return path


def _set_int(data, index, value):
    data[4 * index : 4 * index + 4] = int(value).to_bytes(4, "little", signed=True)
    return data


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda d: d[:HEADER_BYTES + 150], "truncated"),
        (lambda d: d + b"\0\0", "extended"),
        (lambda d: d[:500], "shorter than the 1024-byte shard header"),
        (lambda d: _set_int(d, 0, 12345), "not an llm.c token shard"),
        (lambda d: _set_int(d, 1, 2), "shard version is 2"),
        (lambda d: _set_int(d, 2, 99), "header says 99 tokens"),
        (lambda d: d[:HEADER_BYTES + 20] + (60000).to_bytes(2, "little") + d[HEADER_BYTES + 22 :], "token id 60000 at position 10"),
    ],
    ids=["truncated", "extended", "no-header", "magic", "version", "count", "out-of-vocab"],
)
def test_bad_shard_errors_name_file_problem_and_fix(tmp_path, edit, problem):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(ShardError) as e:
        open_shard(path)
    message = str(e.value)
    assert str(path) in message and problem in message
    assert f"python -m data.prepare --out-dir {tmp_path}" in message and "make data" in message


def test_vocab_size_is_checked_against_the_argument(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.array([1, 2, 300], dtype=np.uint16))
    assert len(open_shard(path, vocab_size=301)) == 3
    with pytest.raises(ShardError, match="vocab_size 300"):
        open_shard(path, vocab_size=300)


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_interrupted_write_keeps_previous_shard_and_leaves_nothing_valid(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "train_000000.bin"
    old = np.arange(50, dtype=np.uint16)
    write_shard(path, old)

    def boom(*args):
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(f"data.shards.os.{fail_at}", boom)
    with pytest.raises(KeyboardInterrupt):
        write_shard(path, np.arange(80, dtype=np.uint16))
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "train_000001.bin", np.arange(80, dtype=np.uint16))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_000000.bin"]  # no temp file, no new shard
    assert np.array_equal(open_shard(path), old)


def test_leftover_temp_file_of_a_killed_run_is_not_a_shard(tmp_path):
    write_shard(tmp_path / "train_000000.bin", np.arange(10, dtype=np.uint16))
    (tmp_path / ".train_000001.bin.abc123.tmp").write_bytes(b"partial")
    assert SplitTokens(tmp_path, "train").shards == [tmp_path / "train_000000.bin"]


def test_data_dir_lists_what_it_wrote_and_deletes_stale_shards(tmp_path, capsys):
    tokens = np.arange(250, dtype=np.uint16)
    write_data_dir(tmp_path, {"train": tokens, "val": tokens[:10]}, {"splits": {"train": {}, "val": {}}}, shard_tokens=100)
    (tmp_path / "samples.txt").write_text("not a shard")
    record = {"kind": "test", "splits": {"train": {"n_sequences": 3}}, "command": "x"}
    manifest = write_data_dir(tmp_path, {"train": tokens[:150]}, record, shard_tokens=100)
    # the earlier, larger run's train_000002.bin and its val split are gone; other files stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "samples.txt", "train_000000.bin", "train_000001.bin"]
    assert "removing" in capsys.readouterr().err
    assert list(manifest) == ["format", "kind", "splits", "command"]  # the caller's order, the format first
    assert manifest["splits"] == {"train": {"n_tokens": 150, "n_sequences": 3, "shards": [
        {"file": "train_000000.bin", "n_tokens": 100}, {"file": "train_000001.bin", "n_tokens": 50}]}}
    assert read_manifest(tmp_path) == manifest and record["splits"]["train"] == {"n_sequences": 3}  # not changed
    assert np.array_equal(SplitTokens(tmp_path, "train")[:], tokens[:150])
    with pytest.raises(FileNotFoundError, match="python -m data.prepare"):
        read_manifest(tmp_path / "nowhere")


# ---------------------------------------------------------------- SplitTokens


@pytest.fixture
def three_shards(tmp_path) -> tuple[Path, np.ndarray]:
    """A 'train' split of 1000 tokens whose values are their positions, in shards of 300/500/200."""
    tokens = np.arange(1000, dtype=np.uint16)
    for i, (a, b) in enumerate([(0, 300), (300, 800), (800, 1000)]):
        write_shard(tmp_path / f"train_{i:06d}.bin", tokens[a:b])
    return tmp_path, tokens


def test_split_tokens_slices_across_shards(three_shards):
    data_dir, tokens = three_shards
    split = SplitTokens(data_dir, "train")
    assert len(split) == split.n_tokens == 1000 and len(split.shards) == 3
    for a, b in [(0, 1000), (290, 810), (299, 300), (300, 301), (799, 801), (5, 5), (990, 2000), (-20, -3)]:
        got = split[a:b]
        assert got.dtype == np.uint16 and np.array_equal(got, tokens[a:b]), (a, b)
    assert split[799] == 799 and split[-1] == 999
    with pytest.raises(ValueError, match="step 1"):
        split[0:10:2]


def test_missing_split_names_dir_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        SplitTokens(tmp_path, "test")
    assert str(tmp_path) in str(e.value) and "python -m data.prepare" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SplitTokens(tmp_path / "nowhere", "train")


# ---------------------------------------------------------------- TrainBatches


def _draw(sampler, n):
    return [sampler.next() for _ in range(n)]


def _same(a, b) -> bool:
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_train_batches_are_shifted_windows_across_shards(three_shards):
    split = SplitTokens(three_shards[0], "train")
    B, T = 16, 64
    crossed = 0
    for x, y in _draw(TrainBatches(split, B, T, seed=3), 50):
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
        # token value == position: each row is one contiguous window, y the same window one further
        starts = x[:, 0]
        assert torch.equal(x, starts[:, None] + torch.arange(T)) and torch.equal(y, x + 1)
        assert 0 <= starts.min() and starts.max() <= 1000 - T - 1
        crossed += int(((starts < 300) & (starts + T >= 300)).sum())
    assert crossed > 0  # some windows span a shard boundary


def test_train_batches_start_uniformly_over_every_valid_start():
    T, N = 8, 12  # valid starts: 0..3
    starts = torch.cat([x[:, 0] for x, _ in _draw(TrainBatches(np.arange(N), 64, T, seed=0), 50)])
    counts = torch.bincount(starts, minlength=N)
    assert counts[4:].sum() == 0 and (counts[:4] > 700).all()  # 3200 draws, ~800 each


def test_train_batches_deterministic_per_seed_distinct_per_rank(three_shards):
    split = SplitTokens(three_shards[0], "train")
    run = lambda **kw: _draw(TrainBatches(split, 4, 32, **kw), 5)  # noqa: E731
    assert _same(run(seed=1), run(seed=1))
    assert not _same(run(seed=1), run(seed=2))
    ranks = [run(seed=1, rank=r, world_size=4) for r in range(4)]
    assert all(not _same(ranks[i], ranks[j]) for i in range(4) for j in range(i + 1, 4))
    assert _same(ranks[0], run(seed=1))  # a rank's stream does not depend on the world size
    with pytest.raises(ValueError, match="rank 4"):
        TrainBatches(split, 4, 32, rank=4, world_size=4)


def test_sampler_state_restores_the_next_batches(three_shards):
    split = SplitTokens(three_shards[0], "train")
    uninterrupted = TrainBatches(split, 4, 32, seed=7, rank=1, world_size=2)
    _draw(uninterrupted, 10)
    state = json.loads(json.dumps(uninterrupted.state_dict()))  # must survive JSON (a checkpoint)
    expected = _draw(uninterrupted, 5)
    resumed = TrainBatches(split, 4, 32, seed=7, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == 10
    assert _same(_draw(resumed, 5), expected)
    other_rank = TrainBatches(split, 4, 32, seed=7, rank=0, world_size=2)
    with pytest.raises(ValueError, match="same seed, rank and data"):
        other_rank.load_state_dict(state)


def test_split_shorter_than_one_window_is_an_error(three_shards):
    split = SplitTokens(three_shards[0], "train")
    TrainBatches(split, 1, 999).next()  # exactly T + 1 tokens: one possible window
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TrainBatches(split, 1, 1000)


def test_train_batches_memory_stays_flat(three_shards):
    sampler = TrainBatches(SplitTokens(three_shards[0], "train"), 8, 64)
    tracemalloc.start()
    try:
        _draw(sampler, 100)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            sampler.next()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes retained over 1000 batches"


@pytest.mark.gpu
def test_train_batches_on_cuda_match_cpu(three_shards):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    split = SplitTokens(three_shards[0], "train")
    cuda, cpu = TrainBatches(split, 4, 32, device="cuda"), TrainBatches(split, 4, 32)
    for (xg, yg), (xc, yc) in zip(_draw(cuda, 3), _draw(cpu, 3)):
        assert xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


# ---------------------------------------------------------------- evaluation windows


def test_eval_windows_worked_examples():
    # 11 tokens -> targets at y-positions 0..9 (t[1..10])
    assert eval_windows(11, 4, 4) == [(0, 4, 0), (4, 8, 0), (8, 10, 0)]
    assert eval_windows(11, 4, 2) == [(0, 4, 0), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert eval_windows(12, 4, 3) == [(0, 4, 0), (3, 7, 1), (6, 10, 1), (9, 11, 1)]
    with pytest.raises(ValueError, match="stride"):
        eval_windows(100, 4, 5)


@pytest.mark.parametrize("N", [2, 5, 64, 65, 66, 1000])
@pytest.mark.parametrize("T, stride", [(16, 16), (16, 8), (16, 5), (16, 1), (1, 1), (7, 6)])
def test_eval_windows_score_every_target_once_in_order(N, T, stride):
    windows = eval_windows(N, T, stride)
    scored = []
    for k, (begin, end, n_context) in enumerate(windows):
        assert 0 <= begin < end <= N - 1 and end - begin <= T
        assert begin == k * stride  # windows start every stride tokens
        if k == 0:
            assert n_context == 0
        elif end - begin == T:  # a full window: exactly T - stride tokens of context
            assert n_context == T - stride
        scored += range(begin + n_context, end)  # y-positions this window scores
    assert scored == list(range(N - 1))  # each target once, in order
    if stride == T:
        assert all(n == 0 for _, _, n in windows)


@pytest.mark.parametrize("T, stride, B", [(16, None, 3), (16, 6, 4), (10, 10, 8)])
def test_eval_batches_rebuild_the_split(T, stride, B):
    tokens = np.random.default_rng(0).integers(0, 50257, size=203).astype(np.uint16)
    batches = EvalBatches(tokens, T, stride, batch_size=B)
    assert batches.n_scored == 202
    got = list(batches)
    assert len(got) == len(batches) == -(-len(batches.windows) // B)
    rows = [(x[i], y[i]) for x, y in got for i in range(len(x))]
    assert len(rows) == len(batches.windows)
    targets = []
    for (x, y), (begin, end, n_context) in zip(rows, batches.windows):
        assert x.shape == y.shape == (T,) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[: end - begin], torch.from_numpy(tokens[begin:end].astype(np.int64)))
        assert (x[end - begin :] == 0).all() and (y[end - begin :] == IGNORE_INDEX).all()
        assert (y[:n_context] == IGNORE_INDEX).all()
        targets.append(y[y != IGNORE_INDEX])
    assert torch.equal(torch.cat(targets), torch.from_numpy(tokens[1:].astype(np.int64)))
    again = list(EvalBatches(tokens, T, stride, batch_size=B))  # deterministic
    assert all(torch.equal(a, b) for (xa, ya), (xb, yb) in zip(got, again) for a, b in ((xa, xb), (ya, yb)))


# ---------------------------------------------------------------- prepare: tokenization is lossless


def test_chunked_encoding_equals_single_call(encoding):
    """Chunks cut where the pre-tokenizer splits anyway: the same tokens as encoding the whole text."""
    rng = np.random.default_rng(0)
    pieces = ["word", "Über", "naïve", "café", "12", "3.5", "'s", "'ll", "'", "!?", "—", "🙂", "👩‍👩‍👧", "日本語",
              " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000", "\x1c", "\x85", "\u2028", "<|endoftext|>"]
    for _ in range(60):
        text = "".join(rng.choice(pieces, size=int(rng.integers(1, 400))))
        expected = encoding.encode_ordinary(text)
        for chunk_chars in (1, 3, 17):
            chunks = prepare.chunk_text(text, chunk_chars)
            assert "".join(chunks) == text
            assert list(prepare.encode_documents([text], threads=2, chunk_chars=chunk_chars)) == expected


def _write_corpus(root: Path) -> list[Path]:
    (root / "sub").mkdir(parents=True)
    lines = [f"Line {i}: naïve café — Ünïcödé, emoji 🙂🚀, CJK 日本語;   spaces\t\ttabs  " for i in range(300)]
    files = {
        root / "a.txt": "\n".join(lines) + "\n",
        root / "sub" / "b.txt": "  leading spaces\n\n\n   \n\r\nCRLF line\r\n<|endoftext|> typed as text\nno final newline",
        root / "sub" / "c.txt": "x" * 5 + "\n" * 7 + "     trailing   \n" * 40,
    }
    for path, text in files.items():
        path.write_bytes(text.encode("utf-8"))
    (root / "ignored.md").write_text("not a .txt file")
    return sorted(files)


def test_prepare_text_round_trips_byte_for_byte(tmp_path, encoding, monkeypatch):
    files = _write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(prepare, "CHUNK_CHARS", 100)  # many chunks per file
    out = tmp_path / "out"
    argv = ["--text", str(tmp_path / "corpus"), "--out_dir", str(out), "--val_fraction", "0.25", "--shard_tokens", "1000"]
    manifest = prepare.main(argv)
    raw = b"".join(p.read_bytes() for p in files)
    train, val = SplitTokens(out, "train"), SplitTokens(out, "val")
    assert len(train.shards) > 1  # --shard_tokens took effect
    stream = np.concatenate([train[:], val[:]])
    assert encoding.decode_bytes(stream.tolist()) == raw
    # The cuts (chunks, shards, train/val) never changed tokenization: each file as if encoded in one call.
    assert stream.tolist() == [t for p in files for t in encoding.encode_ordinary(p.read_bytes().decode("utf-8"))]
    assert 50256 not in stream  # no EOT inserted; "<|endoftext|>" in the text stays text
    assert 0.2 < len(encoding.decode_bytes(val[:].tolist())) / len(raw) < 0.3
    for split, tokens in (("train", train), ("val", val)):
        info = manifest["splits"][split]
        assert info["n_tokens"] == len(tokens) == sum(s["n_tokens"] for s in info["shards"])
        assert info["text_sha1"] == hashlib.sha1(encoding.decode_bytes(tokens[:].tolist())).hexdigest()
    assert [f["path"] for f in manifest["source"]["files"]] == [str(p) for p in files]
    assert "test" not in manifest["splits"] and manifest["offline"] is False
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["command"].endswith("--shard_tokens 1000")

    # A second run with bigger shards removes the first run's extra shard files.
    prepare.main(argv[:-1] + ["100000"])
    reread = SplitTokens(out, "train")
    assert [p.name for p in reread.shards] == ["train_000000.bin"] and reread.manifest["offline"] is False
    write_shard(out / "train_000007.bin", np.arange(5, dtype=np.uint16))  # a stray file the manifest does not list
    with pytest.raises(ShardError, match="not the ones"):
        SplitTokens(out, "train")


@pytest.mark.shared
def test_prepare_offline_on_real_wikitext(tmp_path, wikitext_raw, encoding):
    out = tmp_path / "shards"
    manifest = prepare.main(["--raw_dir", str(wikitext_raw), "--offline", "--out_dir", str(out)])
    valid, test = (wikitext_raw / "wiki.valid.raw").read_bytes(), (wikitext_raw / "wiki.test.raw").read_bytes()
    train_val = np.concatenate([SplitTokens(out, "train")[:], SplitTokens(out, "val")[:]]).tolist()
    assert encoding.decode_bytes(train_val) == valid
    assert encoding.decode_bytes(SplitTokens(out, "test")[:].tolist()) == test
    assert train_val == encoding.encode_ordinary(valid.decode("utf-8"))  # chunking/cut-invariant
    assert manifest["offline"] is True and "offline_layout" in manifest["source"]
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert all(f["verified"] for f in manifest["source"]["files"].values())
    assert manifest["source"]["files"]["val"]["sha1"] == "db78d4db83700cba1b1bf4a9381087043db2876d"


# ---------------------------------------------------------------- prepare: sources and checksums


def _fake_wikitext(folder: Path, splits=("valid", "test")) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {s: "".join(f" = {s} article {i} = \n \n Some text , with @-@ tokens .\n" for i in range(50)).encode() for s in splits}
    for s, b in blobs.items():
        (folder / f"wiki.{s}.raw").write_bytes(b)
    return blobs


def _publish(monkeypatch, blobs):
    """Pretend the fake files are the published ones (their SHA-1 becomes the expected one)."""
    table = dict(prepare.WIKITEXT_FILES)
    for split, (name, _) in prepare.WIKITEXT_FILES.items():
        key = name.split(".")[1]
        if key in blobs:
            table[split] = (name, hashlib.sha1(blobs[key]).hexdigest())
    monkeypatch.setattr(prepare, "WIKITEXT_FILES", table)


def test_checksum_mismatch_is_an_error_unless_allowed(tmp_path, encoding):
    _fake_wikitext(tmp_path / "raw")
    argv = ["--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        prepare.main(argv)
    err = str(e.value)
    assert "wiki.valid.raw" in err and "SHA-1" in err and "db78d4db" in err and "--allow_checksum_mismatch" in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    manifest = prepare.main(argv + ["--allow_checksum_mismatch"])
    assert manifest["source"]["files"]["val"]["verified"] is False


def test_missing_local_splits_are_reported_and_skipped(tmp_path, encoding, monkeypatch, capsys):
    blobs = _fake_wikitext(tmp_path / "raw")
    _publish(monkeypatch, blobs)
    manifest = prepare.main(["--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "out")])
    assert set(manifest["splits"]) == {"val", "test"} and manifest["offline"] is False
    assert "wiki.train.raw is absent" in capsys.readouterr().err
    assert encoding.decode_bytes(SplitTokens(tmp_path / "out", "val")[:].tolist()) == blobs["valid"]


def test_download_verifies_caches_and_extracts(tmp_path, encoding, monkeypatch):
    blobs = _fake_wikitext(tmp_path / "src" / "wikitext-2-raw", splits=("train", "valid", "test"))
    zip_path = tmp_path / "src" / "wikitext-2-raw-v1.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for s in blobs:
            z.write(tmp_path / "src" / "wikitext-2-raw" / f"wiki.{s}.raw", f"wikitext-2-raw/wiki.{s}.raw")
    _publish(monkeypatch, blobs)
    monkeypatch.setattr(prepare, "ZIP_URL", zip_path.as_uri())
    argv = ["--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out")]

    monkeypatch.setattr(prepare, "ZIP_SHA256", "0" * 64)  # a damaged download is refused and not kept
    with pytest.raises(SystemExit, match="SHA-256"):
        prepare.main(argv)
    assert list((tmp_path / "cache").iterdir()) == []

    monkeypatch.setattr(prepare, "ZIP_SHA256", hashlib.sha256(zip_path.read_bytes()).hexdigest())
    manifest = prepare.main(argv)
    assert set(manifest["splits"]) == {"train", "val", "test"} and manifest["source"]["url"] == zip_path.as_uri()
    zip_path.unlink()  # the second run must use the cached copy
    prepare.main(argv)
    assert encoding.decode_bytes(SplitTokens(tmp_path / "out", "train")[:].tolist()) == blobs["train"]


def test_cli_help_shows_each_field_comment_and_default(capsys):
    with pytest.raises(SystemExit):
        prepare.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--out_dir" in help_text and "(default: shards/wikitext2)" in help_text
    assert "train on the head of wiki.valid.raw" in help_text and "--shard_tokens" in help_text
