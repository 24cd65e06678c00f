"""Time to gain: thresholds on hand-made curves, the curve read from a tiny real run's log.jsonl (and from one
written by hand), and its plot with and without matplotlib."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.loader import training_data
from data.shards import write_shard
from gpt2 import trainer
from gpt2.config import GPTConfig
from gpt2.train_config import TrainConfig
from studies.plots import curves_plot
from studies.time_to_gain import time_to_gain, val_curve

CURVE = [{"step": 0, "val_loss": 6.0, "elapsed_s": 0.0}, {"step": 10, "val_loss": 5.5, "elapsed_s": 100.0},
         {"step": 20, "val_loss": 5.0, "elapsed_s": 210.0}, {"step": 30, "val_loss": 5.2, "elapsed_s": 320.0},
         {"step": 40, "val_loss": 4.4, "elapsed_s": 430.0}]


def test_first_evaluation_at_or_below_each_threshold():
    """Gain 6 - 4 = 2: 50% is loss 5.0, reached exactly at step 20 (<=, not <); 80% is 4.4, at step 40 (the
    rise at step 30 does not undo step 20); 25% is 5.5, at step 10. No interpolation between evaluations."""
    got = time_to_gain(CURVE, start_loss=6.0, end_loss=4.0, fractions=(0.5, 0.8, 0.25))
    assert got["gain"] == 2.0 and got["extra_seconds"] == 0.0
    assert [(r["fraction"], r["threshold"], r["step"], r["seconds"]) for r in got["reached"]] == [
        (0.5, 5.0, 20, 210.0), (0.8, pytest.approx(4.4), 40, 430.0), (0.25, 5.5, 10, 100.0)]


def test_never_reached_and_extra_seconds():
    got = time_to_gain(CURVE, start_loss=6.0, end_loss=4.0, fractions=(0.5, 0.9, 1.0), extra_seconds=55.5)
    assert [(r["step"], r["seconds"]) for r in got["reached"]] == [(20, 265.5), (None, None), (None, None)]
    assert time_to_gain([], 6.0, 4.0)["reached"][0]["step"] is None  # a run with no evaluation reaches nothing
    default = time_to_gain(CURVE, 6.0, 4.0)  # fractions 0.5 and 0.8
    assert [r["fraction"] for r in default["reached"]] == [0.5, 0.8]


def test_a_loss_that_is_not_a_gain_is_rejected():
    with pytest.raises(ValueError, match="not a gain"):
        time_to_gain(CURVE, start_loss=4.0, end_loss=6.0)
    with pytest.raises(ValueError, match="not a gain"):
        time_to_gain(CURVE, start_loss=5.0, end_loss=5.0)
    with pytest.raises(ValueError, match=r"fraction 1.5 .* \(0, 1\]"):
        time_to_gain(CURVE, 6.0, 4.0, fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match="fraction 0 "):
        time_to_gain(CURVE, 6.0, 4.0, fractions=(0,))


def test_val_curve_of_a_tiny_run(tmp_path, monkeypatch, one_thread):
    """gpt2.trainer's own log: evaluations at steps 0, 3 and 6; each takes the elapsed_s of its step's train line
    (0 at step 0), the times rise, the losses are the eval lines'."""
    monkeypatch.setattr(trainer, "GPTConfig", functools.partial(GPTConfig, vocab_size=256))
    rng = np.random.default_rng(0)
    stream = np.tile(rng.integers(0, 200, size=48), 40)
    (tmp_path / "data").mkdir()
    write_shard(tmp_path / "data" / "train_000000.bin", stream[:1600])
    write_shard(tmp_path / "data" / "val_000000.bin", stream[1600:])
    cfg = TrainConfig(init="scratch", n_layer=1, n_head=2, n_embd=16, dropout=0.0, data_dir=str(tmp_path / "data"),
                      out_dir=str(tmp_path / "run"), seq_len=16, micro_batch_size=4, total_batch_tokens=64,
                      max_steps=6, eval_interval=3, device="cpu", dtype="fp32", compile=False, seed=0)
    trainer.train(cfg, training_data(cfg))
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_time = {r["step"]: r["elapsed_s"] for r in lines if r["kind"] == "train"}
    curve = val_curve(tmp_path / "run")
    assert [p["step"] for p in curve] == [0, 3, 6]
    assert [p["val_loss"] for p in curve] == [r["val_loss"] for r in lines if r["kind"] == "eval"]
    assert [p["elapsed_s"] for p in curve] == [0.0, train_time[3], train_time[6]]
    assert 0.0 < curve[1]["elapsed_s"] < curve[2]["elapsed_s"]


def _write_log(run_dir: Path, records: list, tail: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run_dir


def test_val_curve_of_a_hand_written_log(tmp_path):
    """The trainer's shape: the train line of a step, then its eval line; a line cut short by a killed run is
    skipped; an eval line with no train line of its step is a damaged log, said so."""
    records = [{"kind": "eval", "step": 0, "val_loss": 6.5, "val_ppl": 665.1, "val_tokens": 999},
               {"kind": "train", "step": 1, "loss": 6.6, "lr": 1e-3, "grad_norm": 1.0, "tokens_seen": 4096,
                "tok_per_s": 900.0, "elapsed_s": 9.5},
               {"kind": "train", "step": 2, "loss": 6.1, "lr": 1e-3, "grad_norm": 1.0, "tokens_seen": 8192,
                "tok_per_s": 900.0, "elapsed_s": 14.0},
               {"kind": "eval", "step": 2, "val_loss": 5.9, "val_ppl": 365.0, "val_tokens": 999}]
    run = _write_log(tmp_path / "run", records, tail='{"kind": "train", "step": 3, "lo')
    assert val_curve(run) == [{"step": 0, "val_loss": 6.5, "elapsed_s": 0.0},
                              {"step": 2, "val_loss": 5.9, "elapsed_s": 14.0}]
    damaged = _write_log(tmp_path / "damaged", [records[0], records[3]])
    with pytest.raises(ValueError, match="step 2 has no train line"):
        val_curve(damaged)


def test_curves_plot_without_matplotlib(tmp_path, monkeypatch):
    """No matplotlib: no file, and a note that says why."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    note = curves_plot({"real": CURVE}, tmp_path / "curves.png", {"50% of the gain": 5.0})
    assert isinstance(note, str) and "matplotlib is not installed" in note and not (tmp_path / "curves.png").exists()


def test_curves_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = curves_plot({"real": CURVE, "alpha=1": CURVE[:3]}, tmp_path / "plots" / "curves.png",
                       {"50% of the gain": 5.0, "80%": 4.4})
    assert path == tmp_path / "plots" / "curves.png" and path.stat().st_size > 0
