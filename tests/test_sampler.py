"""The sampler: cached decoding against full recomputation, greedy against transformers, the
strategies' distributions against hand-computed ones and transformers' warpers, stopping, context
policies, reproducibility and every bad-parameter error."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.sampler import (SamplingConfig, decode_one_token, generate, model_logprobs, prefill, sample,
                          strategy_logits)

TINY = GPTConfig(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def model() -> GPT:
    return GPT(TINY, seed=3).eval()


@pytest.fixture(scope="module")
def peaked() -> GPT:
    """A random model made confident (logits x8 through ln_f's scale), so that a strategy's choice
    of rank shows clearly in the model log-probability of what it picks."""
    m = GPT(GPTConfig(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4), seed=4).eval()
    with torch.no_grad():
        m.transformer.ln_f.weight.mul_(8.0)
    return m


def probs_of(cfg: SamplingConfig, p: list[float]) -> torch.Tensor:
    """The distribution a strategy draws from, for one row with probabilities p."""
    logits = torch.tensor([p]).log()  # (1, V)
    return strategy_logits(logits, cfg).softmax(-1)[0]


# ---------------------------------------------------------------------------------- cached decoding

def test_cached_logits_equal_full_recomputation_at_every_step(model):
    B, T0, steps = 3, 4, TINY.n_positions - 4
    tokens = torch.randint(0, TINY.vocab_size, (B, T0 + steps))
    caches = model.make_kv_caches(B, TINY.n_positions)
    with torch.inference_mode():
        cached = [prefill(model, tokens[:, :T0], caches)]
        for pos in range(T0, T0 + steps - 1):
            cached.append(decode_one_token(model, tokens[:, pos:pos + 1], pos, caches))
        for i, logits in enumerate(cached):
            full = prefill(model, tokens[:, :T0 + i], None)  # the whole prefix recomputed, no cache
            assert (logits - full).abs().max().item() <= 1e-5, f"step {i}"


@pytest.mark.parametrize("strategy,policy", [
    (SamplingConfig("greedy"), "stop"), (SamplingConfig("sample", top_p=0.9), "stop"),
    (SamplingConfig("greedy"), "slide"), (SamplingConfig("sample", top_p=0.9), "slide"),
    (SamplingConfig("hard", beta=2.0), "slide"), (SamplingConfig("band", rank_lo=1, rank_hi=4), "slide"),
    (SamplingConfig("mix", epsilon=0.3), "slide")])
def test_use_cache_false_gives_the_same_tokens(model, strategy, policy):
    prompt = torch.randint(0, TINY.vocab_size, (3, 5))
    n = 30  # with "slide": windows slide at lengths 16, 24 and 32 (N = 16 keeps 8)
    a = generate(model, prompt, n, strategy=strategy, seed=7, on_context_full=policy)
    b = generate(model, prompt, n, strategy=strategy, seed=7, on_context_full=policy, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)
    assert (a.logprobs - b.logprobs).abs().max().item() <= 1e-5
    assert a.tokens.shape == (3, TINY.n_positions if policy == "stop" else 5 + n)


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    prompt = torch.randint(0, TINY.vocab_size, (2, 3))
    cfg = SamplingConfig("sample", temperature=1.5)
    a, b = (generate(model, prompt, 12, strategy=cfg, seed=11) for _ in range(2))
    c = generate(model, prompt, 12, strategy=cfg, seed=12)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_logprobs_are_the_unmodified_model_distribution(model):
    prompt = torch.randint(0, TINY.vocab_size, (2, 3))
    out = generate(model, prompt, 6, strategy=SamplingConfig("sample", temperature=0.5, top_k=3), seed=0)
    with torch.inference_mode():
        logits, _ = model(out.tokens)  # (B, T, V) every position at once
    expected = logits[:, 2:-1].log_softmax(-1).gather(-1, out.new_tokens[..., None])[..., 0]
    assert (out.logprobs - expected).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------------- reference: transformers

def test_greedy_equals_transformers_generate(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from gpt2.weights import load_pretrained

    cfg = GPTConfig(vocab_size=211, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg.to_hf_dict())).eval()
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    prompt = torch.randint(0, cfg.vocab_size, (3, 7))
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=40,
                          min_new_tokens=40, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    out = generate(ours, prompt, 40, strategy=SamplingConfig("greedy"))
    assert torch.equal(out.tokens, ref.sequences)
    ref_logprobs = torch.stack(ref.scores, 1).log_softmax(-1).gather(-1, out.new_tokens[..., None])[..., 0]
    assert (out.logprobs - ref_logprobs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", [
    (1.0, 5, None, None), (0.7, None, 0.8, None), (1.0, None, None, 0.2), (1.3, 20, 0.9, 0.05), (1.0, None, 0.3, None)])
def test_sample_filters_equal_transformers_warpers(temperature, top_k, top_p, min_p):
    lp = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(64, 50) * 3
    warpers = [lp.TemperatureLogitsWarper(temperature)]
    warpers += [lp.TopKLogitsWarper(top_k)] if top_k else []
    warpers += [lp.TopPLogitsWarper(top_p)] if top_p else []
    warpers += [lp.MinPLogitsWarper(min_p)] if min_p else []
    expected = lp.LogitsProcessorList(warpers)(None, logits.clone())
    ours = strategy_logits(logits, SamplingConfig("sample", temperature=temperature, top_k=top_k, top_p=top_p,
                                                  min_p=min_p))
    assert torch.equal(ours.isinf(), expected.isinf())
    torch.testing.assert_close(ours.softmax(-1), expected.softmax(-1), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- hand-computed distributions

# Probabilities in vocabulary order; sorted they are 0.5, 0.3, 0.17, 0.03 (cumulative 0.5, 0.8, 0.97, 1).
P = [0.17, 0.5, 0.03, 0.3]


@pytest.mark.parametrize("cfg,expected", [
    (SamplingConfig("sample", top_k=2), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),
    (SamplingConfig("sample", top_p=0.75), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),  # 0.5 < 0.75 <= 0.8
    (SamplingConfig("sample", top_p=0.85), [0.17 / 0.97, 0.5 / 0.97, 0, 0.3 / 0.97]),
    (SamplingConfig("sample", top_p=0.45), [0, 1, 0, 0]),  # the top token alone already holds >= 0.45
    (SamplingConfig("sample", min_p=0.5), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),  # p >= 0.25
    (SamplingConfig("sample", min_p=0.2), [0.17 / 0.97, 0.5 / 0.97, 0, 0.3 / 0.97]),  # p >= 0.1
    (SamplingConfig("sample", temperature=2.0), [math.sqrt(x) / sum(math.sqrt(y) for y in P) for x in P]),
    # hard: weights 1/p on {0.5, 0.3, 0.17} (min_p 0.2), then 1/p^2 on {0.5, 0.3} (top_p 0.75)
    (SamplingConfig("hard", min_p=0.2), [w / (1 / 0.17 + 2 + 1 / 0.3) for w in (1 / 0.17, 2, 0, 1 / 0.3)]),
    (SamplingConfig("hard", beta=2.0, top_p=0.75), [0, 4 / (4 + 1 / 0.09), 0, (1 / 0.09) / (4 + 1 / 0.09)]),
    # hard with neither filter: min_p 0.1, so p >= 0.05 drops only 0.03
    (SamplingConfig("hard"), [w / (1 / 0.17 + 2 + 1 / 0.3) for w in (1 / 0.17, 2, 0, 1 / 0.3)]),
    (SamplingConfig("band", rank_lo=1, rank_hi=3), [0.17 / 0.47, 0, 0, 0.3 / 0.47]),
    (SamplingConfig("band", rank_lo=3, rank_hi=100), [0, 0, 1.0, 0]),
    # intervals [0, .5) [.5, .8) [.8, .97) [.97, 1): the band [.6, .9) overlaps the second and third
    (SamplingConfig("band", cum_lo=0.6, cum_hi=0.9), [0.17 / 0.47, 0, 0, 0.3 / 0.47]),
    (SamplingConfig("band", cum_lo=0.1, cum_hi=0.2), [0, 1, 0, 0]),  # inside the top token's interval
    (SamplingConfig("band", cum_lo=0.98, cum_hi=1.0), [0, 0, 1, 0]),
])
def test_strategy_distribution_by_hand(cfg, expected):
    torch.testing.assert_close(probs_of(cfg, P), torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-6)


def test_cumulative_band_keeps_a_token_holding_all_the_mass():
    logits = torch.tensor([[0.0, 40.0, 0.0, 0.0]])  # token 1 has p = 1 - 1e-17: 1.0 in float32
    for lo, hi in [(0.5, 0.9), (0.99, 1.0), (0.0, 0.01)]:
        probs = strategy_logits(logits, SamplingConfig("band", cum_lo=lo, cum_hi=hi)).softmax(-1)
        torch.testing.assert_close(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_draws_follow_the_strategy_distribution():
    V, N = 6, 20000
    logits = torch.tensor([[3.0, 2.0, 1.5, 1.0, 0.0, -1.0]]).expand(N, V)
    gen = torch.Generator().manual_seed(0)
    for cfg in [SamplingConfig("sample", temperature=0.8), SamplingConfig("hard", beta=1.5, min_p=0.05),
                SamplingConfig("band", rank_lo=1, rank_hi=4)]:
        expected = strategy_logits(logits[:1], cfg).softmax(-1)[0]
        freq = torch.bincount(sample(logits, cfg, gen), minlength=V).double() / N
        sigma = (expected * (1 - expected) / N).sqrt()
        assert torch.all((freq - expected).abs() <= 5 * sigma + 1e-9), (cfg.strategy, freq, expected)


def test_mix_takes_a_hard_pick_with_probability_epsilon():
    N = 20000
    # min_p 0.3 leaves {argmax, runner-up}; the sample part (top_k=1) always takes the argmax.
    logits = torch.tensor([[2.0, 1.0, -3.0]]).expand(N, 3)
    p = logits[0].softmax(-1)
    hard_runner_up = (1 / p[1]) / (1 / p[0] + 1 / p[1])  # share of the runner-up in a hard pick (beta 1)
    gen = torch.Generator().manual_seed(1)
    for eps in (0.0, 0.25, 1.0):
        tokens = sample(logits, SamplingConfig("mix", epsilon=eps, top_k=1, min_p=0.3), gen)
        assert not (tokens == 2).any()
        share, expected = (tokens == 1).double().mean(), eps * hard_runner_up
        assert abs(share - expected) <= 5 * math.sqrt(expected * (1 - expected) / N) + 1e-9


def test_greedy_is_the_argmax():
    logits = torch.randn(5, 40)
    assert torch.equal(sample(logits, SamplingConfig("greedy"), torch.Generator()), logits.argmax(-1))
    assert torch.equal(model_logprobs(logits, logits.argmax(-1)), logits.log_softmax(-1).amax(-1))


# ---------------------------------------------------------------------------------- lower log-probability

def test_hard_and_band_pick_less_likely_tokens_than_sample(peaked):
    prompt = torch.randint(0, 97, (16, 4))
    strategies = {"sample": SamplingConfig("sample"), "hard": SamplingConfig("hard", min_p=0.02, beta=1.0),
                  "rank band": SamplingConfig("band", rank_lo=10, rank_hi=40),
                  "cum band": SamplingConfig("band", cum_lo=0.5, cum_hi=0.9)}
    mean = {name: generate(peaked, prompt, 40, strategy=cfg, seed=0).logprobs.mean().item()  # 640 tokens each
            for name, cfg in strategies.items()}
    # The mean of 640 log-probabilities varies by ~0.07 between seeds; demand a margin well beyond that.
    # (A cumulative band is lower only where no single token holds the band's mass: this model's
    # entropy is ~3.8 nats. On a very peaked model [0.5, 0.9) keeps the top token and scores higher.)
    for name in ("hard", "rank band", "cum band"):
        assert mean[name] < mean["sample"] - 0.4, mean


# ---------------------------------------------------------------------------------- stopping and context

def test_rows_stop_at_the_stop_token_and_are_padded(model):
    prompt = torch.randint(0, TINY.vocab_size, (3, 2))
    cfg = SamplingConfig("sample", temperature=1.2)
    free = generate(model, prompt, 12, strategy=cfg, seed=5)
    stop = int(free.new_tokens[0, 3])  # a token row 0 emits at step 3 (maybe earlier too)
    out = generate(model, prompt, 12, strategy=cfg, seed=5, stop_token=stop)
    for row in range(3):
        hits = (free.new_tokens[row] == stop).nonzero()
        if len(hits) == 0:  # never emits it: the row runs to the end, unchanged
            assert not out.finished[row] and out.lengths[row] == out.new_tokens.size(1)
            assert torch.equal(out.new_tokens[row], free.new_tokens[row, :out.new_tokens.size(1)])
            continue
        k = int(hits[0])
        assert out.finished[row] and out.lengths[row] == k + 1
        assert torch.equal(out.new_tokens[row, :k + 1], free.new_tokens[row, :k + 1])  # the same draws
        assert torch.all(out.new_tokens[row, k + 1:] == stop) and torch.all(out.logprobs[row, k + 1:] == 0)
        assert torch.equal(out.logprobs[row, :k + 1], free.logprobs[row, :k + 1])
    if out.finished.all():  # every row done: generation ended at the last row's stop token
        assert out.new_tokens.size(1) == int(out.lengths.max())


def test_generation_ends_when_every_row_has_stopped(model):
    prompt = torch.randint(0, TINY.vocab_size, (2, 3))
    free = generate(model, prompt, 8, strategy=SamplingConfig("greedy"))
    same = prompt.clone()
    same[1] = prompt[0]  # both rows identical: greedy gives both the same tokens
    stop = int(free.new_tokens[0, 2])
    out = generate(model, same, 8, strategy=SamplingConfig("greedy"), stop_token=stop)
    k = int((free.new_tokens[0] == stop).nonzero()[0])
    assert out.finished.all() and out.new_tokens.shape == (2, k + 1) and out.lengths.tolist() == [k + 1, k + 1]


def test_stop_policy_ends_at_the_context_length(model):
    N = TINY.n_positions
    out = generate(model, torch.randint(0, 97, (2, 10)), 100, strategy=SamplingConfig("greedy"))
    assert out.tokens.shape == (2, N) and out.logprobs.shape == (2, N - 10)
    full = generate(model, torch.randint(0, 97, (2, N)), 5, strategy=SamplingConfig("greedy"))
    assert full.tokens.shape == (2, N) and full.new_tokens.shape == (2, 0)
    with pytest.raises(ValueError, match="on_context_full='slide'"):
        generate(model, torch.randint(0, 97, (2, N + 1)), 5)


@pytest.mark.parametrize("T0", [5, 20])
def test_slide_keeps_the_last_half_at_positions_from_zero(model, T0):
    N, keep = TINY.n_positions, TINY.n_positions // 2
    prompt = torch.randint(0, TINY.vocab_size, (2, T0))
    out = generate(model, prompt, 30, strategy=SamplingConfig("greedy"), on_context_full="slide")
    assert out.tokens.shape == (2, T0 + 30)
    start = 0
    with torch.inference_mode():
        for L in range(T0, T0 + 30):  # the token at index L is predicted from the window tokens[start:L]
            if L - start >= N:
                start = L - keep
            logits, _ = model(out.tokens[:, start:L])  # an independent forward, positions 0 .. L - start - 1
            assert torch.equal(logits[:, -1].argmax(-1), out.tokens[:, L])
            expected = logits[:, -1].log_softmax(-1).gather(-1, out.tokens[:, L:L + 1])[:, 0]
            assert (out.logprobs[:, L - T0] - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, 8])
def test_relaid_weights_give_the_same_generation(model, monkeypatch, batch):
    """A long generation on CPU relays the weights (decode_layout); tokens and logprobs must not change.
    Batch 8 also crosses gpt2.model.Linear's few-row path, which a relaid weight must skip."""
    import gpt2.sampler

    prompt = torch.randint(0, TINY.vocab_size, (batch, 3), generator=torch.Generator().manual_seed(4))
    kw = dict(strategy=SamplingConfig("sample", temperature=1.5), seed=9, on_context_full="slide")
    monkeypatch.setattr(gpt2.sampler, "RELAYOUT_MIN_NEW_TOKENS", 10**9)
    plain = generate(model, prompt, 40, **kw)
    monkeypatch.setattr(gpt2.sampler, "RELAYOUT_MIN_NEW_TOKENS", 1)
    relaid = generate(model, prompt, 40, **kw)
    assert torch.equal(plain.tokens, relaid.tokens)
    assert (plain.logprobs - relaid.logprobs).abs().max().item() <= 1e-5
    assert all(p.is_contiguous() for p in model.parameters())  # the usual layout is back


def test_generate_leaves_the_model_as_it_found_it(monkeypatch):
    import gpt2.sampler

    monkeypatch.setattr(gpt2.sampler, "RELAYOUT_MIN_NEW_TOKENS", 1)  # the relaid path too
    model = GPT(TINY, seed=5).train()  # its own model: this test trains it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = generate(model, torch.zeros(2, 2, dtype=torch.long), 4, strategy=SamplingConfig("sample"))
    assert model.training and model.lm_head.weight is model.transformer.wte.weight
    for k, v in model.state_dict().items():  # values and layout untouched
        assert torch.equal(v, before[k]) and v.is_contiguous(), k
    # the parameters and the generated tokens are ordinary tensors: training on them works
    _, loss = model(out.tokens[:, :-1], out.tokens[:, 1:])
    loss.backward()
    assert model.transformer.wte.weight.grad is not None


# ---------------------------------------------------------------------------------- bad parameters

@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="nucleus"), "strategy='nucleus' is unknown"),
    (dict(temperature=0.0), r"temperature \(--temperature\) must be > 0.*greedy"),
    (dict(top_k=0), r"top_k \(--top_k\) must be an integer >= 1"),
    (dict(top_p=0.0), r"top_p \(--top_p\) must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p \(--top_p\)"),
    (dict(min_p=1.0), r"min_p \(--min_p\) must be in \[0, 1\)"),
    (dict(min_p=-0.1), r"min_p \(--min_p\)"),
    (dict(strategy="hard", beta=0.0), r"beta \(--beta\) must be > 0"),
    (dict(strategy="hard", beta=-1.0), r"beta \(--beta\)"),
    (dict(strategy="mix"), r"needs epsilon \(--epsilon\)"),
    (dict(strategy="mix", epsilon=1.5), r"epsilon \(--epsilon\) must be in \[0, 1\]"),
    (dict(strategy="mix", epsilon=-0.1), r"epsilon \(--epsilon\)"),
    (dict(strategy="band"), "needs exactly one band"),
    (dict(strategy="band", rank_lo=0, rank_hi=5, cum_lo=0.1, cum_hi=0.5), "needs exactly one band"),
    (dict(strategy="band", rank_lo=5), "needs exactly one band"),
    (dict(strategy="band", rank_lo=5, rank_hi=5), r"rank band .* is empty.*--rank_lo < --rank_hi"),
    (dict(strategy="band", rank_lo=-1, rank_hi=5), "rank band"),
    (dict(strategy="band", cum_lo=0.5, cum_hi=0.5), r"cumulative band .* is empty"),
    (dict(strategy="band", cum_lo=-0.1, cum_hi=0.5), "cumulative band"),
    (dict(strategy="band", cum_lo=0.5, cum_hi=1.5), "cumulative band"),
    (dict(strategy="hard", temperature=0.7), r"temperature=0.7 \(--temperature\) has no effect with strategy='hard'"),
    (dict(strategy="greedy", top_k=5), "top_k=5 .* has no effect with strategy='greedy'"),
    (dict(strategy="sample", beta=2.0), "beta=2.0 .* read by strategy hard or mix"),
    (dict(strategy="sample", rank_lo=1, rank_hi=3), "rank_hi=3 .* has no effect"),
])
def test_bad_sampling_config_names_the_flag(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize("prompt,kwargs,match", [
    (torch.zeros(3, dtype=torch.long), {}, r"prompt\[None\]"),
    (torch.zeros(1, 0, dtype=torch.long), {}, "non-empty"),
    (torch.zeros(1, 3), {}, "LongTensor"),
    (torch.full((1, 3), 97), {}, r"outside the vocabulary \[0, 97\)"),
    (torch.zeros(1, 17, dtype=torch.long), {}, "the prompt has 17 tokens but the model's context is 16"),
    (torch.zeros(1, 3, dtype=torch.long), dict(max_new_tokens=-1), "max_new_tokens"),
    (torch.zeros(1, 3, dtype=torch.long), dict(on_context_full="wrap"), "on_context_full"),
    (torch.zeros(1, 3, dtype=torch.long), dict(strategy=SamplingConfig("band", rank_lo=97, rank_hi=200)),
     "rank_lo=97 .* only 97 tokens"),
])
def test_bad_generate_arguments(model, prompt, kwargs, match):
    n = kwargs.pop("max_new_tokens", 4)
    with pytest.raises(ValueError, match=match):
        generate(model, prompt, n, **kwargs)


# ---------------------------------------------------------------------------------- command line

def test_cli_prints_continuations(tmp_path, capsys, encoding):
    pytest.importorskip("safetensors")
    from gpt2.sampler import main
    from gpt2.weights import save_hf

    save_hf(GPT(GPTConfig(vocab_size=50257, n_positions=32, n_embd=8, n_layer=1, n_head=2)), tmp_path)
    main(["--model", str(tmp_path), "--prompt", "Hello there", "--strategy", "hard", "--beta", "1.0",
          "--max_new_tokens", "5", "--num_samples", "2", "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("=== sample") == 2 and out.count("Hello there") >= 2 and "mean log p" in out
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path), "--strategy", "hard", "--top_k", "3"])
    assert "top_k=3 (--top_k) has no effect" in capsys.readouterr().err
