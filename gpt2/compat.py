"""The torch APIs this code uses that changed between the oldest torch it supports (pyproject.toml:
torch>=2.6) and the newest it is tested on (2.13), each behind one feature check. A check asks torch
itself (does the name exist, does the function take the argument), never its version string, so a
backport or a nightly gets the path it can run. Every other file calls the names here. (The versions
named below are where we read each change in torch's history; the checks do not depend on them.)

    mark_static_address(t)           guard=False where mark_static_address takes `guard` (2.1 on; its
                                     default was True up to 2.9: a new address then meant a recompile)
    recompile_limit_hit()            the error of a compiled function past its recompile limit:
                                     FailOnRecompileLimitHit (2.7 on), FailOnCacheLimitHit (2.6)
    recompile_limit_field()          the dynamo config field of that limit: recompile_limit (2.7 on),
                                     cache_size_limit (2.6)
    distribute_local(value, like)    a whole tensor cut into `like`'s shard from this rank's own copy, with
                                     no communication: distribute_tensor(src_data_rank=None) (2.7 on);
                                     before, rank 0's copy is scattered (the same values: every rank
                                     holds the same checkpoint)
    cuda_computes_bf16()             is_bf16_supported(including_emulation=False) where it takes the
                                     argument, else the compute capability (8.0 on: A100, RTX 30xx, H100)

What needs no check from 2.6 on, and why 2.6 is the floor: torch.distributed.fsdp.fully_shard (public
from 2.6; before, the private, experimental torch.distributed._composable.fsdp, whose behaviour under
torch.compile this code cannot vouch for), a list of modules as one FSDP group, torch.distributed.tensor
(public from 2.5), torch.amp.GradScaler(device) (2.3), torch.get_autocast_dtype(device) (2.4), fused AdamW
on the CPU (2.4), torch.compiler.is_compiling / cudagraph_mark_step_begin (2.3), torch.nn.attention (2.3).
The loss's addmm(out_dtype=float32) is probed where it is used, with the call the loss makes
(gpt2/losses.py). tests/test_compat.py fakes each older behaviour and checks the fallback.
"""

from __future__ import annotations

import inspect

import torch


def takes_argument(fn, name: str) -> bool:
    """Whether `fn` accepts a keyword argument `name` (False where its signature cannot be read)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def mark_static_address(t: torch.Tensor) -> None:
    """Tell torch.compile that `t` keeps its address from call to call (a CUDA graph reads it in place),
    without a guard on that address: with one (the default up to torch 2.9), a tensor at a new address
    would recompile the graph instead of re-recording it, and after 8 recompiles run eagerly."""
    if takes_argument(torch._dynamo.mark_static_address, "guard"):
        torch._dynamo.mark_static_address(t, guard=False)
    else:
        torch._dynamo.mark_static_address(t)


def recompile_limit_hit() -> type[Exception]:
    """The error a fullgraph-compiled function raises past its recompile limit. (A function, not a constant:
    torch._dynamo takes seconds to import, and most scripts never compile.)"""
    exc = torch._dynamo.exc
    return getattr(exc, "FailOnRecompileLimitHit", None) or exc.FailOnCacheLimitHit


def recompile_limit_field() -> str:
    """The name of torch._dynamo.config's limit of graphs per function (what tests lower to hit it)."""
    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def distribute_local(value: torch.Tensor, like) -> torch.Tensor:
    """`value`, a whole tensor every rank holds (a loaded checkpoint's), as a DTensor sharded like the
    DTensor `like`: each rank keeps its own rows of its own copy, no communication, where distribute_tensor
    takes src_data_rank; else rank 0's copy is scattered to the others (the same values)."""
    from torch.distributed.tensor import distribute_tensor

    value = value.to(like.device)
    if takes_argument(distribute_tensor, "src_data_rank"):
        return distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)
    return distribute_tensor(value, like.device_mesh, like.placements)


def cuda_computes_bf16() -> bool:
    """Whether this process's GPU computes in bf16 natively (compute capability 8.0 on). V100 and T4 can
    hold bf16 tensors, so is_bf16_supported() says True there by default, but they emulate its arithmetic,
    slower than fp16's tensor cores."""
    if takes_argument(torch.cuda.is_bf16_supported, "including_emulation"):
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability() >= (8, 0)
