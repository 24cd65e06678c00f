"""Generating text with GPT-2: small pure functions in the gpt-fast style, read top to bottom.

    SamplingConfig             which distribution each next token is drawn from (validated on creation)
    DrawTensors                the same with its numbers as tensors: what the compiled decode step reads
    top_k / top_p / min_p      filters: logits (B, V) -> logits, the removed tokens at -inf
    plausible_weights          log p (B, V) -> alpha * log p on the plausible set, -inf elsewhere
    sampling_logits, draw      the same for a SamplingConfig -> one token per row (Gumbel-max)
    next_token                 logits (B, V) -> (tokens (B,), their log p): the one softmax of a step
    prefill, decode_one_token  a whole window, or one token against the KV caches -> (tokens, log p)
    cache_length, decode_caches  how long the caches are, and whose they are (the call's, or the model's)
    decode_buffers             the noise and last-token buffers a step reads (the call's, or the model's)
    generate                   prefill, then a loop of decode_one_token; stop tokens; a full context

One knob says how far a draw leans into the tail. The plausible set is what top-k, top-p and min-p
keep of the model's own distribution p (temperature 1); inside it a token is drawn with weight p^alpha:

    alpha = 1        ordinary sampling from the plausible set
    0 < alpha < 1    hotter: sampling at temperature 1 / alpha (restricted to the set)
    alpha = 0        uniform over the set (temperature -> infinity)
    alpha < 0        inverted: the less probable a plausible token, the likelier it is drawn
                     (alpha = -1 weights each token by 1 / p; alpha = -beta is the older "hard p^-beta")
    strategy greedy  the most probable token (alpha -> infinity)

Randomness comes only from a `torch.Generator` on the model's device seeded with `seed`, which fills
one (B, V) buffer of uniform noise per token: the same seed, model and prompt give the same tokens,
compiled or not.
"""

from __future__ import annotations

import functools
import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from gpt2.compat import mark_static_address, recompile_limit_hit
from gpt2.device import compute_dtype
from gpt2.model import GPT, KVCache

Strategy = Literal["greedy", "sample"]
ContextPolicy = Literal["stop", "slide"]


@dataclass
class SamplingConfig:
    """How each next token is chosen: greedy, or a draw with weight p^alpha from the plausible set."""

    strategy: Strategy = "sample"  # greedy: the most probable token; sample: a draw with weight p^alpha
    alpha: float = 1.0  # sample: weight p^alpha inside the plausible set: 1 ordinary, (0, 1) hotter (temperature
                        # 1/alpha), 0 uniform, < 0 favours the less probable plausible tokens (-1: weight 1/p)
    top_k: int | None = None  # plausible set: the k most probable tokens (ties with the k-th are kept)
    top_p: float | None = None  # plausible set: the smallest most-probable set holding >= top_p of the mass
    min_p: float | None = None  # plausible set: tokens with p >= min_p * p_max, in [0, 1)

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "sample"):
            raise ValueError(f"strategy={self.strategy!r} is unknown; choose greedy or sample "
                             "(--alpha sets how far a sample leans into the tail)")
        if self.strategy == "greedy" and (self.alpha != 1.0 or self.top_k or self.top_p or self.min_p is not None):
            raise ValueError("--alpha, --top_k, --top_p and --min_p have no effect with strategy greedy: remove them")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha (--alpha) must be a finite number, got {self.alpha!r}; "
                             "for the most probable token use --strategy greedy")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k (--top_k) must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p (--top_p) must be in (0, 1], got {self.top_p!r}")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise ValueError(f"min_p (--min_p) must be in [0, 1), got {self.min_p!r}")
        if self.alpha <= 0 and not (self.top_k or self.top_p is not None or (self.min_p or 0) > 0):
            raise ValueError(f"alpha={self.alpha} (--alpha) gives the least probable tokens of the whole vocabulary "
                             "at least as much weight as the likely ones: restrict the draw to a plausible set with "
                             "--min_p (e.g. 0.1), --top_p or --top_k")


