"""Greedy decoding with a fixed-shape step, so that torch.compile can replay it as one CUDA graph.

At batch 1 a decode step of gpt2 is ~150 small kernels; launched one by one from Python they cost
more than the arithmetic. A CUDA graph launches them all at once, but replays fixed shapes at fixed
addresses. The model's own cached path (`GPT.forward` with `kv_caches`) attends over
`cache[:, :, :pos + 1]`, a slice that grows every step: a new shape each time. Here a step attends
over the whole preallocated cache with a mask of the positions written so far (gpt-fast's approach),
and the position is a tensor: the same shapes every step.

The weights are the model's own modules and the prompt is prefilled by the model's own forward;
only the attention of the decode step is written out again below (tests/test_bench.py checks it
against `gpt2.sampler.generate`). Shapes: B batch, S cache positions, C width, nh heads, hs head size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.model import GPT, CausalSelfAttention


class StaticDecoder(nn.Module):
    """One decode step, token (B, 1) at position `pos` (a (1,) long tensor) -> float logits (B, V),
    against caches for `batch_size` rows of `max_len` positions held as this module's buffers (so a
    compiled step mutates them in place, as CUDA graphs require)."""

    def __init__(self, model: GPT, batch_size: int, max_len: int):
        super().__init__()
        self.model = model
        self.caches = nn.ModuleList(model.make_kv_caches(batch_size, max_len))
        p = model.lm_head.weight
        self.register_buffer("positions", torch.arange(max_len, device=p.device), persistent=False)  # (S,)

    def attend(self, attn: CausalSelfAttention, x: torch.Tensor, pos: torch.Tensor, cache, valid: torch.Tensor):
        B, T, C = x.shape  # T = 1
        q, k, v = attn.c_attn(x).split(C, dim=2)  # (B, 1, C) each
        q = q.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)  # (B, nh, 1, hs)
        k = k.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)  # (B, nh, 1, hs)
        v = v.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)  # (B, nh, 1, hs)
        cache.k.index_copy_(2, pos, k)  # write position pos of (B, nh, S, hs)
        cache.v.index_copy_(2, pos, v)
        y = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=valid)  # (B, nh, 1, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, 1, C)
        return attn.c_proj(y)

    def forward(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.model.transformer
        x = h.wte(token) + h.wpe(pos)  # (B, 1, C)
        valid = (self.positions <= pos).view(1, -1)  # (1, S): the positions written so far, this one included
        for block, cache in zip(h.h, self.caches):
            x = x + self.attend(block.attn, block.ln_1(x), pos, cache, valid)
            x = x + block.mlp(block.ln_2(x))
        return self.model.lm_head(h.ln_f(x))[:, -1].float()  # (B, V)


def compile_step(decoder: StaticDecoder) -> StaticDecoder:
    """torch.compile the step: CUDA graphs ("reduce-overhead") on CUDA, fused kernels on CPU."""
    cuda = decoder.positions.device.type == "cuda"
    if cuda:
        for buffer in decoder.caches.buffers():
            torch._dynamo.mark_static_address(buffer)  # one address for the graph's life: written in place, never copied
    return torch.compile(decoder, mode="reduce-overhead" if cuda else None, fullgraph=True, dynamic=False)


@torch.inference_mode()
def greedy(decoder: StaticDecoder, step, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy continuation of `prompt` (B, T0) by `max_new_tokens` >= 1 tokens: the prompt is
    prefilled by the model's own forward into the decoder's caches, then `step` (the decoder, or
    `compile_step(decoder)`) runs once per token. Returns (B, T0 + max_new_tokens)."""
    model, T0 = decoder.model, prompt.size(1)
    S = decoder.positions.numel()
    if T0 + max_new_tokens > S:
        raise ValueError(f"prompt {T0} + {max_new_tokens} new tokens exceed the decoder's {S} cached positions")
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(prompt, kv_caches=list(decoder.caches), last_logits_only=True)  # (B, 1, V)
        out = [prompt, logits[:, -1].argmax(-1, keepdim=True)]  # (B, 1) the first new token
        positions = torch.arange(T0, T0 + max_new_tokens - 1, device=prompt.device)  # made once: no copy per step
        for i in range(max_new_tokens - 1):
            if prompt.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may now be overwritten
            out.append(step(out[-1], positions[i : i + 1]).argmax(-1, keepdim=True))  # (B, 1)
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)
