"""Generating text with GPT-2: small pure functions in the gpt-fast style, read top to bottom.

    SamplingConfig            which distribution each next token is drawn from (validated on creation)
    top_k / top_p / min_p     filters: logits (B, V) -> logits, the removed tokens at -inf
    sampling_logits, sample   logits (B, V) -> log-weights of the draw -> next tokens (B,), one seeded draw per row
    prefill, decode_one_token one forward pass each: a whole window, or one token against the KV caches
    generate                  the loop: prefill, then one fixed-shape decode step per token, stopping, context policy

One knob says how far a draw leans into the tail. The plausible set is what top-k, top-p and min-p
keep of the model's own distribution p (temperature 1); inside it a token is drawn with weight p^alpha:

    alpha = 1        ordinary sampling from the plausible set
    0 < alpha < 1    hotter: sampling at temperature 1 / alpha (restricted to the set)
    alpha = 0        uniform over the set (temperature -> infinity)
    alpha < 0        inverted: the less probable a plausible token, the likelier it is drawn
                     (alpha = -1 weights each token by 1 / p; alpha = -beta is the older "hard p^-beta")
    strategy greedy  the most probable token (alpha -> infinity)

Randomness comes only from a `torch.Generator` on the model's device seeded with `seed`: the same
seed, model and prompt give the same tokens, with or without the KV cache, compiled or not.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------------------------
# Filters: logits (B, V) -> logits (B, V) with the removed tokens at -inf. Pure functions.


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th)."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose total probability is >= p.
    A token is kept while the mass strictly before it is < p, so the most probable token always is."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
    mass_before = F.pad(sorted_logits.softmax(-1).cumsum(-1)[:, :-1], (1, 0))  # (B, V), starts at 0
    remove = (mass_before >= p).scatter(-1, order, mass_before >= p)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens with p >= min_p * p_max (the most probable token always stays)."""
    logp = logits.log_softmax(-1)  # (B, V)
    threshold = logp.amax(-1, keepdim=True) + math.log(min_p) if min_p > 0 else float("-inf")
    return logits.masked_fill(logp < threshold, float("-inf"))


def sampling_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Log-weights (B, V) of the draw: alpha * log p on the plausible set, -inf elsewhere.
    Working with log p keeps p^alpha finite for alpha < 0 even where p underflows in float32."""
    logp = logits.float().log_softmax(-1)  # (B, V) the model's distribution, temperature 1
    plausible = logp
    if cfg.top_k is not None:
        plausible = top_k_filter(plausible, cfg.top_k)
    if cfg.top_p is not None:
        plausible = top_p_filter(plausible, cfg.top_p)
    if cfg.min_p is not None:
        plausible = min_p_filter(plausible, cfg.min_p)
    return torch.where(plausible.isfinite(), cfg.alpha * logp, float("-inf"))


def draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits) (B, V) -> (B,); -inf logits are never drawn.

    The Gumbel-max trick: argmax_i (logit_i + g_i) with g_i = -log(-log u_i), u_i ~ U[0, 1), is
    distributed exactly as softmax(logits), with no normalisation and no cumulative sum over V.
    torch.rand never returns 1, so g is never +inf and a -inf logit stays -inf."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device)  # (B, V) in [0, 1)
    return (logits.float() - (-u.log_()).log_()).argmax(-1)


def sample(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """Next tokens (B,) from the model's logits (B, V)."""
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    return draw(sampling_logits(logits, cfg), generator)


def model_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) (B,) under the model's own distribution: temperature 1, nothing filtered."""
    return logits.float().log_softmax(-1).gather(-1, tokens[:, None])[:, 0]


# ----------------------------------------------------------------------------------------------
# Forward passes. Both write into preallocated caches of a fixed size and read all of it back,
# masked to the positions written so far, so a decode step has the same shapes at every position.


def prefill(model: GPT, idx: torch.Tensor, kv_caches: list[KVCache] | None) -> torch.Tensor:
    """Run a whole window idx (B, T) from position 0, filling `kv_caches` when given (None is the
    uncached path: everything recomputed). Returns the float logits (B, V) of its last position."""
    input_pos = torch.arange(idx.size(1), device=idx.device) if kv_caches is not None else None  # (T,)
    logits, _ = model(idx, input_pos=input_pos, kv_caches=kv_caches, last_logits_only=True)  # (B, 1, V)
    return logits[:, -1].float()


