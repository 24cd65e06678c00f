"""The hand-written GPT-2 module: shapes, initialisation, tying, positions and cached forward passes.
Parity with transformers' logits lives in tests/test_weights.py (it goes through the loader)."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2 import GPT, GPTConfig

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
    logits, loss = model(idx)
    assert logits.shape == (3, 10, TINY.vocab_size) and loss is None
    targets = torch.randint(0, TINY.vocab_size, (3, 10))
    targets[0, :4] = -100  # ignored positions
    _, loss = model(idx, targets)
    keep = targets.view(-1) != -100
    expected = -torch.log_softmax(logits.view(-1, TINY.vocab_size), -1)[keep].gather(1, targets.view(-1)[keep, None]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    last, _ = model(idx, last_logits_only=True)
    assert last.shape == (3, 1, TINY.vocab_size)
    torch.testing.assert_close(last[:, 0], logits[:, -1], rtol=0, atol=1e-6)


def test_causality_future_tokens_do_not_change_past_logits():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % TINY.vocab_size
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_start_pos_uses_the_true_position_embedding():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 1))
    a, _ = model(idx, start_pos=0)
    b, _ = model(idx, start_pos=5)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("prefill", [1, 7, 20])
def test_cached_forward_equals_full_recomputation(prefill):
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 24))
    full, _ = model(idx)
    caches = model.make_kv_caches(2, 24)
    with torch.no_grad():
        parts = [model(idx[:, :prefill], kv_caches=caches)[0]]
        # a chunk of several new tokens after a prefill (needs the rectangular causal mask) ...
        parts.append(model(idx[:, prefill:prefill + 3], start_pos=prefill, kv_caches=caches)[0])
        # ... then one token at a time.
        for t in range(prefill + 3, 24):
            parts.append(model(idx[:, t:t + 1], start_pos=t, kv_caches=caches)[0])
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)


def test_context_overflow_is_a_clear_error():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="context is 32 tokens"):
        model(torch.zeros(1, 33, dtype=torch.long))
    caches = model.make_kv_caches(1, 8)
    with pytest.raises(ValueError, match="KV cache holds 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long), kv_caches=caches)


def test_hf_config_round_trip():
    cfg = GPTConfig(vocab_size=1000, n_positions=64, n_embd=48, n_layer=3, n_head=6, dropout=0.1)
    assert GPTConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    with pytest.raises(ValueError, match="activation_function"):
        GPTConfig.from_hf_dict({**cfg.to_hf_dict(), "activation_function": "relu"})


def test_dropout_only_in_training_mode():
    model = GPT(GPTConfig(**{**TINY.__dict__, "dropout": 0.5}))
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_nn_linear_for_every_row_count(bias):
    """gpt2.model.Linear takes another route for 7-15 rows on CPU; values and gradients must not change."""
    from gpt2.model import Linear

    torch.manual_seed(0)
    ours = Linear(48, 80, bias=bias)
    with torch.no_grad():
        if bias:
            ours.bias.normal_()
    for shape in [(1, 48), (6, 48), (7, 48), (8, 1, 48), (3, 5, 48), (15, 48), (16, 48), (4, 9, 48)]:
        x = torch.randn(shape, requires_grad=True)
        y = ours(x)
        ref_x = x.detach().clone().requires_grad_()
        ref = torch.nn.functional.linear(ref_x, ours.weight, ours.bias)
        assert y.shape == ref.shape == (*shape[:-1], 80)
        assert (y - ref).abs().max().item() <= 1e-5, shape
        grads = torch.autograd.grad(y.square().sum(), [x, ours.weight])
        ref_grads = torch.autograd.grad(ref.square().sum(), [ref_x, ours.weight])
        for g, r in zip(grads, ref_grads):
            assert (g - r).abs().max().item() <= 1e-4 * max(1.0, r.abs().max().item()), shape


def test_decode_step_at_batch_8_matches_the_full_forward():
    """Batch 8, one token against the caches: the 7-15-row route through every Linear and the head."""
    model = GPT(TINY, seed=3).eval()
    idx = torch.randint(0, TINY.vocab_size, (8, 12), generator=torch.Generator().manual_seed(1))
    full, _ = model(idx)  # (8, 12, V): 96 rows, the ordinary route
    caches = model.make_kv_caches(8, 12)
    model(idx[:, :11], kv_caches=caches)
    step, _ = model(idx[:, 11:], start_pos=11, kv_caches=caches)  # (8, 1, V)
    assert (step[:, 0] - full[:, -1]).abs().max().item() <= 1e-5
