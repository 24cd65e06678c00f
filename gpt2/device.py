"""Where and in which precision a script runs: one rule for train.py, distill.py, evaluate.py, the sampler and bench.py.

The precision is an autocast dtype; torch.float32 means no autocast (plain fp32), everywhere.
"""

from __future__ import annotations

import platform

import torch

from gpt2.compat import cuda_computes_bf16

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device_and_dtype(device: str = "auto", dtype: str = "auto", local_rank: int = 0) -> tuple[torch.device, torch.dtype]:
    """(device, autocast dtype), with the device configured for speed (`configure`). device "auto":
    cuda:{local_rank} when CUDA is available, else cpu; a bare "cuda" also means this process's GPU under
    torchrun. dtype "auto": bf16 on CUDA that computes in it (compute capability 8.0 and later: A100, RTX 30xx,
    H100), fp16 (with loss scaling in training) on older CUDA (V100, T4: they emulate bf16's arithmetic,
    see `gpt2.compat.cuda_computes_bf16`); on a CPU, bf16 autocast where it has bf16 matrix units
    (`cpu_bf16_units`), fp32 elsewhere."""
    if device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    configure(dev)
    if dtype != "auto":
        return dev, DTYPES[dtype]
    if dev.type == "cuda":
        return dev, torch.bfloat16 if cuda_computes_bf16() else torch.float16
    return dev, torch.bfloat16 if cpu_bf16_units() else torch.float32


def cpu_bf16_units() -> str | None:
    """The bf16 matrix units of this CPU, as torch's CPU build detects them: "AMX" (Intel Xeon from Sapphire
    Rapids on: tile multiplies, several times the fp32 rate), "AVX512-BF16" (dot-product instructions, e.g.
    AMD Zen 4 and Intel Cooper Lake: on such a CPU both the training step and cached generation ran faster
    in bf16: BENCHMARKS.md), or None, where bf16 arithmetic would be emulated in fp32 and slower
    than fp32 itself. (oneDNN's own `torch.ops.mkldnn._is_mkldnn_bf16_supported()` says True on any AVX512
    CPU, emulation included.)"""
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        if getattr(torch.cpu, probe, lambda: False)():  # private probes of torch.cpu: absent means "not known"
            return name
    return None


def compile_wanted(flag: bool | None, device: torch.device) -> bool:
    """Every script's --compile: True or False as given; None (the default) means on for CUDA, where
    torch.compile's fused kernels and CUDA graphs pay for its start-up time, and off elsewhere."""
    return flag if flag is not None else device.type == "cuda"


def configure(device: torch.device) -> None:
    """On CUDA, what runs in float32 outside autocast (the optimizer's math aside) uses TF32 tensor cores:
    a 10-bit mantissa for the products, float32 accumulation, several times the fp32 matmul rate."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, dtype: torch.dtype):
    """torch.autocast in `dtype`, or nothing for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype an operation on `t` runs in: autocast's when autocast is on for t's device, else t's own."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """'cuda:0, autocast bfloat16' or 'cpu, fp32': the line the scripts print."""
    return f"{device}, " + ("fp32" if dtype == torch.float32 else f"autocast {str(dtype).removeprefix('torch.')}")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the number of torch threads and the bf16 units that decide its
    --dtype auto: recorded (and printed) with every run and figure."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu} ({torch.get_num_threads()} torch threads, bf16 units: {cpu_bf16_units() or 'none'})"
