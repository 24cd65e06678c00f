"""train.py --ignore_first_tokens N: the targets among the first N tokens after each <|endoftext|> are left out
of the loss. The ignored targets are exactly those at in-sequence index < N, also where a window starts inside
a sequence; N = 0 gives today's batches byte for byte, and N > 0 the same windows and sampler state; a
micro-batch with nothing to score gives loss 0, not nan; a tiny run with the option trains, to another loss;
resuming with another N is refused."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import data.loader
import train as train_cli  # the command line, tested as such
from data.loader import TrainBatches, eot_positions, ignore_sequence_starts, micro_batch_streams
from data.shards import write_shard
from gpt2 import trainer
from gpt2.checkpoint import TrainState
from gpt2.cli import parse_config
from gpt2.config import GPTConfig
from gpt2.losses import IGNORE_INDEX
from gpt2.model import GPT
from gpt2.tokenizer import EOT_ID
from gpt2.train_config import TrainConfig
from gpt2.training import TrainingStopped, lm_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def stream_of(lengths: list[int], seed: int = 0, lead: int = 0) -> np.ndarray:
    """`lead` tokens of text with no separator before them, then each sequence preceded by EOT."""
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 200, size=lead)]
    for n in lengths:
        parts += [np.array([EOT_ID]), rng.integers(0, 200, size=n)]
    return np.concatenate(parts).astype(np.uint16)


def reference_ignored(tokens: np.ndarray, n: int) -> np.ndarray:
    """Per token, the plain definition: in-sequence index (position - last EOT before it - 1) < n."""
    ignored, last = np.zeros(len(tokens), dtype=bool), None
    for p in range(len(tokens)):
        ignored[p] = last is not None and p - last - 1 < n
        if tokens[p] == EOT_ID:
            last = p
    return ignored


def starts_of(sampler: TrainBatches) -> np.ndarray:
    """The window starts the sampler's next batch will use: its generator's next draw, on a copy."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = sampler.rng.bit_generator.state
    return rng.integers(0, len(sampler.tokens) - sampler.seq_len, size=sampler.batch_size)


def test_the_ignored_targets_are_exactly_those_at_in_sequence_index_below_n():
    # sequences longer and shorter than N, two EOTs in a row, text before the first EOT; T < N, so many
    # windows start inside a sequence whose EOT lies before the window
    tokens = stream_of([40, 5, 0, 70, 12, 33, 100, 8], lead=20)
    N, T = 32, 24
    reference = reference_ignored(tokens, N)
    plain = TrainBatches(tokens, 16, T, seed=1)
    sampler = TrainBatches(tokens, 16, T, seed=1, ignore_first_tokens=N)
    inside = 0
    for _ in range(20):
        starts = starts_of(sampler)
        (x0, y0), (x, y) = plain.next(), sampler.next()
        assert torch.equal(x, x0)  # the same windows
        targets = starts[:, None] + 1 + np.arange(T)  # (B, T) the position of each target
        np.testing.assert_array_equal(y.numpy() == IGNORE_INDEX, reference[targets])
        np.testing.assert_array_equal(y[y != IGNORE_INDEX], y0[y != IGNORE_INDEX])  # the rest: the real targets
        inside += int(sum(reference[s + 1] and tokens[s] != EOT_ID for s in starts))
    assert inside > 20  # many windows began inside a sequence whose separator lay before them
    assert plain.state_dict() == sampler.state_dict()  # the same draws: resume state unchanged


def test_hand_worked_windows():
    eots = np.array([10, 50])
    y = np.zeros((3, 16), dtype=np.int64)
    ignore_sequence_starts(y, np.array([20, 30, 45]), eots, 32)
    assert (y[0] == IGNORE_INDEX).all()  # targets 21..36, all within 11..42 (the sequence after EOT 10)
    assert (y[1, :12] == IGNORE_INDEX).all() and (y[1, 12:] == 0).all()  # targets 31..46: 31..42 ignored
    assert (y[2, :5] == 0).all() and (y[2, 5:] == IGNORE_INDEX).all()  # 46..61: 46..50 count, 51.. ignored
    y = np.zeros((1, 8), dtype=np.int64)
    ignore_sequence_starts(y, np.array([2]), np.zeros(0, dtype=np.int64), 32)  # a split without any EOT
    assert (y == 0).all()


def test_n_0_leaves_the_batches_byte_identical():
    tokens = stream_of([40, 5, 70, 12, 33], lead=3)
    today, zero = TrainBatches(tokens, 8, 16, seed=3), TrainBatches(tokens, 8, 16, seed=3, ignore_first_tokens=0)
    for _ in range(5):
        (x0, y0), (x1, y1) = today.next(), zero.next()
        assert x0.numpy().tobytes() == x1.numpy().tobytes() and y0.numpy().tobytes() == y1.numpy().tobytes()
    assert zero.eots is None  # nothing read for N = 0


