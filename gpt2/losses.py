"""Losses of the language-model head that never hold the whole (B, T, V) float32 logits.

    linear_cross_entropy  the mean next-token loss; it equals, value and gradients, the one line
                              F.cross_entropy((hidden @ weight.T).float().flatten(0, -2), targets.flatten())
    linear_kd_loss        w * T^2 * KL(teacher || student, both softened by T) + (1 - w) * CE(student), w = kd_weight,
                          the distillation loss (Hinton et al., 2015) of the two models' hidden @ weight.T

At the gpt2 shape one (B, T) = (2, 1024) batch has 2,048 x 50,257 logits: 412 MB in float32, and the
plain loss keeps three or four such tensors alive (logits, log-softmax, their gradients; twice that
for distillation). Here the rows (the N = B * T positions) are processed `chunk_size` at a time, the
"fused linear cross-entropy" of Liger-Kernel and Apple's Cut Cross-Entropy (one chunk loop, `_head_chunks`,
serves both losses): for each chunk the forward pass computes the logits, the loss, and at once
d loss / d logits, turned straight into the chunk's
gradient of the hidden states and the running gradient of the head's weight. Nothing of size N x V is
kept; backward only scales the stored gradients by grad_output, so the head costs the same three
matrix multiplies as before and is never recomputed. When no gradient is wanted (no_grad,
inference_mode, or nothing requires grad) the gradient work is skipped.

Precision follows autocast: the matrix multiplies run in autocast's dtype (bf16 on a GPU), the softmax
and loss in float32, the weight's gradient is accumulated in float32 over the chunks, and each gradient
is returned in its input's dtype. Shapes: C width, V vocabulary, N rows, n rows of one chunk.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpt2.device import compute_dtype

IGNORE_INDEX = -100  # targets with this id are not scored


def default_chunk_size(device: torch.device) -> int:
    """Rows per chunk: the work of one chunk against the memory it holds. A chunk of n rows holds about two
    (n, V) float32 buffers for the cross-entropy, five for distillation, and adds its (n, C) @ (C, V) product
    into the head's (V, C) float32 weight gradient, which is read and written once per chunk.
    On a GPU, 2,048 rows (411 MB per buffer at V = 50,257) keep that accumulator's traffic to eight passes
    per 16K-token micro-batch (64 at 256 rows: ~20 GB) and give the tensor cores 2,048 x 768 x 50,257 per
    multiply. Elsewhere 256 rows (49 MB per buffer) keep a CPU's peak low; both are multiples of 128,
    the matrix tiles' size."""
    return 2048 if device.type == "cuda" else 256


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         reduction: str = "mean", chunk_size: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets): hidden (B, T, C) or (N, C), weight (V, C), targets (B, T) or (N,).

    As F.cross_entropy with ignore_index=-100: "mean" over the valid positions (nan when there are
    none, as F.cross_entropy gives), "sum", or "none": the NLL per position (N,), 0 where ignored.
    "none" cannot know each position's grad_output in the forward pass, so it checkpoints each chunk
    instead and recomputes its logits in backward (one chunk at a time still).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    chunk_size = _check_chunk_size(chunk_size, hidden.device)
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, C), (N,)
    if reduction == "none":
        chunks = [slice(i, i + chunk_size) for i in range(0, h.size(0), chunk_size)]
        return torch.cat([checkpoint(_nll_rows, h[rows], weight, y[rows], use_reentrant=False) for rows in chunks])
    return _LinearCrossEntropy.apply(h, weight, y, reduction == "mean", chunk_size, compute_dtype(hidden),
                                     torch.is_grad_enabled())