def decode_one_token(model: GPT, token: torch.Tensor, input_pos: torch.Tensor, kv_caches: list[KVCache]) -> torch.Tensor:
    """Feed one token (B, 1) at position input_pos (1,) against the caches; float logits (B, V) for the next one."""
    logits, _ = model(token, input_pos=input_pos, kv_caches=kv_caches)  # (B, 1, V)
    return logits[:, -1].float()


@functools.cache
def compiled_decode_one_token(device_type: str):
    """decode_one_token under torch.compile, made once per device type: on CUDA as CUDA graphs
    ("reduce-overhead": ~150 kernel launches of a small model's step replayed as one), elsewhere as
    inductor's fused kernels. Fixed shapes (dynamic=False): one graph per batch size and cache length."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    return torch.compile(decode_one_token, mode=mode, fullgraph=True, dynamic=False)


# Compiled decoding keeps its caches between generate() calls of the same shape: a CUDA graph replays
# fixed addresses, so new caches at every call would mean recording the graph again every call.
_static_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kv_caches_for(model: GPT, batch_size: int, max_len: int, dtype: torch.dtype, static: bool) -> list[KVCache]:
    """Caches for one generation: new ones, or (static) the model's kept ones when their shape matches."""
    if not static:
        return model.make_kv_caches(batch_size, max_len, dtype=dtype)
    key = (batch_size, max_len, dtype)
    kept = _static_caches.get(model)
    if kept is None or kept[0] != key:
        _static_caches.pop(model, None)  # free the old ones first
        caches = model.make_kv_caches(batch_size, max_len, dtype=dtype)
        for cache in caches if model.lm_head.weight.is_cuda else []:
            torch._dynamo.mark_static_address(cache.k)  # written in place, read at one address by the graph
            torch._dynamo.mark_static_address(cache.v)
        _static_caches[model] = kept = (key, caches)
    return kept[1]


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
    strategy: SamplingConfig = SamplingConfig(),
    seed: int = 0,
    stop_token: int | None = None,
    use_cache: bool = True,
    on_context_full: ContextPolicy = "stop",
    compile: bool = False,
) -> GenerationResult:
    """Continue every row of `prompt` (B, T0) by up to `max_new_tokens` tokens.

    All rows share the prompt length T0 (the model has no padding mask; group prompts by length).
    A row that emits `stop_token` is finished: its later positions hold `stop_token` with logprob 0
    (log 1: padding is certain, so a row's sum of logprobs is its true total; use `lengths` for
    means). Generation ends after `max_new_tokens` steps or when every row has finished.

    The model sees a window of at most n_positions (N) tokens. When it is full, `on_context_full`
    decides: "stop" ends generation (T0 + n never exceeds N); "slide" keeps the last N // 2 tokens,
    prefills them again at positions 0 .. N//2 - 1 (as a fresh cache would hold them) and goes on.
    `use_cache=False` recomputes the whole window every step: the reference path, the same tokens.
    `compile=True` runs the decode step under torch.compile (CUDA graphs on CUDA); its caches are
    kept for the next call of the same batch size and length. Under torch.autocast the caches hold
    the autocast dtype.
    """
    check_generate_args(model, prompt, max_new_tokens, on_context_full)
    device = model.lm_head.weight.device
    B, T0 = prompt.shape
    N = model.config.n_positions
    S = min(N, T0 + max_new_tokens)  # cache positions: never more than the context or the final sequence
    dtype = compute_dtype(model.lm_head.weight)  # the caches hold what attention computes in
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            caches = kv_caches_for(model, B, S, dtype, static=compile) if use_cache else None
            step = compiled_decode_one_token(device.type) if compile else decode_one_token
            out = _generate_loop(model, prompt, max_new_tokens, caches, step, strategy,
                                 torch.Generator(device=device).manual_seed(seed), stop_token, on_context_full)
    finally:
        model.train(was_training)
    return _result(*out, T0, stop_token)


