"""Losses that never hold the whole (B, T, V) float32 logits: PLACEHOLDER, being rewritten (chunked, fused)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this id are not scored


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         reduction: str = "mean", chunk_size: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets): hidden (B, T, C) or (N, C), weight (V, C), targets (B, T) or (N,)."""
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits.flatten(0, -2), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction=reduction)


def linear_kd_loss(hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor,
                   targets: torch.Tensor, *, temperature: float, alpha: float,
                   chunk_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, targets)."""
    V = weight.size(0)
    student = F.linear(hidden, weight).float().reshape(-1, V)
    teacher = F.linear(teacher_hidden, teacher_weight).float().reshape(-1, V)
    y = targets.reshape(-1)
    ce = F.cross_entropy(student, y, ignore_index=IGNORE_INDEX)
    valid = (y != IGNORE_INDEX).float()
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl = ((log_p.exp() * (log_p - log_q)).sum(-1) * valid).sum() / valid.sum()
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce, {"kl": kl.detach(), "ce": ce.detach()}
