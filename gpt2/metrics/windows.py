"""The windows of a sliding-window evaluation (HF's "perplexity of fixed-length models").

    eval_windows   (begin, end, n_context) of every window over a sequence of N tokens
    EvalBatches    those windows as (x, y) batches; y is -100 where a target is context only

A model with a context of T tokens cannot see a whole text at once, so the text is cut into windows
that together score every target t[1..N-1] exactly once, in order. The perplexity (perplexity.py) scores
through them; the n-gram baselines (ngram.py) score the same targets t[1..N-1]. `tokens` is anything with len()
whose slices are integer arrays: a NumPy array, or a split of token shards read by `data.loader`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gpt2.losses import IGNORE_INDEX  # targets with this id are context only: the loss skips them


def eval_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows that score every target of a sequence exactly once, in order.

    Tokens t[0..N-1]; the targets are t[1..N-1]. Window (begin, end, n_context) feeds x = t[begin:end]
    and predicts y = t[begin+1:end+1]; its first n_context targets were scored by an earlier window
    and serve only as context. Windows start every `stride` tokens (HF's "perplexity of fixed-length
    models"): stride == seq_len gives disjoint windows, a smaller stride gives each scored target
    seq_len - stride tokens of extra context.
    """
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must lie in [1, seq_len={seq_len}], got {stride} (a larger stride would skip targets)")
    if n_tokens < 2:
        raise ValueError(f"need at least 2 tokens to score one target, got {n_tokens}")
    last = n_tokens - 1  # x may reach t[N-2]: end <= N - 1
    windows, scored_until = [], 0  # targets y-positions [0, scored_until) are done
    for begin in range(0, last, stride):
        end = min(begin + seq_len, last)
        windows.append((begin, end, scored_until - begin))
        scored_until = end
        if end == last:
            break
    return windows


class EvalBatches:
    """The whole split in order, as (x, y) int64 (B, seq_len); y is -100 where a target is context only.

    A short last window is padded at its end: x with 0, y with -100. The last batch may have fewer
    than B rows. n_scored = N - 1 targets in total, each exactly once.
    """

    def __init__(self, tokens, seq_len: int, stride: int | None = None, batch_size: int = 8):
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.stride = seq_len if stride is None else stride
        self.windows = eval_windows(len(tokens), seq_len, self.stride)
        self.n_scored = len(tokens) - 1

    def __len__(self) -> int:
        return math.ceil(len(self.windows) / self.batch_size)

    def __iter__(self):
        for first in range(0, len(self.windows), self.batch_size):
            rows = self.windows[first : first + self.batch_size]
            x = torch.zeros(len(rows), self.seq_len, dtype=torch.int64)  # (B, T)
            y = torch.full((len(rows), self.seq_len), IGNORE_INDEX, dtype=torch.int64)  # (B, T)
            for row, (begin, end, n_context) in enumerate(rows):
                window = torch.from_numpy(np.asarray(self.tokens[begin : end + 1], dtype=np.int64))
                x[row, : end - begin] = window[:-1]
                y[row, n_context : end - begin] = window[1 + n_context :]
            yield x, y
