"""The hand-written GPT-2 module: shapes, initialisation, tying, positions and cached forward passes.
Parity with transformers' logits lives in tests/test_weights.py (it goes through the loader)."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.losses import linear_cross_entropy

TINY = GPTConfig(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def test_published_shapes_and_parameter_count():
    # 124,439,808 is the published count for gpt2 with the head tied (counted once).
    with torch.device("meta"):
        assert GPT(GPTConfig.from_name("gpt2")).num_params() == 124_439_808
        assert GPT(GPTConfig.from_name("gpt2-medium")).num_params() == 354_823_168
    with pytest.raises(ValueError, match="gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        GPTConfig.from_name("gpt3")


def test_bad_config_is_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


def test_hf_parameter_names_and_tied_head():
    model = GPT(TINY)
    names = set(model.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "lm_head.weight",
            "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.bias",
            "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight",
            "transformer.h.1.ln_1.bias", "transformer.h.1.ln_2.weight"} <= names
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_initialisation_is_seeded_and_gpt2_scaled():
    cfg = GPTConfig(vocab_size=4096, n_positions=64, n_embd=256, n_layer=8, n_head=4)
    a, b, c = GPT(cfg, seed=1), GPT(cfg, seed=1), GPT(cfg, seed=2)
    assert torch.equal(a.transformer.h[3].mlp.c_fc.weight, b.transformer.h[3].mlp.c_fc.weight)
    assert not torch.equal(a.transformer.h[3].mlp.c_fc.weight, c.transformer.h[3].mlp.c_fc.weight)
    std = lambda p: p.detach().float().std().item()  # noqa: E731
    assert std(a.transformer.wte.weight) == pytest.approx(0.02, rel=0.02)
    assert std(a.transformer.h[0].attn.c_attn.weight) == pytest.approx(0.02, rel=0.02)
    assert std(a.transformer.h[0].mlp.c_proj.weight) == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.02)
    assert std(a.transformer.h[0].attn.c_proj.weight) == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.03)
    assert torch.all(a.transformer.h[0].attn.c_attn.bias == 0)
    assert torch.all(a.transformer.ln_f.weight == 1) and torch.all(a.transformer.ln_f.bias == 0)


def test_full_logits_by_default_and_loss_is_mean_cross_entropy():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (3, 10))
    logits = model(idx)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 10, TINY.vocab_size)
    targets = torch.randint(0, TINY.vocab_size, (3, 10))
    targets[0, :4] = -100  # ignored positions
    loss = linear_cross_entropy(model(idx, return_hidden=True), model.lm_head.weight, targets)
    keep = targets.view(-1) != -100
    expected = -torch.log_softmax(logits.view(-1, TINY.vocab_size), -1)[keep].gather(1, targets.view(-1)[keep, None]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_causality_future_tokens_do_not_change_past_logits():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % TINY.vocab_size
    a = model(idx)
    b = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_input_pos_uses_the_true_position_embedding():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 1))
    a = model(idx, input_pos=torch.tensor([0]), kv_caches=model.make_kv_caches(1, 8))
    b = model(idx, input_pos=torch.tensor([5]), kv_caches=model.make_kv_caches(1, 8))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("prefill", [1, 7, 20])
def test_cached_forward_equals_full_recomputation(prefill):
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 24))
    full = model(idx)
    caches = model.make_kv_caches(2, 32)  # more positions than used: the mask must hide the rest
    pos = torch.arange(32)
    with torch.no_grad():
        parts = [model(idx[:, :prefill], input_pos=pos[:prefill], kv_caches=caches)]
        # a chunk of several new tokens after a prefill (a rectangular causal mask) ...
        parts.append(model(idx[:, prefill:prefill + 3], input_pos=pos[prefill:prefill + 3], kv_caches=caches))
        # ... then one token at a time.
        for t in range(prefill + 3, 24):
            parts.append(model(idx[:, t:t + 1], input_pos=pos[t:t + 1], kv_caches=caches))
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)


def test_context_overflow_is_a_clear_error():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="33 tokens exceeds the model.s context of 32 tokens"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="cache of 33 positions exceeds the model's context of 32"):
        model.make_kv_caches(1, 33)


def test_hf_config_round_trip():
    cfg = GPTConfig(vocab_size=1000, n_positions=64, n_embd=48, n_layer=3, n_head=6, dropout=0.1)
    assert GPTConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    with pytest.raises(ValueError, match="activation_function"):
        GPTConfig.from_hf_dict({**cfg.to_hf_dict(), "activation_function": "relu"})


def test_dropout_only_in_training_mode():
    model = GPT(GPTConfig(**{**TINY.__dict__, "dropout": 0.5}))
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))


def test_hidden_states_are_what_the_head_reads():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    hidden = model(idx, return_hidden=True)
    assert hidden.shape == (2, 9, TINY.n_embd)
    torch.testing.assert_close(model.lm_head(hidden), model(idx), rtol=0, atol=0)


def test_the_documented_loss_has_the_full_logits_gradients():
    """The loss the forward's docstring gives (hidden states, then the chunked loss of gpt2/losses.py): the same
    value and gradients, through the whole model, as F.cross_entropy of the full logits."""
    model = GPT(TINY, seed=2).train()
    idx, targets = torch.randint(0, TINY.vocab_size, (2, 2, 11)).unbind(0)
    targets[1, 3:] = -100
    torch.manual_seed(0)
    loss = linear_cross_entropy(model(idx, return_hidden=True), model.lm_head.weight, targets, chunk_size=7)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.manual_seed(0)  # the same dropout masks
    full = model(idx)
    reference = torch.nn.functional.cross_entropy(full.flatten(0, 1), targets.flatten(), ignore_index=-100)
    ref_grads = torch.autograd.grad(reference, list(model.parameters()))
    assert abs(loss.item() - reference.item()) <= 1e-5
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
