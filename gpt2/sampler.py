"""Generating text with GPT-2: small pure functions in the gpt-fast style, read top to bottom.

    SamplingConfig            which distribution each next token is drawn from (validated on creation)
    top_k / top_p / min_p / band filters, hard_logits     logits (B, V) -> logits, removed tokens at -inf
    sample                    logits (B, V) -> next tokens (B,), one seeded draw per row
    prefill, decode_one_token one forward pass each: a whole window, or one token against the KV caches
    generate                  the loop: prefill, then one token per step, per-row stopping, context policy

Strategies (every one draws from the logits of the model at the last position):
    greedy  the most probable token.
    sample  temperature, then top-k, top-p, min-p (in that order, as Hugging Face applies them):
            top-p keeps the smallest set of most probable tokens whose mass is >= top_p (at least one
            token); min-p keeps tokens with p >= min_p * p_max.
    hard    low-probability tokens on purpose: restrict to a plausible set (top_p and/or min_p of the
            temperature-1 distribution; min_p=0.1 when neither is given), then draw with weights
            proportional to p^-beta inside it, so the rarer plausible tokens are favoured.
    band    only the tokens of a band of the sorted (temperature-1) distribution, drawn proportionally
            to p: ranks [rank_lo, rank_hi) (rank 0 = most probable), or the tokens whose cumulative
            interval [c_{i-1}, c_i) overlaps [cum_lo, cum_hi). The intervals tile [0, 1), so a
            cumulative band is never empty: one token holding all the mass is kept by any band.
    mix     per token, with probability epsilon a "hard" pick, otherwise a "sample" pick (the two
            share top_p and min_p).

Randomness comes only from a `torch.Generator` on the model's device seeded with `seed`: the same
seed, model and prompt give the same tokens, with or without the KV cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.model import GPT, KVCache

HARD_DEFAULT_MIN_P = 0.1  # the plausible set of "hard" when neither top_p nor min_p is given

# The SamplingConfig fields each strategy reads; setting any other one is an error, not a silent no-op.
USES = {
    "greedy": set(),
    "sample": {"temperature", "top_k", "top_p", "min_p"},
    "hard": {"top_p", "min_p", "beta"},
    "band": {"rank_lo", "rank_hi", "cum_lo", "cum_hi"},
    "mix": {"temperature", "top_k", "top_p", "min_p", "beta", "epsilon"},
}


@dataclass
class SamplingConfig:
    """How each next token is chosen (see the module docstring for the strategies)."""

    strategy: Literal["greedy", "sample", "hard", "band", "mix"] = "sample"  # how to pick each token
    temperature: float = 1.0  # sample, mix: divide the logits by this (> 0); for argmax use --strategy greedy
    top_k: int | None = None  # sample, mix: keep the k most probable tokens (ties with the k-th are kept)
    top_p: float | None = None  # sample, hard, mix: keep the smallest most-probable set holding >= top_p mass
    min_p: float | None = None  # sample, hard, mix: keep tokens with p >= min_p * p_max, in [0, 1)
    beta: float = 1.0  # hard, mix: weights p^-beta (> 0) in the plausible set; larger favours rarer tokens
    epsilon: float | None = None  # mix: the probability, per token, of a hard pick instead of a sample pick
    rank_lo: int | None = None  # band: first rank kept (0 = the most probable token); with rank_hi
    rank_hi: int | None = None  # band: ranks [rank_lo, rank_hi) are kept
    cum_lo: float | None = None  # band: keep tokens whose cumulative interval overlaps [cum_lo, cum_hi)
    cum_hi: float | None = None  # band: upper end of the cumulative band, in (cum_lo, 1]

    def __post_init__(self) -> None:
        if self.strategy not in USES:
            raise ValueError(f"strategy={self.strategy!r} is unknown; choose one of {', '.join(USES)}")
        defaults = {f.name: f.default for f in dataclasses.fields(SamplingConfig)}
        for name in sorted(defaults.keys() - USES[self.strategy] - {"strategy"}):
            if getattr(self, name) != defaults[name]:
                users = [s for s, fields in USES.items() if name in fields]
                raise ValueError(f"{name}={getattr(self, name)!r} (--{name}) has no effect with strategy="
                                 f"{self.strategy!r}; it is read by strategy {' or '.join(users)}: remove it")

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{name} (--{name}) must be {rule}, got {getattr(self, name)!r}")

        if not self.temperature > 0:
            raise ValueError(f"temperature (--temperature) must be > 0, got {self.temperature!r}; "
                             "for always the most probable token use --strategy greedy")
        if self.top_k is not None and self.top_k < 1:
            raise bad("top_k", "an integer >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise bad("top_p", "in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise bad("min_p", "in [0, 1)")
        if not self.beta > 0:
            raise bad("beta", "> 0 (weights p^-beta favour rarer tokens only for beta > 0)")
        if self.strategy == "mix" and self.epsilon is None:
            raise ValueError("strategy 'mix' needs epsilon (--epsilon): the probability of a hard pick per token")
        if self.epsilon is not None and not 0 <= self.epsilon <= 1:
            raise bad("epsilon", "in [0, 1]")
        if self.strategy == "band":
            rank, cum = (self.rank_lo, self.rank_hi), (self.cum_lo, self.cum_hi)
            if (None in rank) == (None in cum):
                raise ValueError("strategy 'band' needs exactly one band: --rank_lo and --rank_hi, "
                                 "or --cum_lo and --cum_hi (both ends of it)")
            if None not in rank and not 0 <= self.rank_lo < self.rank_hi:
                raise ValueError(f"rank band [rank_lo, rank_hi) = [{self.rank_lo}, {self.rank_hi}) is empty: "
                                 "need 0 <= --rank_lo < --rank_hi")
            if None not in cum and not 0 <= self.cum_lo < self.cum_hi <= 1:
                raise ValueError(f"cumulative band [cum_lo, cum_hi) = [{self.cum_lo}, {self.cum_hi}) is empty "
                                 "or outside [0, 1]: need 0 <= --cum_lo < --cum_hi <= 1")


# ----------------------------------------------------------------------------------------------
# Filters: logits (B, V) -> logits (B, V) with the removed tokens at -inf. Pure functions.


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th)."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def _remove_sorted(logits: torch.Tensor, rule) -> torch.Tensor:
    """Apply `rule(sorted_probs) -> remove mask` to each row sorted by descending probability."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
    remove_sorted = rule(sorted_logits.softmax(-1))  # (B, V) bool, in sorted order
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def _mass_before(cum: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum from the inclusive one: the mass of the strictly more probable tokens."""
    return F.pad(cum[:, :-1], (1, 0))  # (B, V), starts at 0


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose total probability is >= p.
    A token is kept while the mass before it is < p, so the most probable token always is."""
    return _remove_sorted(logits, lambda probs: _mass_before(probs.cumsum(-1)) >= p)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens with p >= min_p * p_max (the most probable token always stays)."""
    logp = logits.log_softmax(-1)  # (B, V)
    threshold = logp.amax(-1, keepdim=True) + torch.log(torch.tensor(min_p, dtype=logp.dtype))
    return logits.masked_fill(logp < threshold, float("-inf"))


def band_filter(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Keep a rank band [rank_lo, rank_hi), or the tokens whose cumulative interval [c_{i-1}, c_i)
    overlaps [cum_lo, cum_hi), of each row sorted by descending probability."""
    if cfg.rank_lo is not None:
        rank = torch.arange(logits.size(-1), device=logits.device)  # (V,)
        return _remove_sorted(logits, lambda probs: ((rank < cfg.rank_lo) | (rank >= cfg.rank_hi)).expand_as(probs))

    def outside(probs: torch.Tensor) -> torch.Tensor:
        cum = probs.cumsum(-1)
        cum = cum / cum[:, -1:]  # the last entry exactly 1.0, so the intervals tile [0, 1) with no gap
        return (_mass_before(cum) >= cfg.cum_hi) | (cum <= cfg.cum_lo)

    return _remove_sorted(logits, outside)


def sample_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The "sample" distribution: temperature, then top-k, top-p, min-p."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None:
        logits = top_k_filter(logits, cfg.top_k)
    if cfg.top_p is not None:
        logits = top_p_filter(logits, cfg.top_p)
    if cfg.min_p is not None:
        logits = min_p_filter(logits, cfg.min_p)
    return logits


def hard_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The "hard" distribution: log-weights -beta * log p on the plausible set, -inf elsewhere.
    Staying in log space keeps p^-beta finite even for tokens whose p underflows in float32."""
    logp = logits.log_softmax(-1)  # (B, V) the temperature-1 distribution
    plausible = logp
    if cfg.top_p is not None:
        plausible = top_p_filter(plausible, cfg.top_p)
    if cfg.min_p is not None or cfg.top_p is None:
        plausible = min_p_filter(plausible, HARD_DEFAULT_MIN_P if cfg.min_p is None else cfg.min_p)
    return torch.where(plausible.isfinite(), -cfg.beta * logp, float("-inf"))


def strategy_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Logits (B, V) of the distribution a strategy draws from (for "mix": its "sample" part)."""
    if cfg.strategy == "hard":
        return hard_logits(logits, cfg)
    if cfg.strategy == "band":
        return band_filter(logits, cfg)
    return sample_logits(logits, cfg)  # sample, mix


def draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits) (B, V) -> (B,); -inf logits are never drawn.

    The Gumbel-max trick: argmax_i (logit_i + g_i) with g_i = -log(-log u_i), u_i ~ U[0, 1), is
    distributed exactly as softmax(logits). On CPU it is ~3x faster than torch.multinomial over
    50,257 tokens. torch.rand never returns 1, so g is never +inf and a -inf logit stays -inf."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device)  # (B, V) in [0, 1)
    return (logits.float() - (-u.log_()).log_()).argmax(-1)


