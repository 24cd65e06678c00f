"""Where and in which precision a script runs: one rule for train.py, distill.py, evaluate.py and bench.py."""

from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device_and_dtype(device: str = "auto", dtype: str = "auto", local_rank: int = 0) -> tuple[torch.device, torch.dtype]:
    """(device, autocast dtype). device "auto": cuda:{local_rank} when CUDA is available, else cpu; a bare
    "cuda" also means this process's GPU under torchrun. dtype "auto": bf16 on CUDA that has it, fp16 (with
    loss scaling in training) on older CUDA, fp32 on CPU. torch.float32 means: no autocast."""
    if device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dtype != "auto":
        return dev, DTYPES[dtype]
    if dev.type == "cuda":
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32