def test_eot_positions_are_found_block_by_block():
    tokens = stream_of([40, 5, 0, 70], lead=7)
    expected = np.flatnonzero(tokens == EOT_ID)
    np.testing.assert_array_equal(eot_positions(tokens, block=16), expected)
    np.testing.assert_array_equal(eot_positions(tokens), expected)
    assert eot_positions(tokens[:7]).dtype == np.int64 and len(eot_positions(tokens[:7])) == 0


def test_a_micro_batch_with_every_target_ignored_counts_0_not_nan():
    model = GPT(GPTConfig(vocab_size=256, n_positions=16, n_layer=1, n_head=2, n_embd=32), seed=0)  # the runs' shape:
    x = torch.randint(0, 256, (2, 8))  # one compiled loss chunk for the file
    loss = lm_loss(model, x, torch.full((2, 8), IGNORE_INDEX), student=model)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    y = torch.randint(0, 256, (2, 8))
    torch.testing.assert_close(lm_loss(model, x, y, student=model),
                               torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()))


# ---------------------------------------------------------------- a training run

SEP = 255  # a tiny model's vocabulary (256) has no room for GPT-2's 50256: the toy set's separator, for the loader


def toy_set(root: Path) -> Path:
    """Sequences of a 24-token learnable "prompt" sentence and 24 random tokens, as a distilled set holds them."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 200, size=24)
    stream = np.concatenate([np.concatenate([[SEP], prompt, rng.integers(0, 200, size=24)]) for _ in range(60)])
    root.mkdir()
    write_shard(root / "train_000000.bin", stream)
    write_shard(root / "val_000000.bin", stream[:400])
    return root


@pytest.fixture
def tiny_runs(tmp_path, monkeypatch):
    """run(N, *flags): train.py's command line on the toy set; the logged training losses."""
    monkeypatch.setattr(trainer, "GPTConfig", functools.partial(GPTConfig, vocab_size=256))
    monkeypatch.setattr(data.loader, "EOT_ID", SEP)
    data_dir = toy_set(tmp_path / "data")

    def run(n: int, *flags: str) -> list[float]:
        out_dir = tmp_path / f"run{n}"
        train_cli.main(["--init", "scratch", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--dropout", "0",
                        "--data_dir", str(data_dir), "--out_dir", str(out_dir), "--seq_len", "16",
                        "--micro_batch_size", "2", "--total_batch_tokens", "64", "--lr", "1e-2", "--min_lr", "1e-3",
                        "--warmup_steps", "2", "--max_steps", "40", "--eval_interval", "40", "--device", "cpu",
                        "--dtype", "fp32", "--no-compile", "--seed", "0", "--ignore_first_tokens", str(n), *flags])
        lines = (out_dir / "log.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]

    return run, tmp_path


def test_a_tiny_run_trains_with_the_option_to_another_loss(tiny_runs):
    run, root = tiny_runs
    every, prompts_out = run(0), run(24)  # N = 24: the learnable prompt is out of the loss
    assert len(prompts_out) == 40 and all(np.isfinite(prompts_out))
    assert np.mean(prompts_out[-5:]) > np.mean(every[-5:]) + 1  # the prompt was the part there was to learn
    assert json.loads((root / "run24" / "run.json").read_text())["config"]["ignore_first_tokens"] == 24
    # windows of 16 targets from a 48-token sequence's first 40: many a micro-batch has nothing to score
    losses = run(40, "--micro_batch_size", "1", "--total_batch_tokens", "16")
    assert all(np.isfinite(losses)) and 0.0 in losses


def test_command_line_and_resume_must_match():
    assert parse_config(TrainConfig, ["--ignore_first_tokens", "32"]).ignore_first_tokens == 32
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--ignore_first_tokens", "-1"])
    cfg = TrainConfig(ignore_first_tokens=32)
    derived = {"world_size": 1, "train_tokens": 100}
    old = {k: v for k, v in vars(TrainConfig()).items() if k != "ignore_first_tokens"}  # before the option existed
    trainer.check_resumable(TrainState(model={}, model_config={}, config=old, derived=derived), TrainConfig(),
                            derived, Path("latest.pt"))
    with pytest.raises(TrainingStopped, match="ignore_first_tokens=0 in the checkpoint, 32 now"):
        trainer.check_resumable(TrainState(model={}, model_config={}, config=old, derived=derived), cfg,
                                derived, Path("latest.pt"))


def test_a_split_without_separators_says_every_target_counts(tmp_path):
    write_shard(tmp_path / "train_000000.bin", np.arange(100) % 200)
    with pytest.warns(UserWarning, match="holds no <\\|endoftext\\|>, so no sequence start is known and every target"):
        (batches,) = micro_batch_streams(tmp_path, 2, 8, seed=0, rank=0, accum=1, world=1, ignore_first_tokens=4)
    assert (batches.next()[1] != IGNORE_INDEX).all()