def sample(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """Next tokens (B,) from the model's float logits (B, V) under a strategy."""
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    if cfg.strategy == "mix":
        hard = draw(hard_logits(logits, cfg), generator)
        soft = draw(sample_logits(logits, cfg), generator)
        coin = torch.rand(logits.size(0), generator=generator, device=logits.device) < cfg.epsilon  # (B,)
        return torch.where(coin, hard, soft)
    return draw(strategy_logits(logits, cfg), generator)


def model_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) (B,) under the model's own distribution: temperature 1, nothing filtered."""
    return logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0]


# ----------------------------------------------------------------------------------------------
# Forward passes and the generation loop.


def prefill(model: GPT, idx: torch.Tensor, kv_caches: list[KVCache] | None) -> torch.Tensor:
    """Run a whole window idx (B, T) from position 0, filling `kv_caches` when given (None is the
    uncached path: everything recomputed). Returns the float logits (B, V) of its last position."""
    logits, _ = model(idx, start_pos=0, kv_caches=kv_caches, last_logits_only=True)  # (B, 1, V)
    return logits[:, -1].float()


def decode_one_token(model: GPT, token: torch.Tensor, pos: int, kv_caches: list[KVCache]) -> torch.Tensor:
    """Feed one token (B, 1) at position `pos` against the caches; float logits (B, V) for the next one."""
    logits, _ = model(token, start_pos=pos, kv_caches=kv_caches, last_logits_only=True)  # (B, 1, V)
    return logits[:, -1].float()


