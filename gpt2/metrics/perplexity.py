"""Perplexity of a whole token sequence with sliding windows (HF's "perplexity of fixed-length models").

A model with a context of T tokens cannot see a whole split at once, so the split is cut into
windows. Every target t[1..N-1] is scored exactly once; a window that starts before the first
target it scores uses the tokens in between as context only (their targets are -100). With
stride == seq_len the windows are disjoint; a smaller stride gives each scored token at least
seq_len - stride tokens of context, which lowers the perplexity and costs seq_len / stride times
the compute. The windows themselves come from `windows.EvalBatches` (one place for the idea).

Reported figures, all from the summed negative log-likelihood (NLL, in nats) of the targets:
    ppl            exp(NLL / n_tokens)      per BPE token
    bits_per_byte  NLL / ln 2 / n_bytes     n_bytes: UTF-8 bytes of the text the tokens encode
    word_ppl       exp(NLL / n_words)       n_words: whitespace-separated words of that raw text,
                                            the GPT-2 paper's word-level convention
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from gpt2.device import autocast
from gpt2.losses import IGNORE_INDEX, linear_cross_entropy
from gpt2.metrics.windows import EvalBatches


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf  # beyond ~709 a float64 overflows


@dataclass
class PerplexityResult:
    total_nll: float  # summed negative log-likelihood of the scored targets, nats
    n_tokens: int  # targets scored: len(tokens) - 1
    seq_len: int  # window length the model saw
    stride: int  # tokens between window starts
    n_bytes: int | None = None  # UTF-8 bytes of the evaluated text, when given
    n_words: int | None = None  # whitespace-separated words of the evaluated text, when given
    token_nll: np.ndarray | None = None  # (n_tokens,) float32 NLL of each target t[1..n-1], in order (per_token=True)

    @property
    def loss(self) -> float:
        """Mean NLL per token (nats): the validation loss."""
        return self.total_nll / self.n_tokens

    @property
    def ppl(self) -> float:
        return _exp(self.loss)

    @property
    def bits_per_byte(self) -> float | None:
        return None if self.n_bytes is None else self.total_nll / math.log(2) / self.n_bytes

    @property
    def word_ppl(self) -> float | None:
        return None if self.n_words is None else _exp(self.total_nll / self.n_words)

    def as_dict(self) -> dict:
        """Every field and derived figure, for JSON logs."""
        return {"total_nll": self.total_nll, "n_tokens": self.n_tokens, "loss": self.loss, "ppl": self.ppl,
                "bits_per_byte": self.bits_per_byte, "word_ppl": self.word_ppl, "n_bytes": self.n_bytes,
                "n_words": self.n_words, "seq_len": self.seq_len, "stride": self.stride}


def text_size(text: str) -> tuple[int, int]:
    """(n_bytes, n_words) of a raw text: its UTF-8 bytes and its whitespace-separated words."""
    return len(text.encode("utf-8")), len(text.split())


def evaluate_perplexity(
    model: torch.nn.Module,
    tokens,
    *,
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype = torch.float32,
    n_bytes: int | None = None,
    n_words: int | None = None,
    progress: bool = True,
    per_token: bool = False,
) -> PerplexityResult:
    """Score every next-token target of `tokens` once, in order, with windows of `seq_len` tokens.

    `tokens`: anything with len() whose slices are integer arrays (a NumPy array, or a split read by
    `data.loader.SplitTokens`). `model` is a `GPT` already on `device`; it is put in eval mode for the call and
    its training flag restored afterwards. `autocast_dtype` (e.g. torch.bfloat16) runs the forward
    pass under autocast (float32: none); the cross-entropy is always taken in float32, chunk by chunk from
    the final hidden states (gpt2/losses.py), so the (B, T, V) logits are never held whole.
    `per_token` also keeps the NLL of every target, in order (the windows score each target once, in order).
    """
    n_positions = model.config.n_positions
    if not 1 <= seq_len <= n_positions:
        raise ValueError(f"seq_len={seq_len} must lie in [1, {n_positions}] (the model's n_positions)")
    device = torch.device(device)
    param_device = next(model.parameters()).device
    if param_device.type != device.type or (device.index is not None and param_device != device):
        raise ValueError(f"the model is on {param_device} but device={device}: move it with model.to('{device}') "
                         f"or pass device='{param_device}'")
    batches = EvalBatches(tokens, seq_len, stride, batch_size)
    was_training = model.training
    model.eval()
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    n_scored, token_nll = 0, []
    try:
        with torch.inference_mode():
            for x, y in tqdm(batches, desc=f"perplexity T={seq_len} stride={batches.stride}", unit="batch",
                             disable=not progress):
                n_scored += int((y != IGNORE_INDEX).sum())
                x, y = x.to(device), y.to(device)  # (B, T) each
                with autocast(device, autocast_dtype):
                    hidden = model(x, return_hidden=True)  # (B, T, C)
                    nll = linear_cross_entropy(hidden, model.lm_head.weight, y, reduction="none")  # (B*T,), 0 if ignored
                total_nll += nll.double().sum()  # no .item() here: the device keeps running ahead
                if per_token:
                    token_nll.append(nll[y.flatten() != IGNORE_INDEX].float().cpu())  # row by row: target order
    finally:
        model.train(was_training)
    assert n_scored == batches.n_scored, f"scored {n_scored} targets, expected {batches.n_scored}"
    return PerplexityResult(float(total_nll), n_scored, seq_len, batches.stride, n_bytes, n_words,
                            torch.cat(token_nll).numpy() if per_token else None)