@dataclass(frozen=True)
class DrawTensors:
    """A SamplingConfig with its numbers as 0-d tensors, for the compiled decode step: torch.compile
    specialises a graph on every Python float it reads (a new graph per alpha), while tensors are inputs
    (one graph serves every alpha, top_p and min_p). Which filters apply, and top_k's value (the size
    of a topk), stay part of the graph."""

    strategy: Strategy
    alpha: torch.Tensor
    top_k: int | None
    top_p: torch.Tensor | None
    min_p: torch.Tensor | None

    @classmethod
    def of(cls, cfg: SamplingConfig, device: torch.device) -> DrawTensors:
        tensor = lambda v: None if v is None else torch.tensor(float(v), device=device)  # noqa: E731
        return cls(cfg.strategy, tensor(cfg.alpha), cfg.top_k, tensor(cfg.top_p), tensor(cfg.min_p))


# ----------------------------------------------------------------------------------------------
# Filters: logits (B, V) -> logits (B, V) with the removed tokens at -inf. Pure functions. Their
# thresholds may be floats or 0-d tensors (what the compiled decode step passes, see `DrawTensors`).


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th)."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose total probability is >= p.
    A token is kept while the mass strictly before it is < p, so the most probable token always is."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
    mass_before = F.pad(sorted_logits.softmax(-1).cumsum(-1)[:, :-1], (1, 0))  # (B, V), starts at 0
    remove = (mass_before >= p).scatter(-1, order, mass_before >= p)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float | torch.Tensor) -> torch.Tensor:
    """Keep tokens with p >= min_p * p_max (the most probable token always stays). p / p_max is
    exp(logit - max logit) whatever the normalisation, so no softmax is needed; min_p = 0 keeps all."""
    threshold = logits.amax(-1, keepdim=True) + torch.as_tensor(min_p, dtype=logits.dtype, device=logits.device).log()
    return logits.masked_fill(logits < threshold, float("-inf"))


def plausible_weights(logp: torch.Tensor, alpha: float | torch.Tensor, *, top_k: int | None = None,
                      top_p: float | torch.Tensor | None = None,
                      min_p: float | torch.Tensor | None = None) -> torch.Tensor:
    """Log-weights (B, V) of a draw from log-probabilities logp (B, V): alpha * log p on the plausible set
    (what top_k, top_p and min_p keep, in that order), -inf elsewhere. Working with log p keeps p^alpha
    finite for alpha < 0 even where p underflows in float32. The thresholds are not checked here (min_p = 1
    keeps the most probable token alone): `SamplingConfig` checks a sampler's, data/token_edit.py its own."""
    plausible = logp
    if top_k is not None:
        plausible = top_k_filter(plausible, top_k)
    if top_p is not None:
        plausible = top_p_filter(plausible, top_p)
    if min_p is not None:
        plausible = min_p_filter(plausible, min_p)
    return torch.where(plausible.isfinite(), alpha * logp, float("-inf"))


def sampling_logits(logp: torch.Tensor, cfg: SamplingConfig | DrawTensors) -> torch.Tensor:
    """Log-weights (B, V) of the sampler's draw from the model's log-probabilities logp (B, V):
    `plausible_weights` with the config's alpha and filters."""
    return plausible_weights(logp, cfg.alpha, top_k=cfg.top_k, top_p=cfg.top_p, min_p=cfg.min_p)


def draw(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits) (B, V) -> (B,), given uniform noise (B, V) in [0, 1).

    The Gumbel-max trick: argmax_i (logit_i + g_i) with g_i = -log(-log u_i), u_i ~ U[0, 1), is
    distributed exactly as softmax(logits), with no normalisation and no cumulative sum over V.
    u < 1, so g is never +inf and a -inf logit is never drawn."""
    return (logits.float() - (-noise.log()).log()).argmax(-1)


def next_token(logits: torch.Tensor, cfg: SamplingConfig | DrawTensors,
               noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The next tokens (B,) from the model's logits (B, V), and log p of each (B,) under the model's own
    distribution (temperature 1, nothing filtered). One log-softmax serves the draw and the log p.
    Greedy takes the argmax of the logits themselves, as transformers does: subtracting the log-sum-exp
    can round two near-tied logits to one log p."""
    logits = logits.float()  # (B, V)
    logp = logits.log_softmax(-1)  # (B, V)
    tokens = logits.argmax(-1) if cfg.strategy == "greedy" else draw(sampling_logits(logp, cfg), noise)
    return tokens, logp.gather(-1, tokens[:, None])[:, 0]


