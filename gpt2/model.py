"""GPT-2, written out in plain PyTorch.

Parameter names are exactly those of Hugging Face's `GPT2LMHeadModel`, so the published checkpoint
maps onto this module with no renaming table: drop the `attn.bias` / `attn.masked_bias` buffers and
transpose the four Conv1D weights (see `gpt2/weights.py`). Shapes: B batch, T tokens, C = n_embd,
nh heads, hs = C // nh head size, V vocabulary.

The forward pass optionally takes per-layer KV caches and the positions of its tokens, so that
cached decoding (`gpt2/sampler.py`) runs the same modules as training.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.config import GPTConfig


class KVCache(nn.Module):
    """Keys and values of one layer, preallocated for `batch_size` rows of `max_len` positions.

    Every call has the same shapes (gpt-fast's design): `update(input_pos, k, v)` writes the new
    (B, nh, T, hs) keys and values at positions `input_pos` (T,) in place and returns the whole cache,
    (B, nh, max_len, hs) each; attention then masks the positions not written yet. A decode step is
    therefore one fixed-shape computation, which torch.compile turns into one graph (on CUDA, one
    CUDA-graph replay) for every position.
    """

    def __init__(self, batch_size: int, max_len: int, n_head: int, head_size: int, *, device=None, dtype=None):
        super().__init__()
        shape = (batch_size, n_head, max_len, head_size)  # (B, nh, S, hs), S = max_len
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # An indexed write (index_put_), which torch.compile keeps in place: no copy of the cache per step.
        self.k[:, :, input_pos] = k.to(self.k.dtype)
        self.v[:, :, input_pos] = v.to(self.v.dtype)
        return self.k, self.v  # (B, nh, S, hs) each


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # fused query, key, value projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # output projection (a residual branch)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, input_pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        # scaled_dot_product_attention computes softmax(q @ k^T / sqrt(hs) + M) @ v, M = 0 where a query may
        # see a key and -inf where it may not: (B, nh, T, hs) @ (B, nh, hs, S) -> (B, nh, T, S) weights,
        # @ (B, nh, S, hs) -> (B, nh, T, hs). It runs as one fused kernel (flash attention on a GPU) that
        # never writes the (T, S) weights to memory.
        if cache is None:  # training, evaluation: the ordinary lower-triangular mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:  # against the whole cache (B, nh, S, hs); mask (T, S) hides the positions not written yet
            k, v = cache.update(input_pos, k, v)
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new": the tanh approximation, not erf
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)  # a residual branch
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, input_pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, input_pos, mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding (V, C)
            wpe=nn.Embedding(config.n_positions, config.n_embd),  # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: the output head reads the embedding
        if self.lm_head.weight.device.type != "meta":  # a model built on "meta" is filled by a loader instead
            self.init_weights(seed)
        self._kv_caches: list[KVCache] | None = None  # setup_kv_caches' (not a module: no state, no buffers)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """GPT-2's initialisation, from its own seeded generator (the global RNG is left alone):
        weights N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 * n_layer)) because each block
        adds two of them to the residual stream, biases zero, LayerNorm scale one."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():  # the tied head appears once, as transformer.wte.weight
            if name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
                std = 0.02
            elif name.endswith("c_proj.weight"):
                std = residual_std
            elif name.startswith("transformer.ln") or ".ln_" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            else:  # biases
                p.zero_()
                continue
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)

    def make_kv_caches(self, batch_size: int, max_len: int | None = None, *, device=None, dtype=None) -> list[KVCache]:
        """One preallocated `KVCache` per layer, for `batch_size` rows of `max_len` positions (default: the context)."""
        max_len = max_len or self.config.n_positions
        if max_len > self.config.n_positions:
            raise ValueError(f"a KV cache of {max_len} positions exceeds the model's context of "
                             f"{self.config.n_positions} (n_positions)")
        p = self.lm_head.weight
        return [KVCache(batch_size, max_len, self.config.n_head, self.config.head_size,
                        device=device or p.device, dtype=dtype or p.dtype) for _ in range(self.config.n_layer)]

    def setup_kv_caches(self, batch_size: int, max_len: int, *, dtype: torch.dtype) -> list[KVCache]:
        """The model's own decoding caches (gpt-fast's `setup_caches`): made at the first call and kept, the
        same tensors again while batch size, length, dtype and device stay, new ones when they change. A
        compiled decode step (on CUDA, a recorded CUDA graph) reads them at fixed addresses, call after call."""
        p = self.lm_head.weight
        kept = self._kv_caches
        if kept is None or kept[0].k.shape[::2] != (batch_size, max_len) or kept[0].k.dtype != dtype \
                or kept[0].k.device != p.device:
            self._kv_caches = None  # the old ones go first
            self._kv_caches = self.make_kv_caches(batch_size, max_len, dtype=dtype)
        return self._kv_caches

    def forward(
        self,
        idx: torch.Tensor,
        *,
        input_pos: torch.Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V): `logits = model(idx)`.

        return_hidden=True returns the hidden states (B, T, C) after the final LayerNorm instead: what
        the head reads, `logits = model.lm_head(hidden)`. Training and evaluation take their loss from
        them, never from the whole (B, T, V) logits (412 MB in float32 for one (2, 1024) batch):

            hidden = model(idx, return_hidden=True)                          # (B, T, C)
            loss = linear_cross_entropy(hidden, model.lm_head.weight, targets)
            # the same value and gradients as F.cross_entropy(model(idx).flatten(0, 1), targets.flatten()),
            # taken chunk by chunk (gpt2/losses.py)

        Cached decoding (gpt2/sampler.py): `kv_caches` (one per layer, `make_kv_caches`) and
        `input_pos` (T,), the positions of idx's tokens. Every token attends to the cache positions
        <= its own, so the positions after the ones written so far must not be read: generation
        writes them in order.
        """
        B, T = idx.shape
        if kv_caches is None:
            if T > self.config.n_positions:
                raise ValueError(f"sequence of {T} tokens exceeds the model's context of "
                                 f"{self.config.n_positions} tokens (n_positions)")
            pos, mask = torch.arange(T, device=idx.device), None  # (T,)
        else:
            pos = input_pos
            S = kv_caches[0].k.size(2)
            mask = torch.arange(S, device=idx.device) <= input_pos[:, None]  # (T, S): key position <= query's
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_caches[i] if kv_caches is not None else None, pos, mask)
        x = self.transformer.ln_f(x)  # (B, T, C)
        return x if return_hidden else self.lm_head(x)  # (B, T, C) or (B, T, V)

    def num_params(self) -> int:
        """Parameter count, the tied head counted once (124,439,808 for `gpt2`)."""
        return sum(p.numel() for p in self.parameters())  # parameters() yields the shared tensor once
