"""The sampler: cached decoding against full recomputation, greedy against transformers, the
strategies' distributions against hand-computed ones and transformers' warpers, stopping, context
policies, reproducibility and every bad-parameter error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpt2 import GPT, GPTConfig
from gpt2.compat import recompile_limit_field
from gpt2.sampler import SamplingConfig, cache_length, compiled_decode_one_token, draw, generate, next_token, \
    sampling_logits

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
    logp = torch.tensor([p]).log()  # (1, V)
    return sampling_logits(logp, cfg).softmax(-1)[0]


def sample(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """The tokens next_token picks (B,), with the noise drawn from `generator`."""
    return next_token(logits, cfg, torch.rand(logits.shape, generator=generator))[0]


def uncached_generate(model: GPT, prompt: torch.Tensor, n: int, cfg: SamplingConfig, seed: int,
                      policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for cached decoding: the whole window recomputed for every token, no KV cache, the same
    noise stream and context policy as generate(). Returns (tokens (B, T0 + n'), logprobs (B, n'))."""
    N, generator = model.config.n_positions, torch.Generator().manual_seed(seed)
    tokens, logprobs, start = prompt, [], 0
    with torch.inference_mode():
        for _ in range(n):
            L = tokens.size(1)
            if L - start >= N:
                if policy == "stop":
                    break
                start = L - N // 2
            noise = torch.empty(prompt.size(0), model.config.vocab_size)
            if cfg.strategy != "greedy":
                noise.uniform_(generator=generator)
            token, logprob = next_token(model(tokens[:, start:L])[:, -1], cfg, noise)
            tokens, logprobs = torch.cat([tokens, token[:, None]], 1), logprobs + [logprob]
    return tokens, torch.stack(logprobs, 1)


# ---------------------------------------------------------------------------------- cached decoding

def test_cached_logits_equal_full_recomputation_at_every_step(model):
    B, T0, steps = 3, 4, TINY.n_positions - 4
    tokens = torch.randint(0, TINY.vocab_size, (B, T0 + steps))
    caches = model.make_kv_caches(B, TINY.n_positions)
    with torch.inference_mode():
        cached = [model(tokens[:, :T0], input_pos=torch.arange(T0), kv_caches=caches)[:, -1]]  # prefill
        for pos in range(T0, T0 + steps - 1):
            cached.append(model(tokens[:, pos:pos + 1], input_pos=torch.tensor([pos]), kv_caches=caches)[:, -1])
        for i, logits in enumerate(cached):
            full = model(tokens[:, :T0 + i])[:, -1]  # the whole prefix recomputed, no cache
            assert (logits - full).abs().max().item() <= 1e-5, f"step {i}"


@pytest.mark.parametrize("strategy,policy", [
    (SamplingConfig("greedy"), "stop"), (SamplingConfig("sample", top_p=0.9), "stop"),
    (SamplingConfig("greedy"), "slide"), (SamplingConfig("sample", top_p=0.9), "slide"),
    (SamplingConfig(alpha=-2.0, min_p=0.1), "slide"), (SamplingConfig(alpha=0.0, top_k=5), "slide"),
    (SamplingConfig(alpha=0.5), "stop")])