# ----------------------------------------------------------------------------------------------
# Forward passes. Both write into preallocated caches of a fixed size and read all of it back,
# masked to the positions written so far, so a decode step has the same shapes at every position.


def prefill(model: GPT, idx: torch.Tensor, kv_caches: list[KVCache], cfg: SamplingConfig | DrawTensors,
            noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a whole window idx (B, T) at positions 0 .. T - 1, writing the caches; the tokens (B,) that
    follow it and their log p (B,). The head reads the last position only: (B, V), not (B, T, V)."""
    input_pos = torch.arange(idx.size(1), device=idx.device)  # (T,)
    hidden = model(idx, input_pos=input_pos, kv_caches=kv_caches, return_hidden=True)  # (B, T, C)
    return next_token(model.lm_head(hidden[:, -1]), cfg, noise)  # logits (B, V)


def decode_one_token(model: GPT, token: torch.Tensor, input_pos: torch.Tensor, kv_caches: list[KVCache],
                     cfg: SamplingConfig | DrawTensors, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed one token (B, 1) at position input_pos (1,) against the caches; the next tokens (B,) and
    their log p (B,). Every shape is fixed: one compiled graph serves every position."""
    logits = model(token, input_pos=input_pos, kv_caches=kv_caches)  # (B, 1, V)
    return next_token(logits[:, -1], cfg, noise)


@functools.cache
def compiled_decode_one_token(device_type: str):
    """decode_one_token under torch.compile, made once per device type (gpt-fast compiles it once at
    start-up): on CUDA as CUDA graphs ("reduce-overhead": ~150 kernel launches of a small model's step
    replayed as one), elsewhere as inductor's fused kernels. Fixed shapes (dynamic=False): one graph per
    batch size, cache length (see `cache_length`), choice of filters and top_k."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    return torch.compile(decode_one_token, mode=mode, fullgraph=True, dynamic=False)


def cache_length(n: int, n_positions: int, compiled: bool) -> int:
    """Cache positions for a sequence of n tokens, at most the context: n itself, or for compiled decoding n
    rounded up to a power of two (at least 64). A compiled step has one graph per cache length, so calls
    whose lengths differ by a few tokens share graphs; the masked positions past n cost attention work only."""
    return min(n_positions, max(64, 1 << (n - 1).bit_length()) if compiled else n)


def decode_caches(model: GPT, batch_size: int, max_len: int, dtype: torch.dtype, compiled: bool) -> list[KVCache]:
    """The caches of one generation: the call's own, or for compiled decoding the model's kept ones
    (`setup_kv_caches`), which a CUDA graph reads at fixed addresses from one call to the next."""
    if not compiled:
        return model.make_kv_caches(batch_size, max_len, dtype=dtype)
    caches = model.setup_kv_caches(batch_size, max_len, dtype=dtype)
    for cache in caches if model.lm_head.weight.is_cuda else []:
        mark_static_address(cache.k)  # written in place, read at one address by the graph
        mark_static_address(cache.v)
    return caches


_kept_buffers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its (noise, last), see below


def decode_buffers(model: GPT, batch_size: int, compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two tensors a decode step reads besides the weights and caches, both refilled in place: `noise`
    (B, V) float32, uniform draws for each token, and `last` (B, 1) long, the token the next step feeds.
    The call's own; for compiled decoding, the model's kept ones, like its caches: made once per batch size
    and device, then the same tensors call after call. A CUDA graph reads its inputs at the addresses it was
    recorded with; a new tensor per call would make it record again at every call (or, with the address
    guarded, compile again)."""
    device = model.lm_head.weight.device
    make = lambda: (torch.empty(batch_size, model.config.vocab_size, device=device),  # noqa: E731
                    torch.empty(batch_size, 1, dtype=torch.long, device=device))
    if not compiled:
        return make()
    kept = _kept_buffers.get(model)
    if kept is None or kept[1].shape[0] != batch_size or kept[1].device != device:
        kept = _kept_buffers[model] = make()
        for buffer in kept if device.type == "cuda" else ():
            mark_static_address(buffer)
    return kept


# ----------------------------------------------------------------------------------------------
# The generation loop.


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


def check_generate_args(model: GPT, prompt: torch.Tensor, max_new_tokens: int, on_context_full: str) -> None:
    N = model.config.n_positions
    if prompt.dim() != 2 or prompt.dtype != torch.long or prompt.size(1) == 0:
        raise ValueError(f"prompt must be a non-empty LongTensor (B, T0) of token ids, got {prompt.dtype} "
                         f"{tuple(prompt.shape)}; for one prompt use prompt[None]; to start from nothing, "
                         "use the end-of-text token 50256")
    if int(prompt.min()) < 0 or int(prompt.max()) >= model.config.vocab_size:
        raise ValueError(f"prompt holds ids outside the vocabulary [0, {model.config.vocab_size})")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens (--max_new_tokens) must be >= 0, got {max_new_tokens}")
    if on_context_full not in ("stop", "slide"):
        raise ValueError(f"on_context_full (--on_context_full) must be 'stop' or 'slide', got {on_context_full!r}")
    if on_context_full == "stop" and prompt.size(1) > N:
        raise ValueError(f"the prompt has {prompt.size(1)} tokens but the model's context is {N} (n_positions): "
                         "shorten it, or pass on_context_full='slide' (--on_context_full slide) to keep its end")


def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    stop_token: int | None = None,
    on_context_full: ContextPolicy = "stop",
    compile: bool = False,
) -> GenerationResult:
    """Continue every row of `prompt` (B, T0) by up to `max_new_tokens` tokens drawn as `sampling` says
    (default: ordinary sampling, `SamplingConfig()`).

    All rows share the prompt length T0 (the model has no padding mask; group prompts by length).
    A row that emits `stop_token` is finished: its later positions hold `stop_token` with logprob 0
    (log 1: padding is certain, so a row's sum of logprobs is its true total; use `lengths` for
    means). Generation ends after `max_new_tokens` steps or once every row has finished (looked at every
    8 steps, each look a wait for the device; the padding columns of the steps in between are cut off).

    The model sees a window of at most n_positions (N) tokens. When it is full, `on_context_full`
    decides: "stop" ends generation (T0 + n never exceeds N); "slide" keeps the last N // 2 tokens,
    prefills them again at positions 0 .. N//2 - 1 (as a fresh cache would hold them) and goes on.
    `compile=True` runs the decode step under torch.compile (CUDA graphs on CUDA) with the model's kept
    caches (`GPT.setup_kv_caches`) and buffers (`decode_buffers`); should torch.compile reach its limit of graphs for the step, the rest
    of the call runs eagerly, with a warning. Under torch.autocast the caches hold the autocast dtype.
    """
    check_generate_args(model, prompt, max_new_tokens, on_context_full)
    sampling = SamplingConfig() if sampling is None else sampling
    device = model.lm_head.weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            loop = _Generation(model, prompt, max_new_tokens, DrawTensors.of(sampling, device),
                               torch.Generator(device=device).manual_seed(seed), stop_token, compile)
            loop.run(on_context_full)
    finally:
        model.train(was_training)
    return loop.result()