def _generate_loop(model, prompt, max_new_tokens, caches, step, strategy, generator, stop_token, on_context_full):
    """The loop of `generate`: returns (tokens (B, L), logprobs (B, n), finished (B,))."""
    B, T0 = prompt.shape
    N, device = model.config.n_positions, prompt.device
    tokens = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # written in place
    tokens[:, :T0] = prompt
    logprobs = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    positions = torch.arange(N, device=device)  # input_pos of every decode step is a view of this
    L, start, cached, n = T0, 0, 0, 0  # sequence length; the window is tokens[:, start:L]; positions cached
    while n < max_new_tokens:
        if L - start >= N:  # no position left for the next token
            if on_context_full == "stop":
                break
            start, cached = L - max(1, N // 2), 0  # slide: the last N // 2 tokens start again at position 0
        if caches is None:
            logits = prefill(model, tokens[:, start:L], None)
        elif cached == 0:
            logits = prefill(model, tokens[:, start:L], caches)
        else:
            if device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may now be overwritten
            logits = step(model, tokens[:, L - 1:L], positions[L - 1 - start:L - start], caches)
        cached = L - start
        next_token = sample(logits, strategy, generator)  # (B,)
        logprob = model_logprobs(logits, next_token)  # (B,)
        if stop_token is not None:
            next_token = next_token.masked_fill(finished, stop_token)
            logprob = logprob.masked_fill(finished, 0.0)
            finished |= next_token == stop_token
        tokens[:, L], logprobs[:, n] = next_token, logprob
        L, n = L + 1, n + 1
        if stop_token is not None and bool(finished.all()):
            break
    return tokens[:, :L], logprobs[:, :n], finished


def _result(tokens, logprobs, finished, T0: int, stop_token: int | None) -> GenerationResult:
    # Cloned outside inference mode: ordinary tensors, usable as training data.
    tokens, logprobs, finished = tokens.clone(), logprobs.clone(), finished.clone()
    lengths = torch.full_like(finished, logprobs.size(1), dtype=torch.long)
    if stop_token is not None:
        first_stop = (tokens[:, T0:] == stop_token).int().argmax(-1)  # (B,) first stop token (0 if none)
        lengths = torch.where(finished, first_stop + 1, lengths)
    return GenerationResult(tokens=tokens, logprobs=logprobs, finished=finished, lengths=lengths, prompt_len=T0)


# ----------------------------------------------------------------------------------------------
# Command line: look at what a model learned.


@dataclass
class SampleArgs(SamplingConfig):
    """Print continuations of a prompt, e.g.
    python -m gpt2.sampler --model gpt2 --prompt "The meaning of life" --alpha -1 --min_p 0.1"""

    model: str = "gpt2"  # a published name, a Hugging Face GPT-2 directory or a train.py checkpoint
    prompt: str = ""  # text to continue; empty starts from <|endoftext|>
    max_new_tokens: int = 64  # tokens generated per continuation (fewer if <|endoftext|> comes first)
    num_samples: int = 3  # continuations of the prompt, generated together as one batch
    seed: int = 0  # seeds the sampling generator: the same seed prints the same continuations
    stop_at_eot: bool = True  # end a continuation at <|endoftext|>
    on_context_full: ContextPolicy = "stop"  # at the context length: stop, or keep the last half
    device: str = "auto"  # cpu, cuda, cuda:1, ...; auto picks cuda when available
    compile: bool | None = None  # torch.compile the decode step (CUDA graphs on CUDA); None: on for CUDA


def main(argv: list[str] | None = None) -> None:
    import sys

    from gpt2 import tokenizer
    from gpt2.checkpoint import CheckpointError, load_model
    from gpt2.cli import config_to_dict, parse_config
    from gpt2.device import compile_wanted, resolve_device_and_dtype
    from gpt2.weights import DownloadError, WeightsError

    args = parse_config(SampleArgs, argv)
    print(config_to_dict(args))
    device, _ = resolve_device_and_dtype(args.device)
    strategy = SamplingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)})
    try:
        ids = tokenizer.encode(args.prompt) or [tokenizer.EOT_ID]
        model = load_model(args.model, device=device)
        prompt = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)  # (num_samples, T0)
        out = generate(model, prompt, args.max_new_tokens, strategy=strategy, seed=args.seed,
                       stop_token=tokenizer.EOT_ID if args.stop_at_eot else None, on_context_full=args.on_context_full,
                       compile=compile_wanted(args.compile, device))
    except (RuntimeError, CheckpointError, WeightsError, DownloadError, ValueError) as e:
        sys.exit(f"error: {e}")  # RuntimeError: the BPE files are neither cached nor downloadable
    for i in range(args.num_samples):
        n = int(out.lengths[i])
        mean = out.logprobs[i, :n].mean().item() if n else float("nan")
        print(f"\n=== sample {i}: {n} tokens, mean log p {mean:.3f} (model distribution) ===")
        print(args.prompt + tokenizer.decode(out.new_tokens[i, :n].tolist()))


if __name__ == "__main__":
    main()
