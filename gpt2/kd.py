"""A smaller GPT-2 student made of some of the teacher's own layers (DistilBERT / DistilGPT2, Sanh et al., 2019).

    student_layers  which teacher blocks a student of half the depth keeps: evenly spaced from the first to
                    the last, which for 12 layers is DistilGPT2's [0, 2, 4, 7, 9, 11] (transformers,
                    examples/research_projects/distillation/scripts/extract.py)
    every_other     [0, 2, 4, ...]: the ablation
    make_student    a GPT with those blocks, the teacher's embeddings and final LayerNorm

The distillation loss itself (alpha * T^2 * KL + (1 - alpha) * CE, taken chunk by chunk) is in gpt2/losses.py.
"""

from __future__ import annotations

import dataclasses


from gpt2.model import GPT
from gpt2.weights import model_holding


def student_layers(n_layer: int) -> list[int]:
    """n_layer // 2 teacher blocks, evenly spaced from the first to the last (DistilGPT2's choice for 12)."""
    k = max(1, n_layer // 2)
    return sorted({round(i * (n_layer - 1) / max(1, k - 1)) for i in range(k)})


def every_other(n_layer: int) -> list[int]:
    """0, 2, 4, ...: half the depth, the last block left out."""
    return list(range(0, n_layer, 2))


def make_student(teacher: GPT, layers: list[int] | None = None) -> GPT:
    """A GPT of len(layers) blocks, block i a copy of the teacher's block layers[i]; the token and
    position embeddings and the final LayerNorm are copied too, and the head stays tied to the
    embedding. The student is a new module (no tensor shared with the teacher), on its device and dtype.
    With layers = all of them, in order, it computes exactly what the teacher does."""
    n = teacher.config.n_layer
    layers = student_layers(n) if layers is None else list(layers)
    if not layers or any(not 0 <= i < n for i in layers):
        raise ValueError(f"student layers {layers} (--init_layers) must be a non-empty list of the teacher's "
                         f"block indices 0 .. {n - 1}")
    config = dataclasses.replace(teacher.config, n_layer=len(layers))
    state = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith("transformer.h."):
            index, rest = name.removeprefix("transformer.h.").split(".", 1)
            for j, i in enumerate(layers):  # a teacher block may be copied more than once
                if i == int(index):
                    state[f"transformer.h.{j}.{rest}"] = tensor.clone()
        elif name != "lm_head.weight":  # the tied head is the embedding: one copy, tied again by model_holding
            state[name] = tensor.clone()
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return model_holding(config, state).train(teacher.training)  # no random init: every tensor is the teacher's
