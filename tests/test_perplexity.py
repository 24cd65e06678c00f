"""Sliding-window perplexity against a port of HF's "perplexity of fixed-length models" loop, run on
transformers' GPT2LMHeadModel with the same tiny random weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt2 import GPT, GPTConfig
from gpt2.metrics.perplexity import evaluate_perplexity, text_size

transformers = pytest.importorskip("transformers")

# n_positions leaves room for the reference's windows of seq_len + 1 tokens.
TINY = GPTConfig(vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@pytest.fixture(scope="module")
def models():
    """(ours, HF's) with identical weights: HF's random init copied into our GPT."""
    torch.manual_seed(1)
    hf_config = transformers.GPT2Config(
        vocab_size=TINY.vocab_size, n_positions=TINY.n_positions, n_embd=TINY.n_embd, n_layer=TINY.n_layer,
        n_head=TINY.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = GPT(TINY)
    own = ours.state_dict()
    state = {}
    for name, tensor in hf.state_dict().items():
        if name not in own:  # attn.bias / masked_bias buffers, where a version still has them
            continue
        state[name] = tensor.t() if name.endswith(CONV1D) else tensor  # Conv1D stores (in, out)
    assert set(state) == set(own)
    ours.load_state_dict(state)
    return ours.eval(), hf


def hf_guide_nll(hf, tokens: np.ndarray, seq_len: int, stride: int) -> tuple[float, int]:
    """The guide's loop, with its normalisation made exact: (summed NLL, targets scored).

    The guide feeds windows of max_length tokens and labels the last trg_len of them; the model
    shifts labels by one, so a window's first label is never scored. Our windows are seq_len
    inputs whose targets run one token further, i.e. max_length = seq_len + 1 here, and the NLL is
    the mean loss times the number of labels that survive the shift (not times trg_len).
    """
    ids = torch.from_numpy(tokens.astype(np.int64))[None]  # (1, N)
    n = ids.size(1)
    max_length = seq_len + 1
    total, count, prev_end_loc = 0.0, 0, 0
    with torch.no_grad():
        for begin_loc in range(0, n, stride):
            end_loc = min(begin_loc + max_length, n)
            trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
            input_ids = ids[:, begin_loc:end_loc]
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            outputs = hf(input_ids, labels=target_ids)
            n_valid = int((target_ids[:, 1:] != -100).sum())
            total += outputs.loss.double().item() * n_valid
            count += n_valid
            prev_end_loc = end_loc
            if end_loc == n:
                break
    return total, count


@pytest.mark.parametrize("n_tokens,seq_len,stride,batch_size", [
    (301, 32, None, 4),  # disjoint windows, a short last one, a partial last batch
    (301, 32, 12, 5),  # overlapping windows: 20 tokens of context carried over
    (97, 16, 1, 8),  # the extreme: one new target per window
    (20, 32, None, 2),  # the whole sequence fits in one window
])
def test_matches_hf_guide_reference(models, n_tokens, seq_len, stride, batch_size):
    ours, hf = models
    tokens = np.random.default_rng(n_tokens + seq_len).integers(0, TINY.vocab_size, n_tokens).astype(np.uint16)
    result = evaluate_perplexity(ours, tokens, seq_len=seq_len, stride=stride, batch_size=batch_size, progress=False)
    expected, count = hf_guide_nll(hf, tokens, seq_len, stride or seq_len)
    assert count == n_tokens - 1 == result.n_tokens  # every target exactly once
    assert result.total_nll == pytest.approx(expected, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(expected / count), rel=1e-5)


def test_more_context_changes_the_score(models):
    ours, _ = models
    tokens = np.random.default_rng(3).integers(0, TINY.vocab_size, 200)
    disjoint = evaluate_perplexity(ours, tokens, seq_len=16, progress=False)
    overlapping = evaluate_perplexity(ours, tokens, seq_len=16, stride=4, progress=False)
    assert disjoint.n_tokens == overlapping.n_tokens == 199
    assert abs(disjoint.total_nll - overlapping.total_nll) > 1e-3


def test_one_window_equals_the_models_own_loss(models):
    ours, _ = models
    tokens = np.random.default_rng(4).integers(0, TINY.vocab_size, 25)
    x = torch.from_numpy(tokens[None, :-1].astype(np.int64))
    y = torch.from_numpy(tokens[None, 1:].astype(np.int64))
    loss = F.cross_entropy(ours(x)[0], y[0])
    assert evaluate_perplexity(ours, tokens, seq_len=24, progress=False).loss == pytest.approx(loss.item(), rel=1e-6)


def test_bits_per_byte_and_word_perplexity(models):
    ours, _ = models
    text = "The  tower is 324 metres\ntall, café ok.\n"
    n_bytes, n_words = text_size(text)
    assert (n_bytes, n_words) == (len(text) + 1, 8)  # "é" is two bytes in UTF-8; runs of whitespace split once
    tokens = np.random.default_rng(5).integers(0, TINY.vocab_size, 40)
    r = evaluate_perplexity(ours, tokens, seq_len=16, n_bytes=n_bytes, n_words=n_words, progress=False)
    # Three views of one likelihood: per token, per byte (bits), per word.
    assert r.bits_per_byte == pytest.approx(math.log2(r.ppl) * r.n_tokens / n_bytes, rel=1e-12)
    assert r.word_ppl == pytest.approx(r.ppl ** (r.n_tokens / n_words), rel=1e-9)
    assert r.as_dict()["bits_per_byte"] == r.bits_per_byte
    plain = evaluate_perplexity(ours, tokens, seq_len=16, progress=False)
    assert plain.bits_per_byte is None and plain.word_ppl is None


def test_training_flag_restored_and_autocast_close(models):
    ours, _ = models
    tokens = np.random.default_rng(6).integers(0, TINY.vocab_size, 64)
    exact = evaluate_perplexity(ours, tokens, seq_len=16, progress=False)
    ours.train()
    try:
        bf16 = evaluate_perplexity(ours, tokens, seq_len=16, autocast_dtype=torch.bfloat16, progress=False)
        assert ours.training
    finally:
        ours.eval()
    assert bf16.total_nll == pytest.approx(exact.total_nll, rel=2e-2)  # bfloat16 keeps ~3 significant digits


def test_errors_name_the_fix(models):
    ours, _ = models
    tokens = np.arange(50) % TINY.vocab_size
    with pytest.raises(ValueError, match="n_positions"):
        evaluate_perplexity(ours, tokens, seq_len=TINY.n_positions + 1, progress=False)
    with pytest.raises(ValueError, match="stride"):
        evaluate_perplexity(ours, tokens, seq_len=16, stride=17, progress=False)
    with pytest.raises(ValueError, match="model.to"):
        evaluate_perplexity(ours, tokens, seq_len=16, device="cuda", progress=False)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        evaluate_perplexity(ours, tokens[:1], seq_len=16, progress=False)