# On CPU, relaying the weights for a whole generation makes each decode step about 15% shorter (batch 8,
# gpt2: 60 against 68-75 ms) but costs about 0.9 s per generate() call: worth it for long generations only.
RELAYOUT_MIN_NEW_TOKENS = 256


@contextlib.contextmanager
def decode_layout(model: GPT):
    """On CPU, hold every Linear weight transposed in memory while decoding: the same (out, in) tensor
    and values, stored (in, out) row-major, the layout of Hugging Face's Conv1D, which MKL streams
    fastest when it multiplies a few rows by it. The usual layout is restored on exit. Done outside
    inference mode, so the parameters stay ordinary tensors that training can use afterwards."""
    if model.lm_head.weight.device.type != "cpu":  # cuBLAS reads either layout equally well
        yield
        return
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}.values()
    relaid = [w for w in weights if w.is_contiguous()]  # the tied head appears once; relaid ones are left alone
    try:
        for w in relaid:
            w.data = w.data.t().contiguous().t()  # one weight at a time: the extra memory is one weight
        yield
    finally:
        for w in relaid:
            w.data = w.data.contiguous()


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # (B, T0 + n) the prompt then the n generated positions
    logprobs: torch.Tensor  # (B, n) float32 log p of each generated token under the model (temperature 1, unfiltered)
    finished: torch.Tensor  # (B,) bool: the row emitted stop_token
    lengths: torch.Tensor  # (B,) generated tokens of each row, its stop token included, padding excluded
    prompt_len: int  # T0

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_len:]  # (B, n)


