"""FLOPs of GPT-2 per token, the GPUs' peak rates, and model FLOPs utilisation (MFU).

Convention (PaLM's, Chowdhery et al. 2022 appendix B, as nanoGPT's `estimate_mfu` uses it): one
training token costs

    6 N + 12 L C T   FLOPs,   N = 12 L C^2 + V C

N counts the weights of the matrix multiplies, each worth 2 FLOPs per token forward and 4 backward:
per block the q/k/v projection (C x 3C), the attention output (C x C) and the MLP (C x 4C, 4C x C);
plus the head (C x V), which is the tied token embedding. Biases, LayerNorms and the position
embedding do no matrix multiply and are left out (nanoGPT counts biases and LayerNorms in N: +0.1%
for gpt2). Attention scores and the weighted sum of values cost 4 T C per token and layer forward,
counted in full (12 L C T with backward) although the causal mask makes half of them zero. llm.c
counts 6 L C T and every parameter in N: 6.0% fewer FLOPs, so a 6.0% lower MFU, for gpt2 at T = 1024
(854.4 MFLOP per token here).
This is exactly what `torch.utils.flop_counter.FlopCounterMode` counts for a forward and backward
pass (tests/test_bench.py checks it). A forward pass alone costs a third: 2 N + 4 L C T.

MFU = achieved FLOP/s / the GPU's dense bf16 (or fp16) tensor peak, from the table below.
"""

from __future__ import annotations

import re

from gpt2.config import GPTConfig


def matmul_params(config: GPTConfig) -> int:
    """N: the weights of every matrix multiply (123,532,032 for gpt2: 84.9M in the blocks, 38.6M in the head)."""
    C = config.n_embd
    per_block = C * 3 * C + C * C + C * 4 * C + 4 * C * C  # c_attn, attn.c_proj, c_fc, mlp.c_proj = 12 C^2
    return config.n_layer * per_block + C * config.vocab_size


def flops_per_token(config: GPTConfig, seq_len: int, *, backward: bool = True) -> int:
    """FLOPs per token of a forward (and, by default, backward) pass over rows of `seq_len` tokens."""
    forward = 2 * matmul_params(config) + 4 * config.n_layer * config.n_embd * seq_len
    return 3 * forward if backward else forward


# Dense (no 2:4 sparsity) bf16 tensor-core peak with fp32 accumulation, TFLOP/s: NVIDIA's datasheet
# figures (half the "with sparsity" number they print; V100: fp16, Volta has no bf16). The first
# pattern found in `torch.cuda.get_device_name()` wins, so the specific ones come first. A GPU not
# listed (the A10G, whose peak NVIDIA does not publish, among them) gets no MFU unless --peak_tflops.
PEAK_TFLOPS = [
    (r"H100.*NVL", 835.5),
    (r"H100.*PCIe", 756.5),
    (r"H100", 989.5),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (r"H200.*NVL", 835.5),
    (r"H200", 989.5),  # SXM, and GH200
    (r"A100", 312.0),  # SXM4 and PCIe alike
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),  # not the A10G
    (r"RTX 4090", 165.2),  # fp32 accumulation (330.3 with fp16 accumulation, which PyTorch does not use)
    (r"V100S", 130.0),
    (r"V100.*PCIe", 112.0),
    (r"V100", 125.0),  # SXM2
]


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like `torch.cuda.get_device_name()`, or None if not in the table."""
    for pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


def mfu(tokens_per_s: float, flops_per_tok: int, peak: float | None) -> float | None:
    """Achieved FLOP/s over the peak (TFLOP/s): a fraction in [0, 1], or None without a peak."""
    return None if not peak else tokens_per_s * flops_per_tok / (peak * 1e12)