def linear_kd_loss(hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                   teacher_weight: torch.Tensor, targets: torch.Tensor, *, temperature: float, kd_weight: float,
                   chunk_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kd_weight) * CE(student, targets).

    hidden (B, T, C) and teacher_hidden (B, T, C') are the two models' final hidden states, weight (V, C)
    and teacher_weight (V, C') their heads. Both terms are means over the valid positions (0 when there
    are none); the KL is summed over the vocabulary. Why T^2: the gradient of the softened KL scales as
    1 / T^2, so multiplying by T^2 keeps the two terms on the same scale whatever the temperature.
    No gradient reaches the teacher. Returns (loss, {"kl", "ce"} detached).
    """
    if not temperature > 0:
        raise ValueError(f"kd temperature (--kd_temperature) must be > 0, got {temperature}")
    if not 0 <= kd_weight <= 1:
        raise ValueError(f"kd_weight (--kd_weight) must lie in [0, 1], got {kd_weight}")
    if weight.size(0) != teacher_weight.size(0) or hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(f"student hidden {tuple(hidden.shape)} and head {tuple(weight.shape)} do not match the "
                         f"teacher's {tuple(teacher_hidden.shape)} and {tuple(teacher_weight.shape)}: do the two "
                         "models share the vocabulary and see the same batch?")
    chunk_size = _check_chunk_size(chunk_size, hidden.device)
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, C), (N,)
    teacher_h = teacher_hidden.detach().reshape(-1, teacher_hidden.size(-1))  # (N, C')
    loss, kl, ce = _LinearKD.apply(h, weight, teacher_h, teacher_weight.detach(), y, temperature, kd_weight, chunk_size,
                                   compute_dtype(hidden), torch.is_grad_enabled())
    return loss, {"kl": kl, "ce": ce}


def _check_chunk_size(chunk_size: int | None, device: torch.device) -> int:
    if chunk_size is None:
        return default_chunk_size(device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    return chunk_size


def _nll_rows(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain per-row NLL of one chunk (n,), for reduction="none" (under autocast as F.linear is)."""
    return F.cross_entropy(F.linear(h, weight).float(), y, ignore_index=IGNORE_INDEX, reduction="none")


class _HeadGrads:
    """The gradients of hidden (N, C) and weight (V, C), built one chunk at a time from d loss / d logits.

    The weight's gradient is a sum over every chunk: it is accumulated in float32 whatever the matmul
    dtype. `needs` = (hidden requires grad, weight does): a frozen head or input skips its multiply, and
    with grad mode off (no_grad, inference_mode: Function.forward cannot see it, the caller passes it) both.
    """

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, needs: tuple[bool, bool], grad_enabled: bool):
        self.hidden_dtype, self.weight_dtype = hidden.dtype, weight.dtype
        self.need_hidden, self.need_weight = grad_enabled and needs[0], grad_enabled and needs[1]
        self.hidden_chunks: list[torch.Tensor] = []  # (n, C) each
        self.weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if self.need_weight else None

    @property
    def wanted(self) -> bool:
        return self.need_hidden or self.need_weight

    def add(self, h: torch.Tensor, w: torch.Tensor, grad_logits: torch.Tensor) -> None:
        """One chunk: h (n, C) and w (V, C) in the matmul dtype, grad_logits (n, V) float32."""
        g = grad_logits.to(w.dtype)  # (n, V)
        if self.need_hidden:
            self.hidden_chunks.append((g @ w).to(self.hidden_dtype))  # (n, V) @ (V, C) -> (n, C)
        if self.need_weight:  # (V, n) @ (n, C) added in place to the float32 sum
            if g.dtype == torch.float32:
                self.weight.addmm_(g.t(), h)
            elif not torch.compiler.is_compiling() and _mixed_addmm(g.device.type):  # (a loss compiled with its
                # caller, as the tests do, leaves the choice to inductor; the training step runs it eagerly)
                torch.addmm(self.weight, g.t(), h, out_dtype=torch.float32, out=self.weight)  # no (V, C) temporary
            else:
                self.weight += g.t() @ h  # a (V, C) temporary in the low precision, then the add

    def result(self, scale: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The gradients times `scale` (a mean's 1 / n_valid). It is applied here, not to d loss / d logits:
        in float16, p / n_valid (a softmax entry ~1e-5 over thousands of rows) would flush to zero before
        the loss scaler's factor arrives in backward."""
        hidden = (torch.cat(self.hidden_chunks) * scale).to(self.hidden_dtype) if self.need_hidden else None  # (N, C)
        weight = self.weight.mul_(scale).to(self.weight_dtype) if self.need_weight else None  # (V, C)
        return hidden, weight


@functools.cache
def _mixed_addmm(device_type: str) -> bool:
    """Whether this device's addmm adds bf16/fp16 factors straight into a float32 sum (`out_dtype`, CUDA
    in torch 2.13; not the CPU). Asked once per device type, on a 2 x 2 product checked against 2."""
    try:
        total, ones = torch.zeros(2, 2, device=device_type), torch.ones(2, 2, dtype=torch.bfloat16, device=device_type)
        torch.addmm(total, ones, ones, out_dtype=torch.float32, out=total)
        return bool((total == 2).all())
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _head_chunks(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, grads: _HeadGrads,
                 chunk_size: int, dtype: torch.dtype, row_terms) -> list[torch.Tensor]:
    """The chunk loop of both losses. For each chunk of rows: its logits (n, V) = h @ weight.T in `dtype`,
    made float32; `row_terms(logits, rows)` -> (per-row terms, d loss / d logits (n, V) or None), the
    logits passed as the only reference so that row_terms may overwrite and free them; the gradient of
    every ignored row zeroed and added to `grads`. Returns each term summed over all rows (float32)."""
    row_mask = (targets != IGNORE_INDEX).unsqueeze(1).float()  # (N, 1)
    w = weight.to(dtype)  # (V, C): cast once for all chunks
    sums = None
    for i in range(0, max(1, hidden.size(0)), chunk_size):  # at least once: no rows sum to 0
        rows = slice(i, i + chunk_size)
        h = hidden[rows].to(dtype)  # (n, C)
        terms, grad_logits = row_terms((h @ w.t()).float(), rows)
        sums = [t.sum() for t in terms] if sums is None else [s + t.sum() for s, t in zip(sums, terms)]
        if grads.wanted:
            grads.add(h, w, grad_logits.mul_(row_mask[rows]))
        del grad_logits  # this chunk's (n, V) buffer goes before the next chunk's is made
    return sums


def _scaled(grad: torch.Tensor | None, grad_output: torch.Tensor) -> torch.Tensor | None:
    """grad * grad_output, in place: no second (V, C) tensor at the top of the step's memory. The stored
    gradient is not needed again, and a second backward through the graph (retain_graph=True) stops at
    autograd's in-place check rather than scaling it twice."""
    return None if grad is None else grad.mul_(grad_output)


def _cross_entropy_rows(logits: torch.Tensor, y: torch.Tensor,
                        with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The NLL of each row of float32 logits (n, V) against targets y (n,), 0 where y is ignored; and
    with_grad, d NLL_i / d logits_i = softmax - onehot(y) (n, V), written over `logits` (the chunk's
    largest buffer, reused), for every row: the caller masks the ignored ones."""
    valid = y != IGNORE_INDEX
    y = torch.where(valid, y, 0).unsqueeze(1)  # (n, 1): ignored rows point at class 0, masked below
    lse = logits.logsumexp(dim=-1, keepdim=True)  # (n, 1)
    nll = torch.where(valid, (lse - logits.gather(1, y)).squeeze(1), 0.0)  # (n,)
    if not with_grad:
        return nll, None
    grad = logits.sub_(lse).exp_()  # softmax
    grad.scatter_add_(1, y, torch.full_like(lse, -1.0))  # minus onehot(y)
    return nll, grad


class _LinearCrossEntropy(torch.autograd.Function):
    """The sum (mean=False) or mean over the valid rows of the NLL of hidden (N, C) @ weight.T (V, C)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, mean: bool, chunk_size: int, dtype: torch.dtype, grad_enabled: bool):
        n_valid = (targets != IGNORE_INDEX).sum()
        # With no valid row the mean is nan (0 / 0) and every gradient 0, as F.cross_entropy gives.
        scale = 1 / n_valid.clamp(min=1) if mean else torch.ones((), device=hidden.device)
        grads = _HeadGrads(hidden, weight, ctx.needs_input_grad[:2], grad_enabled)

        def row_terms(logits, rows):  # grad_logits is written over the logits
            nll, grad_logits = _cross_entropy_rows(logits, targets[rows], grads.wanted)
            return (nll,), grad_logits

        total, = _head_chunks(hidden, weight, targets, grads, chunk_size, dtype, row_terms)
        ctx.save_for_backward(*grads.result(scale))
        return total / n_valid if mean else total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return _scaled(grad_hidden, grad_loss), _scaled(grad_weight, grad_loss), *[None] * 5


def _kd_rows(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float, kd_weight: float,
             with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """For float32 logits (n, V) each: per row KL(p_T || q_T) summed over V (teacher p, student q, both
    softened by the temperature) and the student's NLL, 0 where y is ignored; with_grad, also
    d(kd_weight T^2 KL + (1 - kd_weight) NLL)_i / d student_i (n, V), for every row. Overwrites both inputs."""
    log_q = F.log_softmax(student / temperature, dim=-1)  # (n, V) student, softened
    log_p = F.log_softmax(teacher.div_(temperature), dim=-1)  # (n, V) teacher, softened
    del teacher  # the caller passes no other reference: at most four (n, V) buffers live at once
    p = log_p.exp()
    kl = log_p.sub_(log_q).mul_(p).sum(-1)  # (n,) sum_v p (log p - log q), in log_p's buffer
    del log_p
    kl = torch.where(y != IGNORE_INDEX, kl, 0.0)
    nll, grad_ce = _cross_entropy_rows(student, y, with_grad)
    if not with_grad:
        return kl, nll, None
    # d(T^2 KL) / d student = T (q_T - p_T): the T^2 makes up for the 1 / T^2 of the softened gradient.
    grad = log_q.exp_().sub_(p).mul_(kd_weight * temperature)
    return kl, nll, grad.add_(grad_ce, alpha=1 - kd_weight)


class _LinearKD(torch.autograd.Function):
    """(loss, kl, ce) of linear_kd_loss; only loss carries a gradient, and only to the student."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, targets, temperature: float, kd_weight: float,
                chunk_size: int, dtype: torch.dtype, grad_enabled: bool):
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)  # no valid row: every term 0, not nan
        grads = _HeadGrads(hidden, weight, ctx.needs_input_grad[:2], grad_enabled)
        teacher_w = teacher_weight.to(dtype)  # (V, C'): cast once

        def row_terms(logits, rows):  # the teacher's logits (n, V) unnamed too: _kd_rows frees both
            kl, nll, grad_logits = _kd_rows(logits, (teacher_hidden[rows].to(dtype) @ teacher_w.t()).float(),
                                            targets[rows], temperature, kd_weight, grads.wanted)
            return (kl, nll), grad_logits

        kl_sum, ce_sum = _head_chunks(hidden, weight, targets, grads, chunk_size, dtype, row_terms)
        ctx.save_for_backward(*grads.result(1 / n_valid))
        kl, ce = kl_sum / n_valid, ce_sum / n_valid
        ctx.mark_non_differentiable(kl, ce)
        return kd_weight * temperature**2 * kl + (1 - kd_weight) * ce, kl, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_kl, _grad_ce):
        grad_hidden, grad_weight = ctx.saved_tensors
        return _scaled(grad_hidden, grad_loss), _scaled(grad_weight, grad_loss), *[None] * 8  # nothing to the teacher