def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    strategy: SamplingConfig = SamplingConfig(),
    seed: int = 0,
    stop_token: int | None = None,
    use_cache: bool = True,
    on_context_full: Literal["stop", "slide"] = "stop",
) -> GenerationResult:
    """Continue every row of `prompt` (B, T0) by up to `max_new_tokens` tokens.

    All rows share the prompt length T0 (the model has no padding mask; group prompts by length).
    A row that emits `stop_token` is finished: its later positions hold `stop_token` with logprob 0
    (log 1: padding is certain, so a row's sum of logprobs is its true total; use `lengths` for
    means). Generation ends after `max_new_tokens` steps or when every row has finished.

    The model sees a window of at most n_positions (N) tokens. When it is full, `on_context_full`
    decides: "stop" ends generation (T0 + n never exceeds N; a prompt longer than N is an error);
    "slide" keeps the last N // 2 tokens, re-prefills them at positions 0 .. N//2 - 1 into the
    caches (as a fresh cache would hold them) and carries on. `use_cache=False` recomputes the whole
    window every step: the reference path, giving the same tokens for the same seed. On CPU, from
    RELAYOUT_MIN_NEW_TOKENS new tokens on, the weights are relaid while it runs (`decode_layout`): do
    not use the model from another thread meanwhile.
    """
    cfg, N = model.config, model.config.n_positions
    if prompt.dim() != 2 or prompt.dtype != torch.long or prompt.size(1) == 0:
        raise ValueError(f"prompt must be a non-empty LongTensor (B, T0) of token ids, got {prompt.dtype} "
                         f"{tuple(prompt.shape)}; for one prompt use prompt[None]; to start from nothing, "
                         "use the end-of-text token 50256")
    if int(prompt.min()) < 0 or int(prompt.max()) >= cfg.vocab_size:
        raise ValueError(f"prompt holds ids outside the vocabulary [0, {cfg.vocab_size})")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens (--max_new_tokens) must be >= 0, got {max_new_tokens}")
    if on_context_full not in ("stop", "slide"):
        raise ValueError(f"on_context_full (--on_context_full) must be 'stop' or 'slide', got {on_context_full!r}")
    if on_context_full == "stop" and prompt.size(1) > N:
        raise ValueError(f"the prompt has {prompt.size(1)} tokens but the model's context is {N} (n_positions): "
                         "shorten it, or pass on_context_full='slide' (--on_context_full slide) to keep its end")
    if strategy.rank_lo is not None and strategy.rank_lo >= cfg.vocab_size:
        raise ValueError(f"rank band starts at rank_lo={strategy.rank_lo} (--rank_lo) but the vocabulary "
                         f"has only {cfg.vocab_size} tokens: the band is empty")

    device = model.lm_head.weight.device
    B, T0 = prompt.shape
    keep = max(1, N // 2)  # tokens kept when the window slides
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        relay = decode_layout(model) if max_new_tokens >= RELAYOUT_MIN_NEW_TOKENS else contextlib.nullcontext()
        with relay, torch.inference_mode():
            tokens = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # written in place
            tokens[:, :T0] = prompt
            logprobs = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=device)
            finished = torch.zeros(B, dtype=torch.bool, device=device)
            # The window never outgrows the context nor the final sequence: caches for that, no more.
            caches = model.make_kv_caches(B, min(N, T0 + max_new_tokens)) if use_cache else None
            L, start, cached = T0, 0, 0  # sequence length; the window is tokens[:, start:L]; positions cached
            n = 0
            while n < max_new_tokens:
                if L - start >= N:  # no position left for the next token
                    if on_context_full == "stop":
                        break
                    start, cached = L - keep, 0  # slide: the last `keep` tokens start again at position 0
                if not use_cache:
                    logits = prefill(model, tokens[:, start:L], None)
                elif cached == 0:
                    logits = prefill(model, tokens[:, start:L], caches)
                else:
                    logits = decode_one_token(model, tokens[:, L - 1:L], L - 1 - start, caches)
                cached = L - start
                next_token = sample(logits, strategy, generator)  # (B,)
                logprob = model_logprobs(logits, next_token)  # (B,)
                if stop_token is not None:
                    next_token = next_token.masked_fill(finished, stop_token)
                    logprob = logprob.masked_fill(finished, 0.0)
                    finished |= next_token == stop_token
                tokens[:, L] = next_token
                logprobs[:, n] = logprob
                L, n = L + 1, n + 1
                if stop_token is not None and bool(finished.all()):
                    break
    finally:
        model.train(was_training)

    # Cloned outside inference mode: ordinary tensors, usable as training data.
    tokens, logprobs, finished = tokens[:, :L].clone(), logprobs[:, :n].clone(), finished.clone()
    lengths = torch.full((B,), n, dtype=torch.long, device=device)
    if stop_token is not None:
        first_stop = (tokens[:, T0:] == stop_token).int().argmax(-1)  # (B,) first stop token (0 if none)
        lengths = torch.where(finished, first_stop + 1, lengths)
    return GenerationResult(tokens=tokens, logprobs=logprobs, finished=finished, lengths=lengths, prompt_len=T0)


