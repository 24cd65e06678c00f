"""sample.py: a short job by default: eager decoding, the weights in the device's precision (--dtype as asked)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sample
from gpt2 import GPT, GPTConfig
from gpt2.checkpoint import TrainState, save_checkpoint
from gpt2.device import resolve_device_and_dtype

TINY = GPTConfig(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)  # the BPE's vocabulary


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """Runs sample.py on a tiny checkpoint; each generate() call's model dtype and compile flag, noted."""
    model = GPT(TINY, seed=0)
    save_checkpoint(tmp_path / "latest.pt", TrainState(model=model.state_dict(), model_config=dataclasses.asdict(TINY)))
    seen, real_generate = [], sample.generate

    def generate(model, prompt, n, **kw):
        seen.append((model.lm_head.weight.dtype, kw["compile"]))
        return real_generate(model, prompt, n, **kw)

    monkeypatch.setattr(sample, "generate", generate)
    return lambda *flags: sample.main(["--model", str(tmp_path), "--prompt", "Hello", "--max_new_tokens", "3",
                                       "--num_samples", "2", "--device", "cpu", *flags]) or seen.pop()


def test_defaults_decode_eagerly_in_the_devices_precision(calls, encoding, capsys):
    assert calls() == (resolve_device_and_dtype("cpu", "auto")[1], False)
    out = capsys.readouterr().out
    assert "eager decoding" in out and out.count("=== sample") == 2


def test_dtype_as_asked(calls, encoding, capsys):
    assert calls("--dtype", "bf16") == (torch.bfloat16, False)
    assert "cpu, weights in bfloat16, eager decoding" in capsys.readouterr().out
