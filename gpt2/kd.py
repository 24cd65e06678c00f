"""Knowledge distillation into a smaller GPT-2: the loss (Hinton et al., 2015) and the student's
initialisation from the teacher's own layers (DistilBERT / DistilGPT2, Sanh et al., 2019).

    kd_loss       alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)
    make_student  a GPT with some of the teacher's blocks (every other one by default), its embeddings and ln_f

Why T^2: the gradient of the softened KL scales as 1 / T^2, so multiplying by T^2 keeps the two terms
of the loss on the same scale whatever the temperature. Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from gpt2.model import GPT

IGNORE_INDEX = -100  # targets with this id are not scored (as in GPT.forward)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The distillation loss of one batch: logits (B, T, V) each, targets (B, T) -> (scalar loss, parts).

    Both terms are means over the valid positions (target != -100); the KL is summed over the
    vocabulary. Computed in float32 whatever the logits' dtype. parts = {"kl", "ce"}, detached.
    """
    if not temperature > 0:
        raise ValueError(f"kd temperature (--kd_temperature) must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"kd alpha (--kd_alpha) must lie in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: do the two models share the vocabulary?")
    V = student_logits.size(-1)
    student = student_logits.float().view(-1, V)  # (B*T, V)
    teacher = teacher_logits.float().view(-1, V)  # (B*T, V)
    y = targets.reshape(-1)  # (B*T,)
    ce = F.cross_entropy(student, y, ignore_index=IGNORE_INDEX)  # the same expression as GPT.forward
    valid = (y != IGNORE_INDEX).float()  # (B*T,)
    log_q = F.log_softmax(student / temperature, dim=-1)  # student, softened
    log_p = F.log_softmax(teacher / temperature, dim=-1)  # teacher, softened
    kl_per_position = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B*T,) KL(p || q)
    kl = (kl_per_position * valid).sum() / valid.sum()
    loss = alpha * temperature**2 * kl + (1.0 - alpha) * ce
    return loss, {"kl": kl.detach(), "ce": ce.detach()}


def every_other_layer(n_layer: int) -> list[int]:
    """0, 2, 4, ...: DistilGPT2's choice, half the depth of the teacher."""
    return list(range(0, n_layer, 2))


def make_student(teacher: GPT, layers: list[int] | None = None) -> GPT:
    """A GPT of len(layers) blocks, block i a copy of the teacher's block layers[i]; the token and
    position embeddings and the final LayerNorm are copied too, and the head stays tied to the
    embedding. The student is a new module (no tensor shared with the teacher), on its device and dtype.
    With layers = all of them, in order, it computes exactly what the teacher does."""
    n = teacher.config.n_layer
    layers = every_other_layer(n) if layers is None else list(layers)
    if not layers or any(not 0 <= i < n for i in layers):
        raise ValueError(f"student layers {layers} (--init_layers) must be a non-empty list of the teacher's "
                         f"block indices 0 .. {n - 1}")
    config = dataclasses.replace(teacher.config, n_layer=len(layers))
    with torch.device("meta"):  # no random init: every tensor comes from the teacher
        student = GPT(config)
    state = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith("transformer.h."):
            index, rest = name.removeprefix("transformer.h.").split(".", 1)
            for j, i in enumerate(layers):  # a teacher block may be copied more than once
                if i == int(index):
                    state[f"transformer.h.{j}.{rest}"] = tensor.clone()
        else:
            state[name] = tensor.clone()
    student.load_state_dict(state, assign=True)
    student.lm_head.weight = student.transformer.wte.weight  # assign=True replaced the tied tensors one by one
    return student.train(teacher.training)