# ----------------------------------------------------------------------------------------------
# Command line: look at what a model learned.


@dataclass
class SampleArgs(SamplingConfig):
    """Print continuations of a prompt, e.g.
    python -m gpt2.sampler --model gpt2 --prompt "The meaning of life" --strategy hard --beta 1.0"""

    model: str = "gpt2"  # a published name, a Hugging Face GPT-2 directory or a train.py checkpoint
    prompt: str = ""  # text to continue; empty starts from <|endoftext|>
    max_new_tokens: int = 64  # tokens generated per continuation (fewer if <|endoftext|> comes first)
    num_samples: int = 3  # continuations of the prompt, generated together as one batch
    seed: int = 0  # seeds the sampling generator: the same seed prints the same continuations
    stop_at_eot: bool = True  # end a continuation at <|endoftext|>
    on_context_full: Literal["stop", "slide"] = "stop"  # at the context length: stop, or keep the last half
    device: str = "auto"  # cpu, cuda, cuda:1, ...; auto picks cuda when available


def main(argv: list[str] | None = None) -> None:
    import sys

    from gpt2 import tokenizer
    from gpt2.checkpoint import CheckpointError, load_model
    from gpt2.cli import config_to_dict, parse_config
    from gpt2.weights import DownloadError, WeightsError

    args = parse_config(SampleArgs, argv)
    print(config_to_dict(args))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    strategy = SamplingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)})
    try:
        ids = tokenizer.encode(args.prompt) or [tokenizer.EOT_ID]
    except RuntimeError as e:  # the BPE files are neither cached nor downloadable; the message says what to do
        sys.exit(f"error: {e}")
    try:
        model = load_model(args.model, device=device)
        prompt = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)  # (num_samples, T0)
        out = generate(model, prompt, args.max_new_tokens, strategy=strategy, seed=args.seed,
                       stop_token=tokenizer.EOT_ID if args.stop_at_eot else None,
                       on_context_full=args.on_context_full)
    except (CheckpointError, WeightsError, DownloadError, ValueError) as e:
        sys.exit(f"error: {e}")
    for i in range(args.num_samples):
        n = int(out.lengths[i])
        mean = out.logprobs[i, :n].mean().item() if n else float("nan")
        print(f"\n=== sample {i}: {n} tokens, mean log p {mean:.3f} (model distribution) ===")
        print(args.prompt + tokenizer.decode(out.new_tokens[i, :n].tolist()))


if __name__ == "__main__":
    main()
