"""distill.py end to end on a tiny random teacher and tiny shards: the set has the requested size,
valid shards that decode, a consistent manifest, prompts from the real train split; it is
deterministic for a seed; the quality filter drops a degenerate continuation; alpha = -1 text is more
surprising to the teacher than "sample" text."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import distill as distill_cli  # the command line, tested as such below
from data import distill
from data.loader import SplitTokens
from data.shards import open_shard, write_shard
from data.distill import DistillConfig, DistillError, drop_reason
from gpt2 import tokenizer
from gpt2.checkpoint import TrainState, save_checkpoint
from gpt2.cli import build_parser, field_comments, parse_config
from gpt2.config import GPTConfig
from gpt2.metrics.diversity import ngram_keys, repeated_fraction, shared_fraction, top_token_share
from gpt2.model import GPT

VOCAB = 256  # ids < 256 are GPT-2's byte tokens: they decode, and a tiny head keeps every step cheap
P, G = 8, 24  # prompt and generated tokens per sequence


pytestmark = pytest.mark.usefixtures("one_thread")


def spread_out_teacher(path) -> str:
    """A tiny teacher with spread-out logits (so that "plausible" and "rare" differ), saved at `path`: logits
    that depend mostly on the position, so the next-token distribution is far from uniform (a few dozen tokens
    within 10x of the best) and does not favour repeating the last token. test_token_edit.py uses it too."""
    teacher = GPT(GPTConfig(vocab_size=VOCAB, n_positions=64, n_layer=2, n_head=2, n_embd=32), seed=0)
    with torch.no_grad():
        teacher.transformer.wte.weight.mul_(10.0)
        teacher.transformer.wpe.weight.mul_(100.0)
    save_checkpoint(path, TrainState(model=teacher.state_dict(), model_config=dataclasses.asdict(teacher.config)))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A teacher with spread-out logits (so that "plausible" and "rare" differ) and a train split."""
    root = tmp_path_factory.mktemp("distill")
    spread_out_teacher(root / "teacher.pt")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    write_shard(data / "train_000000.bin", rng.integers(0, VOCAB, size=3000))
    write_shard(data / "val_000000.bin", rng.integers(0, VOCAB, size=500))
    return {"root": root, "teacher": str(root / "teacher.pt"), "data": str(data)}


def config(world, out: str, **overrides) -> DistillConfig:
    settings = dict(teacher=world["teacher"], data_dir=world["data"], out_dir=str(world["root"] / out), n_tokens=1000,
                    prompt_tokens=P, gen_tokens=G, batch_size=8, seed=0, device="cpu", dtype="fp32",
                    min_gen_tokens=4)
    return DistillConfig(**{**settings, **overrides})


def sequences(out_dir) -> list[np.ndarray]:
    """The sequences of a written set: split at the separators (each one starts a sequence)."""
    stream = SplitTokens(out_dir, "train")[:].astype(np.int64)
    assert stream[0] == tokenizer.EOT_ID, "the set must start with a separator"
    cuts = np.flatnonzero(stream == tokenizer.EOT_ID)
    return [stream[a + 1 : b] for a, b in zip(cuts, list(cuts[1:]) + [len(stream)])]


def test_a_set_of_the_requested_size_with_a_consistent_manifest(world, encoding):
    manifest = distill.distill(config(world, "hard"), argv=["--n_tokens", "1000"])
    out = Path(world["root"] / "hard")
    c, q = manifest["counts"], manifest["quality"]

    assert SplitTokens(out, "train").n_tokens == c["tokens"] == c["requested_tokens"] == 1000
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for shard in manifest["splits"]["train"]["shards"]:
        open_shard(out / shard["file"])  # valid header, size and ids
    seqs = sequences(out)
    assert len(seqs) == c["sequences"] == c["separator_tokens"] == manifest["splits"]["train"]["n_sequences"]
    assert c["separator_tokens"] + c["prompt_tokens"] + c["generated_tokens"] == c["tokens"]
    assert all(len(s) == P + G for s in seqs[:-1]) and 0 < len(seqs[-1]) <= P + G  # only the last one is cut
    assert c["last_sequence_cut"] == (len(seqs[-1]) < P + G)
    assert c["sequences_generated"] == c["sequences"] + manifest["filter"]["dropped_total"]

    # every prompt is a window of the real train split
    train = SplitTokens(world["data"], "train")[:].astype(np.int64)
    windows = {tuple(train[i : i + P]) for i in range(len(train) - P + 1)}
    assert all(tuple(s[:P]) in windows for s in seqs[:-1])
    assert not all(tuple(s[P : 2 * P]) in windows for s in seqs[:-1])  # the rest is the teacher's, not copied

    # the manifest's statistics are those of the generated tokens actually stored
    generated = [s[P:] for s in seqs]
    codes = [tuple(g[i : i + 2]) for g in generated for i in range(len(g) - 1)]
    assert q["distinct_2"] == pytest.approx(len(set(codes)) / len(codes))
    assert q["repeated_4gram_fraction"] == pytest.approx(np.mean([repeated_fraction(g) for g in generated]))
    assert 0 < q["mean_surprisal_nats"] < 2 * np.log(VOCAB)
    assert manifest["sampling"] == {"strategy": "sample", "alpha": -1.0, "weights": "p^-1.0 inside the plausible set",
                                    "min_p": 0.1}  # distill.py's default
    assert manifest["teacher"]["source"] == world["teacher"] and manifest["seed"] == 0
    assert manifest["command"] == "python distill.py --n_tokens 1000"

    samples = (out / "samples.txt").read_text()
    assert samples.count("[PROMPT]") == min(20, len(seqs)) and tokenizer.decode(seqs[0][P:].tolist()) in samples