class _Generation:
    """The state of one `generate` call: the growing sequence, its log-probabilities, the finished rows."""

    CHECK_EVERY = 8  # steps between looks at whether every row has finished: each look waits for the device

    def __init__(self, model: GPT, prompt: torch.Tensor, max_new_tokens: int, cfg: DrawTensors,
                 generator: torch.Generator, stop_token: int | None, compile: bool):
        B, T0 = prompt.shape
        N, device = model.config.n_positions, prompt.device
        self.model, self.cfg, self.generator, self.stop_token = model, cfg, generator, stop_token
        self.T0, self.max_new_tokens = T0, max_new_tokens
        self.tokens = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # written in place
        self.tokens[:, :T0] = prompt
        self.logprobs = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.noise, self.last = decode_buffers(model, B, compile)  # (B, V) uniform draws, (B, 1) the fed token
        dtype = compute_dtype(model.lm_head.weight)  # the caches hold what attention computes in
        self.caches = decode_caches(model, B, cache_length(T0 + max_new_tokens, N, compile), dtype, compile)
        self.step = compiled_decode_one_token(device.type) if compile else decode_one_token
        self.n = 0  # tokens generated

    def run(self, on_context_full: ContextPolicy) -> None:
        """Prefill the window, then decode one token at a time; when the window fills, stop or slide."""
        N = self.model.config.n_positions
        start = 0  # the window is tokens[:, start:L]
        input_pos = None  # (1,) on the device: the position the next decode step writes; None: the window is
        # not in the caches yet (the start, or after a slide), so the next step is a prefill
        while self.n < self.max_new_tokens:
            L = self.T0 + self.n
            if L - start >= N:  # no position left for the next token
                if on_context_full == "stop":
                    break
                start, input_pos = L - max(1, N // 2), None  # slide: the last N // 2 tokens start again at 0
            if self.cfg.strategy != "greedy":
                self.noise.uniform_(generator=self.generator)
            if input_pos is None:
                tokens, logprobs = prefill(self.model, self.tokens[:, start:L], self.caches, self.cfg, self.noise)
                input_pos = torch.tensor([L - start], device=self.last.device)
            else:
                tokens, logprobs = self.decode(input_pos)
                input_pos += 1
            self.append(tokens, logprobs)
            if self.stop_token is not None and self.n % self.CHECK_EVERY == 0 and bool(self.finished.all()):
                break

    def decode(self, input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.last.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may now be overwritten
        args = (self.model, self.last, input_pos, self.caches, self.cfg, self.noise)
        try:
            return self.step(*args)
        except recompile_limit_hit():
            warnings.warn("torch.compile reached its recompile limit for the decode step (too many batch "
                          "sizes, cache lengths or filter choices in one process): decoding eagerly from here")
            self.step = decode_one_token
            return self.step(*args)

    def append(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Write the new tokens; a finished row gets stop_token with log p 0 (padding is certain)."""
        if self.stop_token is not None:
            tokens = tokens.masked_fill(self.finished, self.stop_token)
            logprobs = logprobs.masked_fill(self.finished, 0.0)
            self.finished |= tokens == self.stop_token
        self.tokens[:, self.T0 + self.n], self.logprobs[:, self.n] = tokens, logprobs
        self.last.copy_(tokens[:, None])  # contiguous (B, 1) at a fixed address: no new guard per position
        self.n += 1

    def result(self) -> GenerationResult:
        """The sequence as far as it went, cloned outside inference mode (ordinary tensors, usable as training
        data). Once every row has stopped, the padding columns a late look let through are cut off."""
        n, T0 = self.n, self.T0
        finished = self.finished.clone()
        lengths = torch.full_like(finished, n, dtype=torch.long)
        if self.stop_token is not None and n:  # (no token generated: nothing to look for)
            first_stop = (self.tokens[:, T0:T0 + n] == self.stop_token).int().argmax(-1)  # (B,) (0 if none)
            lengths = torch.where(finished, first_stop + 1, lengths)
            if bool(finished.all()):  # the late look's padding columns go
                n = int(lengths.max())
        return GenerationResult(tokens=self.tokens[:, :T0 + n].clone(), logprobs=self.logprobs[:, :n].clone(),
                                finished=finished, lengths=lengths, prompt_len=T0)