def test_cached_generation_gives_the_uncached_references_tokens(model, strategy, policy):
    prompt = torch.randint(0, TINY.vocab_size, (3, 5))
    n = 30  # with "slide": windows slide at lengths 16, 24 and 32 (N = 16 keeps 8)
    a = generate(model, prompt, n, sampling=strategy, seed=7, on_context_full=policy)
    tokens, logprobs = uncached_generate(model, prompt, n, strategy, seed=7, policy=policy)
    assert torch.equal(a.tokens, tokens)
    assert (a.logprobs - logprobs).abs().max().item() <= 1e-5
    assert a.tokens.shape == (3, TINY.n_positions if policy == "stop" else 5 + n)


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    prompt = torch.randint(0, TINY.vocab_size, (2, 3))
    cfg = SamplingConfig("sample", alpha=0.7)
    a, b = (generate(model, prompt, 12, sampling=cfg, seed=11) for _ in range(2))
    c = generate(model, prompt, 12, sampling=cfg, seed=12)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_logprobs_are_the_unmodified_model_distribution(model):
    prompt = torch.randint(0, TINY.vocab_size, (2, 3))
    out = generate(model, prompt, 6, sampling=SamplingConfig("sample", alpha=2.0, top_k=3), seed=0)
    with torch.inference_mode():
        logits = model(out.tokens)  # (B, T, V) every position at once
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
    out = generate(ours, prompt, 40, sampling=SamplingConfig("greedy"))
    assert torch.equal(out.tokens, ref.sequences)
    ref_logprobs = torch.stack(ref.scores, 1).log_softmax(-1).gather(-1, out.new_tokens[..., None])[..., 0]
    assert (out.logprobs - ref_logprobs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("alpha,top_k,top_p,min_p", [
    (1.0, 5, None, None), (1.0, None, 0.8, None), (1.0, None, None, 0.2), (1.0, 20, 0.9, 0.05), (1.0, None, 0.3, None),
    (1 / 0.7, None, None, None), (1 / 1.3, None, None, None)])
def test_positive_alpha_is_sampling_at_temperature_one_over_alpha(alpha, top_k, top_p, min_p):
    """alpha = 1 with filters is Hugging Face's sampling with those warpers; alpha > 0 alone is temperature 1/alpha."""
    lp = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(64, 50) * 3
    warpers = [lp.TemperatureLogitsWarper(1 / alpha)]
    warpers += [lp.TopKLogitsWarper(top_k)] if top_k else []
    warpers += [lp.TopPLogitsWarper(top_p)] if top_p else []
    warpers += [lp.MinPLogitsWarper(min_p)] if min_p else []
    expected = lp.LogitsProcessorList(warpers)(None, logits.clone())
    cfg = SamplingConfig("sample", alpha=alpha, top_k=top_k, top_p=top_p, min_p=min_p)
    ours = sampling_logits(logits.log_softmax(-1), cfg)
    assert torch.equal(ours.isinf(), expected.isinf())
    torch.testing.assert_close(ours.softmax(-1), expected.softmax(-1), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- hand-computed distributions

# Probabilities in vocabulary order; sorted they are 0.5, 0.3, 0.17, 0.03 (cumulative 0.5, 0.8, 0.97, 1).
P = [0.17, 0.5, 0.03, 0.3]


def power(p: list[float], alpha: float, keep: list[int]) -> list[float]:
    """p^alpha normalised over the kept indices, 0 elsewhere."""
    total = sum(p[i] ** alpha for i in keep)
    return [p[i] ** alpha / total if i in keep else 0.0 for i in range(len(p))]


@pytest.mark.parametrize("cfg,expected", [
    (SamplingConfig("sample", top_k=2), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),
    (SamplingConfig("sample", top_p=0.75), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),  # 0.5 < 0.75 <= 0.8
    (SamplingConfig("sample", top_p=0.85), [0.17 / 0.97, 0.5 / 0.97, 0, 0.3 / 0.97]),
    (SamplingConfig("sample", top_p=0.45), [0, 1, 0, 0]),  # the top token alone already holds >= 0.45
    (SamplingConfig("sample", min_p=0.5), [0, 0.5 / 0.8, 0, 0.3 / 0.8]),  # p >= 0.25
    (SamplingConfig("sample", min_p=0.2), [0.17 / 0.97, 0.5 / 0.97, 0, 0.3 / 0.97]),  # p >= 0.1
    (SamplingConfig("sample", alpha=0.5), power(P, 0.5, [0, 1, 2, 3])),  # temperature 2
    (SamplingConfig("sample", alpha=0.0, min_p=0.2), [1 / 3, 1 / 3, 0, 1 / 3]),  # uniform over the set
    (SamplingConfig("sample", alpha=-1.0, min_p=0.2), power(P, -1.0, [0, 1, 3])),  # weights 1/p
    (SamplingConfig("sample", alpha=-2.0, top_p=0.75), power(P, -2.0, [1, 3])),
    (SamplingConfig("sample", alpha=-0.5, top_k=3), power(P, -0.5, [0, 1, 3])),
])
def test_distribution_by_hand(cfg, expected):
    torch.testing.assert_close(probs_of(cfg, P), torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-6)


def chi2_critical(df: int, z: float = 3.719) -> float:
    """Upper quantile of the chi-square distribution (Wilson-Hilferty; z = 3.719: p = 1e-4)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
def test_draws_follow_p_to_the_alpha_inside_the_min_p_set(alpha):
    """Goodness of fit: 40,000 seeded draws against the normalised p^alpha on {p >= 0.05 p_max}."""
    V, N = 10, 40_000
    logits = torch.tensor([[3.0, 2.2, 1.7, 1.0, 0.4, 0.0, -0.5, -1.5, -4.0, -6.0]]).expand(N, V)
    cfg = SamplingConfig("sample", alpha=alpha, min_p=0.05)
    p = logits[0].softmax(-1).double()
    keep = p >= 0.05 * p.max()  # the 5 most probable tokens here
    expected = torch.where(keep, p ** alpha, 0.0)
    expected /= expected.sum()
    counts = torch.bincount(sample(logits, cfg, torch.Generator().manual_seed(0)), minlength=V).double()
    assert counts[~keep].sum() == 0  # nothing outside the plausible set, ever
    chi2 = ((counts[keep] - N * expected[keep]) ** 2 / (N * expected[keep])).sum().item()
    assert chi2 < chi2_critical(int(keep.sum()) - 1), (alpha, counts.tolist(), (N * expected).tolist())


def old_hard_logits(logits: torch.Tensor, beta: float, min_p: float) -> torch.Tensor:
    """The former strategy "hard" (before alpha), as it was written: -beta log p on {p >= min_p p_max}."""
    logp = logits.log_softmax(-1)
    plausible = logp >= logp.amax(-1, keepdim=True) + math.log(min_p)
    return torch.where(plausible, -beta * logp, float("-inf"))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_alpha_minus_beta_is_the_former_hard_strategy_draw_for_draw(beta):
    logits = torch.randn(256, 300) * 2
    ours = sample(logits, SamplingConfig("sample", alpha=-beta, min_p=0.1), torch.Generator().manual_seed(3))
    theirs = draw(old_hard_logits(logits, beta, 0.1), torch.rand(logits.shape, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(ours, theirs)


def test_alpha_one_is_ordinary_sampling_draw_for_draw():
    logits = torch.randn(256, 300) * 2
    ours = sample(logits, SamplingConfig("sample", alpha=1.0), torch.Generator().manual_seed(5))
    assert torch.equal(ours, draw(logits.log_softmax(-1), torch.rand(logits.shape, generator=torch.Generator().manual_seed(5))))


def test_greedy_is_the_argmax():
    logits = torch.randn(5, 40)
    assert torch.equal(sample(logits, SamplingConfig("greedy"), torch.Generator()), logits.argmax(-1))
    tokens, logprobs = next_token(logits, SamplingConfig("greedy"), torch.rand(logits.shape))
    assert torch.equal(logprobs, logits.log_softmax(-1).amax(-1))


# ---------------------------------------------------------------------------------- lower log-probability

def test_lower_alpha_picks_less_likely_tokens(peaked):
    prompt = torch.randint(0, 97, (16, 4))
    mean = {alpha: generate(peaked, prompt, 40, sampling=SamplingConfig(alpha=alpha, min_p=0.02), seed=0)
            .logprobs.mean().item() for alpha in (1.0, 0.0, -1.0)}  # 640 tokens each
    # The mean of 640 log-probabilities varies by ~0.07 between seeds; demand a margin well beyond that.
    assert mean[-1.0] < mean[0.0] - 0.3 and mean[0.0] < mean[1.0] - 0.3, mean


# ---------------------------------------------------------------------------------- stopping and context

def test_rows_stop_at_the_stop_token_and_are_padded(model):
    prompt = torch.randint(0, TINY.vocab_size, (3, 2))
    cfg = SamplingConfig("sample", alpha=0.8)
    free = generate(model, prompt, 12, sampling=cfg, seed=5)
    stop = int(free.new_tokens[0, 3])  # a token row 0 emits at step 3 (maybe earlier too)
    out = generate(model, prompt, 12, sampling=cfg, seed=5, stop_token=stop)
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
    free = generate(model, prompt, 8, sampling=SamplingConfig("greedy"))
    same = prompt.clone()
    same[1] = prompt[0]  # both rows identical: greedy gives both the same tokens
    stop = int(free.new_tokens[0, 2])
    out = generate(model, same, 8, sampling=SamplingConfig("greedy"), stop_token=stop)
    k = int((free.new_tokens[0] == stop).nonzero()[0])
    assert out.finished.all() and out.new_tokens.shape == (2, k + 1) and out.lengths.tolist() == [k + 1, k + 1]


def test_no_new_tokens_with_a_stop_token(model):
    out = generate(model, torch.randint(0, 97, (2, 3)), 0, stop_token=5)
    assert out.new_tokens.shape == (2, 0) and out.lengths.tolist() == [0, 0] and not out.finished.any()


def test_greedy_takes_the_argmax_of_the_logits_not_of_their_rounded_log_probabilities():
    """Near-tied logits that the log-softmax rounds to one value: greedy still picks the larger logit."""
    logits = torch.full((4096, 3), 0.02)
    logits[:, 2] += 5e-8  # larger, but within float32's resolution once the log-sum-exp (~1.1) is subtracted
    tokens, _ = next_token(logits, SamplingConfig("greedy"), torch.rand(logits.shape))
    assert (tokens == 2).all()


def test_stop_policy_ends_at_the_context_length(model):
    N = TINY.n_positions
    out = generate(model, torch.randint(0, 97, (2, 10)), 100, sampling=SamplingConfig("greedy"))
    assert out.tokens.shape == (2, N) and out.logprobs.shape == (2, N - 10)
    full = generate(model, torch.randint(0, 97, (2, N)), 5, sampling=SamplingConfig("greedy"))
    assert full.tokens.shape == (2, N) and full.new_tokens.shape == (2, 0)
    with pytest.raises(ValueError, match="on_context_full='slide'"):
        generate(model, torch.randint(0, 97, (2, N + 1)), 5)


@pytest.mark.parametrize("T0", [5, 20])
def test_slide_keeps_the_last_half_at_positions_from_zero(model, T0):
    N, keep = TINY.n_positions, TINY.n_positions // 2
    prompt = torch.randint(0, TINY.vocab_size, (2, T0))
    out = generate(model, prompt, 30, sampling=SamplingConfig("greedy"), on_context_full="slide")
    assert out.tokens.shape == (2, T0 + 30)
    start = 0
    with torch.inference_mode():
        for L in range(T0, T0 + 30):  # the token at index L is predicted from the window tokens[start:L]
            if L - start >= N:
                start = L - keep
            logits = model(out.tokens[:, start:L])  # an independent forward, positions 0 .. L - start - 1
            assert torch.equal(logits[:, -1].argmax(-1), out.tokens[:, L])
            expected = logits[:, -1].log_softmax(-1).gather(-1, out.tokens[:, L:L + 1])[:, 0]
            assert (out.logprobs[:, L - T0] - expected).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_compiled_decoding_with_the_draw_inside_gives_the_eager_tokens(model):
    """The decode step under torch.compile (inductor on CPU), the draw and the log-probability inside it,
    against the eager step: seeded draws at alpha 1, 0 and -1, both context policies. alpha is a tensor
    input, so one compiled graph serves all three (same batch size, cache length and filters)."""
    prompt = torch.randint(0, TINY.vocab_size, (3, 5), generator=torch.Generator().manual_seed(2))
    for alpha in (1.0, 0.0, -1.0):
        cfg = SamplingConfig(alpha=alpha, min_p=0.1)
        for policy in ("stop", "slide"):
            eager = generate(model, prompt, 11, sampling=cfg, seed=4, on_context_full=policy)
            compiled = generate(model, prompt, 11, sampling=cfg, seed=4, on_context_full=policy, compile=True)
            assert torch.equal(eager.tokens, compiled.tokens), (cfg, policy)
            assert (eager.logprobs - compiled.logprobs).abs().max().item() <= 1e-5


@pytest.fixture
def counted_compile(monkeypatch):
    """torch.compile of the decode step with a counting backend (dynamo's tracing and guards, the eager
    kernels): its `frame_count` is the number of graphs made. The cached compiled step is reset around it."""
    from torch._dynamo.testing import CompileCounter

    counter, real_compile = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counter, fullgraph=True,
                                                                       dynamic=False))
    compiled_decode_one_token.cache_clear()
    torch._dynamo.reset()
    yield counter
    compiled_decode_one_token.cache_clear()
    torch._dynamo.reset()


def test_ten_lengths_compile_one_graph_per_cache_bucket(counted_compile):
    """generate(compile=True) at ten total lengths, one batch size: no failure (a view of the token buffer
    fed to the step made a new graph per length, and the ninth failed), one graph per cache length bucket."""
    model = GPT(GPTConfig(vocab_size=97, n_positions=256, n_embd=32, n_layer=2, n_head=4), seed=3).eval()
    prompt = torch.randint(0, 97, (2, 5))
    lengths = [3, 9, 17, 30, 41, 58, 70, 88, 99, 120]
    for n in lengths:
        eager = generate(model, prompt, n, sampling=SamplingConfig(alpha=-1.0, min_p=0.1), seed=n)
        compiled = generate(model, prompt, n, sampling=SamplingConfig(alpha=-1.0, min_p=0.1), seed=n, compile=True)
        assert torch.equal(eager.tokens, compiled.tokens)
    buckets = {cache_length(5 + n, 256, compiled=True) for n in lengths}
    assert buckets == {64, 128} and counted_compile.frame_count <= len(buckets)


def test_compiled_calls_reuse_the_models_buffers_and_graph(counted_compile, monkeypatch):
    """Two generate(compile=True) calls of one shape feed the step the same noise and last-token tensors
    (one address per process: a CUDA graph recorded against them replays, not records again) and the same
    caches; the second call makes no graph. An eager call, or another batch size, gets tensors of its own."""
    import gpt2.sampler as sampler

    model = GPT(GPTConfig(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4), seed=3).eval()
    prompt = torch.randint(0, 97, (2, 5))
    compiled_step, seen = compiled_decode_one_token("cpu"), []

    def step(model, token, input_pos, caches, cfg, noise):  # the compiled step, noting what it is fed
        seen.append((noise, token, caches[0].k))  # held: a freed tensor's address could be handed out again
        return compiled_step(model, token, input_pos, caches, cfg, noise)

    monkeypatch.setattr(sampler, "compiled_decode_one_token", lambda device_type: step)
    first = generate(model, prompt, 6, sampling=SamplingConfig(min_p=0.1), seed=1, compile=True)
    assert counted_compile.frame_count == 1
    second = generate(model, prompt, 6, sampling=SamplingConfig(min_p=0.1), seed=1, compile=True)
    assert counted_compile.frame_count == 1  # the second call: no new graph
    addresses = {tuple(t.data_ptr() for t in fed) for fed in seen}
    assert len(seen) == 2 * 5 and len(addresses) == 1  # every step of both calls: the same three addresses
    assert torch.equal(first.tokens, second.tokens)  # the same seed, the same tokens from the reused buffers
    noise, last = sampler.decode_buffers(model, 2, compiled=True)
    assert noise is seen[0][0] and last is seen[0][1]
    assert sampler.decode_buffers(model, 2, compiled=False)[0].data_ptr() != noise.data_ptr()  # eager: its own
    assert sampler.decode_buffers(model, 3, compiled=True)[0].shape == (3, 97)  # another batch size: new ones


def test_decoding_goes_on_eagerly_past_the_recompile_limit(counted_compile):
    model = GPT(GPTConfig(vocab_size=97, n_positions=256, n_embd=32, n_layer=2, n_head=4), seed=3).eval()
    prompt = torch.randint(0, 97, (2, 5))
    with torch._dynamo.config.patch(**{recompile_limit_field(): 1}):
        generate(model, prompt, 10, sampling=SamplingConfig("greedy"), compile=True)  # the one graph allowed
        with pytest.warns(UserWarning, match="recompile limit"):
            out = generate(model, prompt, 100, sampling=SamplingConfig("greedy"), compile=True)  # a new cache length
    assert torch.equal(out.tokens, generate(model, prompt, 100, sampling=SamplingConfig("greedy")).tokens)


def test_generate_leaves_the_model_as_it_found_it():
    model = GPT(TINY, seed=5).train()  # its own model: this test trains it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = generate(model, torch.zeros(2, 2, dtype=torch.long), 4, sampling=SamplingConfig("sample"))
    assert model.training and model.lm_head.weight is model.transformer.wte.weight
    for k, v in model.state_dict().items():  # values untouched
        assert torch.equal(v, before[k]), k
    # the parameters and the generated tokens are ordinary tensors: training on them works
    logits = model(out.tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), out.tokens[:, 1:].flatten())
    loss.backward()
    assert model.transformer.wte.weight.grad is not None


# ---------------------------------------------------------------------------------- bad parameters

@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="hard"), "strategy='hard' is unknown; choose greedy or sample"),
    (dict(alpha=float("inf")), r"alpha \(--alpha\) must be a finite number.*greedy"),
    (dict(alpha=float("nan")), r"alpha \(--alpha\) must be a finite number"),
    (dict(alpha=0.0), r"restrict the draw to a plausible set with --min_p"),
    (dict(alpha=-1.0, min_p=0.0), r"restrict the draw"),
    (dict(top_k=0), r"top_k \(--top_k\) must be an integer >= 1"),
    (dict(top_p=0.0), r"top_p \(--top_p\) must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p \(--top_p\)"),
    (dict(min_p=1.0), r"min_p \(--min_p\) must be in \[0, 1\)"),
    (dict(min_p=-0.1), r"min_p \(--min_p\)"),
    (dict(strategy="greedy", top_k=5), "have no effect with strategy greedy"),
    (dict(strategy="greedy", alpha=0.5), "have no effect with strategy greedy"),
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
])
def test_bad_generate_arguments(model, prompt, kwargs, match):
    n = kwargs.pop("max_new_tokens", 4)
    with pytest.raises(ValueError, match=match):
        generate(model, prompt, n, **kwargs)


# ---------------------------------------------------------------------------------- command line

def test_cli_prints_continuations(tmp_path, capsys, encoding):
    pytest.importorskip("safetensors")
    from gpt2.weights import save_hf
    from sample import main

    save_hf(GPT(GPTConfig(vocab_size=50257, n_positions=32, n_embd=8, n_layer=1, n_head=2)), tmp_path)
    main(["--model", str(tmp_path), "--prompt", "Hello there", "--alpha", "-1", "--min_p", "0.1",
          "--max_new_tokens", "5", "--num_samples", "2", "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("=== sample") == 2 and out.count("Hello there") >= 2 and "mean log p" in out
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path), "--strategy", "greedy", "--top_k", "3"])
    assert "no effect with strategy greedy" in capsys.readouterr().err