def test_deterministic_for_a_seed(world):
    def shard_bytes(out):
        return (world["root"] / out / "train_000000.bin").read_bytes()

    distill.distill(config(world, "a", n_tokens=600, preview=0))
    distill.distill(config(world, "b", n_tokens=600, preview=0))
    distill.distill(config(world, "c", n_tokens=600, preview=0, seed=1))
    assert shard_bytes("a") == shard_bytes("b")
    assert shard_bytes("a") != shard_bytes("c")


def test_inverted_text_is_more_surprising_than_sampled_text(world):
    """Same teacher, prompts and seed; alpha = -1 draws p^-1 inside the plausible set, alpha = 1 draws p."""
    hard = distill.distill(config(world, "s-hard", alpha=-1.0, min_p=0.1, preview=0))
    sample = distill.distill(config(world, "s-sample", alpha=1.0, min_p=0.1, preview=0))
    assert [s[:P].tolist() for s in sequences(world["root"] / "s-hard")] == \
        [s[:P].tolist() for s in sequences(world["root"] / "s-sample")]  # the same prompts
    assert hard["quality"]["mean_surprisal_nats"] > sample["quality"]["mean_surprisal_nats"] + 0.3


def test_the_filter_drops_a_degenerate_continuation(world, monkeypatch, encoding):
    """Row 0 of the first batch is replaced by one token repeated: it must be dropped, the rest kept."""
    real_generate, calls = distill.generate, []

    def generate_with_a_loop(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        if not calls:
            out.tokens[0, out.prompt_len:] = 7
        calls.append(1)
        return out

    monkeypatch.setattr(distill, "generate", generate_with_a_loop)
    manifest = distill.distill(config(world, "filtered", preview=0))
    assert manifest["filter"]["dropped"] == {"too_short": 0, "repeated_4grams": 1, "single_token": 0,
                                             "near_duplicate": 0}
    assert manifest["counts"]["tokens"] == 1000  # another sequence took its place
    assert not any((s[P:] == 7).all() for s in sequences(world["root"] / "filtered"))


def copying_rows(monkeypatch) -> None:
    """Every batch's rows 1-3 continue their prompts with row 0's continuation: a teacher that repeats itself."""
    real_generate = distill.generate

    def generate_with_copies(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        out.tokens[1:4, out.prompt_len:] = out.tokens[0, out.prompt_len:]
        out.lengths[1:4], out.finished[1:4] = out.lengths[0], out.finished[0]
        return out

    monkeypatch.setattr(distill, "generate", generate_with_copies)


def grams(tokens, n: int) -> set[tuple]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def test_near_duplicates_across_sequences_are_dropped(world, monkeypatch):
    copying_rows(monkeypatch)
    manifest = distill.distill(config(world, "dedup", max_shared_ngrams=0.5, dedup_n=6, preview=0))
    assert manifest["filter"]["dropped"]["near_duplicate"] >= 3 * manifest["timing"]["batches"] - 3  # the copies
    assert manifest["filter"]["max_shared_ngrams"] == 0.5 and manifest["filter"]["dedup_n"] == 6
    assert manifest["counts"]["tokens"] == SplitTokens(world["root"] / "dedup", "train").n_tokens == 1000
    seqs, seen = sequences(world["root"] / "dedup"), set()
    for s in seqs[:-1]:  # (the last one, cut to fit, was checked whole)
        generated = [tuple(s[P:][i : i + 6]) for i in range(len(s) - P - 5)]
        assert sum(g in seen for g in generated) <= 0.5 * len(generated)
        seen |= grams(s, 6)


def test_the_near_duplicate_threshold_counts_the_ngrams_of_earlier_kept_sequences():
    def first(max_shared_ngrams: float):
        built = distill.SetBuilder(DistillConfig(max_shared_ngrams=max_shared_ngrams, dedup_n=2), target=100)
        built.keep({"offset": 0, "prompt": np.array([1, 2]), "generated": np.array([3, 4, 5]), "logprobs": np.zeros(3)})
        return built

    built = first(0.5)
    assert not built.near_duplicate(np.array([3, 4, 5, 9, 8]))  # 34 45 of 34 45 59 98: 1/2, not more
    assert built.near_duplicate(np.array([2, 3, 4, 5, 9]))  # 23 (prompt into continuation) 34 45 of four: 3/4
    assert not built.near_duplicate(np.array([4]))  # no 2-gram: nothing shared
    assert shared_fraction(np.array([1, 2, 1, 2]), set(ngram_keys(np.array([1, 2]), 2)), 2) == 2 / 3  # with repeats
    off = first(1.0)
    assert not off.near_duplicate(np.array([3, 4, 5])) and not off.seen  # off: nothing compared, nothing remembered


def test_near_duplicates_are_kept_by_default(world, monkeypatch):
    copying_rows(monkeypatch)
    assert DistillConfig().max_shared_ngrams == 1.0
    manifest = distill.distill(config(world, "no-dedup", preview=0))
    assert manifest["filter"]["dropped"]["near_duplicate"] == 0
    generated = [tuple(s[P:]) for s in sequences(world["root"] / "no-dedup")[:-1]]
    assert len(set(generated)) < len(generated)  # the copies are in the set


def test_drop_reasons():
    cfg = DistillConfig(max_repeat_4gram=0.3, max_token_share=0.3, min_gen_tokens=16)
    loop = np.array([1, 2, 3, 4] * 10)
    assert repeated_fraction(loop) == pytest.approx(1 - 4 / 37)
    assert drop_reason(loop, False, cfg) == "repeated_4grams"
    every_other = np.array([5, 10, 5, 11, 5, 12, 5, 13, 5, 14, 5, 15, 5, 16, 5, 17, 5, 18, 5, 19])  # no 4-gram repeats
    assert repeated_fraction(every_other) == 0 and top_token_share(every_other) == 0.5
    assert drop_reason(every_other, False, cfg) == "single_token"
    varied = np.arange(40)
    assert drop_reason(varied, False, cfg) is None
    assert drop_reason(varied[:10], True, cfg) == "too_short"  # ended at <|endoftext|> early
    assert drop_reason(varied[:10], False, cfg) is None  # cut by the size limit, not short


def test_a_teacher_that_only_degenerates_stops_with_a_message(world, monkeypatch):
    real_generate = distill.generate

    def always_looping(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        out.tokens[:, out.prompt_len:] = 7
        return out

    monkeypatch.setattr(distill, "generate", always_looping)
    with pytest.raises(DistillError, match="dropped every sequence of 2 batches"):
        distill.distill(config(world, "never", patience=2))


def test_command_line(world, capsys):
    comments = field_comments(DistillConfig)
    assert "less probable" in comments["alpha"] and "teacher" in build_parser(DistillConfig).format_help()
    cfg = parse_config(DistillConfig, ["--alpha", "0.5", "--min_p", "0.2", "--fraction", "0.5"])
    assert cfg.sampling().alpha == 0.5 and cfg.sampling().min_p == 0.2 and cfg.fraction == 0.5
    for bad, message in ((["--n_tokens", "10", "--fraction", "0.1"], "not both"),
                         (["--alpha", "-1", "--min_p", "0"], "plausible set"),
                         (["--max_token_share", "0"], "max_token_share"),
                         (["--max_shared_ngrams", "1.5"], "max_shared_ngrams"), (["--dedup_n", "0"], "dedup_n")):
        with pytest.raises(SystemExit):
            parse_config(DistillConfig, bad)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot load --teacher"):
        distill_cli.main(["--teacher", str(world["root"] / "missing.pt"), "--data_dir", world["data"],
                      "--out_dir", str(world["root"] / "x"), "--device", "cpu"])
