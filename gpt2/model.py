"""GPT-2, written out in plain PyTorch.

Parameter names are exactly those of Hugging Face's `GPT2LMHeadModel`, so the published checkpoint
maps onto this module with no renaming table: drop the `attn.bias` / `attn.masked_bias` buffers and
transpose the four Conv1D weights (see `gpt2/weights.py`). Shapes: B batch, T tokens, C = n_embd,
nh heads, hs = C // nh head size, V vocabulary.

The forward pass takes the position of its first token (`start_pos`) and optional per-layer KV
caches, so that cached decoding (`gpt2/sampler.py`) uses the same code as training.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.config import GPTConfig


class Linear(nn.Linear):
    """nn.Linear: the same parameters, the same y = x W^T + b, with one speed-up for decoding on CPU.

    A decode step multiplies a few rows (the batch) by each weight. With 7 to 15 rows, the CPU BLAS
    (MKL) reads an (out, in) weight given as the transposed right operand several times over; the
    same product taken the other way round, y^T = W x^T + b, streams the weight once. For `gpt2`
    that makes a float32 decode step at batch 8 about 1.1-1.2x faster (BENCHMARKS.md). Other row counts,
    other dtypes and CUDA (cuBLAS reads either way equally well) take the ordinary path, and so does
    a weight relaid for a long generation (`gpt2.sampler.decode_layout`), which F.linear reads well.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        mkl_few_rows = x.device.type == "cpu" and x.dtype == torch.float32 and 7 <= rows < 16
        if not (mkl_few_rows and self.weight.is_contiguous()):
            return F.linear(x, self.weight, self.bias)
        xt = x.reshape(rows, self.in_features).t()  # (in, rows)
        yt = self.weight @ xt if self.bias is None else torch.addmm(self.bias[:, None], self.weight, xt)  # (out, rows)
        # Copied back to the usual row-major layout (rows x out floats, cheap): attention over a long
        # KV cache is slower with the transposed view as its query.
        return yt.t().contiguous().view(*x.shape[:-1], self.out_features)  # (..., out)


class KVCache(nn.Module):
    """Keys and values of one layer, preallocated for `max_len` positions and written in place.

    `update(start_pos, k, v)` stores the new (B, nh, T, hs) keys and values at positions
    [start_pos, start_pos + T) and returns everything cached so far, positions [0, start_pos + T).
    """

    def __init__(self, batch_size: int, max_len: int, n_head: int, head_size: int, *, device=None, dtype=None):
        super().__init__()
        shape = (batch_size, n_head, max_len, head_size)  # (B, nh, max_len, hs)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start_pos + k.size(2)
        if end > self.k.size(2):
            raise ValueError(f"KV cache holds {self.k.size(2)} positions; cannot write up to position {end}")
        self.k[:, :, start_pos:end] = k
        self.v[:, :, start_pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, end, hs) each


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)  # fused query, key, value projection
        self.c_proj = Linear(config.n_embd, config.n_embd)  # output projection (a residual branch)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)  # (B, nh, start_pos + T, hs): all positions so far
        S = k.size(2)  # number of key positions
        if S == T:
            # Training, or a prefill of an empty cache: the ordinary lower-triangular mask.
            mask, is_causal = None, True
        elif T == 1:
            # One new token attends to every cached position, itself included: no mask needed.
            mask, is_causal = None, False
        else:
            # T new tokens after S - T cached ones: query i (at position S - T + i) sees keys 0 .. S - T + i.
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)  # (T, S)
            is_causal = False
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new": the tanh approximation, not erf
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)  # a residual branch
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

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), start_pos, cache)
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
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: the output head reads the embedding
        if self.lm_head.weight.device.type != "meta":  # a model built on "meta" is filled by a loader instead
            self.init_weights(seed)

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
        """One preallocated `KVCache` per layer, for `batch_size` rows of up to `max_len` positions."""
        max_len = max_len or self.config.n_positions
        p = self.lm_head.weight
        return [KVCache(batch_size, max_len, self.config.n_head, self.config.head_size,
                        device=device or p.device, dtype=dtype or p.dtype) for _ in range(self.config.n_layer)]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        start_pos: int = 0,
        kv_caches: list[KVCache] | None = None,
        last_logits_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids (B, T) -> logits (B, T, V), and the mean cross-entropy against `targets` (B, T)
        when given (positions with target -100 are ignored).

        `start_pos` is the position of idx[:, 0] in the sequence; with `kv_caches` (one per layer)
        the keys and values of earlier positions come from the caches. `last_logits_only=True`
        computes the head for the final position only, giving (B, 1, V): the cheaper path for decoding.
        """
        B, T = idx.shape
        if start_pos + T > self.config.n_positions:
            raise ValueError(
                f"sequence reaches position {start_pos + T} but the model's context is "
                f"{self.config.n_positions} tokens (n_positions)"
            )
        pos = torch.arange(start_pos, start_pos + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, start_pos, kv_caches[i] if kv_caches is not None else None)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if last_logits_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, the tied head counted once (124,439,808 for `gpt2`)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields the shared tensor once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n
