"""Checkpoints: atomic writes survive a crash mid-write, loading errors name the problem, load_model
reads every kind of source, and the Hugging Face export matches transformers' GPT2LMHeadModel."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, TrainState, load_checkpoint, load_model, save_checkpoint
from gpt2.checkpoint import main as export_main

TINY = GPTConfig(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def state_of(model: GPT, **extra) -> TrainState:
    return TrainState(model=model.state_dict(), model_config=dataclasses.asdict(model.config), **extra)


def test_round_trip_keeps_weights_and_tying(tmp_path):
    model = GPT(TINY, seed=3).eval()
    save_checkpoint(tmp_path / "latest.pt", state_of(model, step=7))
    state = load_checkpoint(tmp_path / "latest.pt")
    assert state.step == 7 and state.versions["torch"] == torch.__version__
    loaded = load_model(tmp_path / "latest.pt")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still one tensor
    assert not loaded.training
    idx = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)
    half = load_model(tmp_path / "latest.pt", dtype=torch.bfloat16)
    assert half.transformer.wte.weight.dtype == torch.bfloat16


def test_run_directory_prefers_best(tmp_path):
    save_checkpoint(tmp_path / "latest.pt", state_of(GPT(TINY, seed=1)))
    save_checkpoint(tmp_path / "best.pt", state_of(GPT(TINY, seed=2)))
    expected = GPT(TINY, seed=2).transformer.wte.weight
    assert torch.equal(load_model(tmp_path).transformer.wte.weight, expected)
    (tmp_path / "best.pt").unlink()
    assert torch.equal(load_model(tmp_path).transformer.wte.weight, GPT(TINY, seed=1).transformer.wte.weight)


def test_a_checkpoint_written_as_a_plain_dict_still_loads(tmp_path):
    """The layout on disk is a dict of the set fields: what train.py wrote before TrainState owned it (a
    latest.pt with val_loss None, the sweep's teacher.pt with its unseen_rows_shared) loads field by field."""
    model = GPT(TINY, seed=4)
    old = {"format": FORMAT, "version": FORMAT_VERSION, "model": model.state_dict(),
           "model_config": dataclasses.asdict(TINY), "step": 3, "config": {"seed": 1}, "derived": {"world_size": 1},
           "val_loss": None, "optimizer": {"state": {}, "param_groups": []}, "scaler": {}, "batches": [{}],
           "best_val_loss": 2.5, "elapsed_s": 1.0, "unseen_rows_shared": 12, "versions": {"torch": "x"}}
    torch.save(old, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")
    assert (state.step, state.val_loss, state.best_val_loss, state.unseen_rows_shared) == (3, None, 2.5, 12)
    assert torch.equal(load_model(tmp_path / "old.pt").transformer.wte.weight, model.transformer.wte.weight)
    torch.save({**old, "mystery": 1}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="mystery"):
        load_checkpoint(tmp_path / "newer.pt")


def test_prefixed_state_is_refused(tmp_path):
    state = {"_orig_mod." + k: v for k, v in GPT(TINY).state_dict().items()}
    with pytest.raises(ValueError, match="plain module"):
        save_checkpoint(tmp_path / "x.pt", TrainState(model=state, model_config=dataclasses.asdict(TINY)))


def test_write_killed_midway_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, state_of(GPT(TINY, seed=1), step=1))
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the temporary file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state_of(GPT(TINY, seed=2), step=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left behind


def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, state_of(GPT(TINY)))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_model(foreign)


def test_load_model_reads_hugging_face_folders(tmp_path):
    from gpt2.weights import save_hf

    model = GPT(TINY, seed=5).eval()
    save_hf(model, tmp_path / "hf")
    loaded = load_model(tmp_path / "hf")
    assert torch.equal(loaded.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)


def test_export_matches_transformers(tmp_path):
    """`python -m gpt2.checkpoint export` writes a folder that transformers loads to the same logits."""
    transformers = pytest.importorskip("transformers")
    model = GPT(TINY, seed=4).eval()
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best.pt", state_of(model))
    export_main(["export", str(tmp_path / "run"), str(tmp_path / "hf")])  # python -m gpt2.checkpoint export RUN HF
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), rtol=1e-5, atol=1e-5)


def test_a_bf16_export_is_half_the_size_and_trains_in_float32(tmp_path):
    """`export --dtype bfloat16` rounds the weights to bf16 (half the file); a run started from that folder
    (train.py --init) holds float32 weights, the rounded values, for AdamW to update."""
    from gpt2.train_config import TrainConfig
    from gpt2.trainer import build_model

    model = GPT(TINY, seed=4).eval()
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best.pt", state_of(model))
    export_main(["export", str(tmp_path / "run"), str(tmp_path / "fp32")])
    export_main(["export", str(tmp_path / "run"), str(tmp_path / "bf16"), "--dtype", "bfloat16"])
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("fp32", "bf16")]
    assert sizes[1] < 0.52 * sizes[0]
    assert load_model(tmp_path / "bf16").transformer.wte.weight.dtype == torch.bfloat16
    trained = build_model(TrainConfig(init=str(tmp_path / "bf16"), seq_len=16), torch.device("cpu"))
    assert {p.dtype for p in trained.parameters()} == {torch.float32}
    assert torch.equal(trained.transformer.wte.weight, model.transformer.wte.weight.to(torch.bfloat16).float())
