"""How a model is spread over processes beyond DDP: FSDP2 sharding, activation checkpointing, and the
gathered state dicts that make a sharded run's checkpoints the same files as a single process writes.

    torchrun_processes(device, dtype)  this process's rank, world and device; the process group under torchrun
    checkpoint_blocks(model)           recompute each block's activations in the backward pass
    shard(model, amp_dtype)            FSDP2: every block two groups (LayerNorms, matrices), then the root
    gathered(state, keep_on)           a state dict with every shard gathered whole, on rank 0 only
    gathered_optimizer_state(opt, ..)  the same for AdamW's state, in the single-process layout
    load_optimizer_state(opt, state)   a single-process optimizer state dict into a sharded optimizer
    gathered_model(model, keep_on)     a plain GPT holding the whole weights (rank 0's evaluation)

DDP keeps a whole copy of the weights, gradients and AdamW moments on every GPU: 16 bytes per parameter,
25 GB for gpt2-xl before any activation. FSDP2 (torch.distributed.fsdp.fully_shard) keeps 1/world of
each on every GPU and all-gathers one block's weights just before that block runs (forward, and again in
backward), then frees them; each block's gradients are reduce-scattered as soon as its backward is done.
benchmarks/memory_plan.py prints what each setting needs per GPU.

Checkpoints are gathered, not written with torch.distributed.checkpoint (DCP). Every sharded tensor is
all-gathered and copied to rank 0's CPU, which writes latest.pt and best.pt exactly as a single process
or a DDP run does: the same keys, the same optimizer layout, one file. So `--resume` works whichever
way the run was split (DDP or FSDP, with the same number of processes), and best.pt, load_model and
`python -m gpt2.checkpoint export` need nothing new. The cost is rank 0's CPU memory and one writer:
for gpt2-xl, 19 GB of host memory (weights and two moments in float32) and a file of that size written
by one process. DCP would write per-rank files in parallel with no gather, which matters for models
ten times larger; at GPT-2's sizes one readable file is worth more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from gpt2.checkpoint import TrainState, model_from_state
from gpt2.compat import distribute_local
from gpt2.device import resolve_device_and_dtype
from gpt2.model import GPT


@dataclass(frozen=True)
class Processes:
    rank: int  # this process among all: rank 0 writes files and prints
    local_rank: int  # this process on its machine: which GPU it takes
    world: int  # processes in all
    device: torch.device
    amp_dtype: torch.dtype  # autocast dtype; float32 means none


@contextlib.contextmanager
def torchrun_processes(device: str = "auto", dtype: str = "auto") -> Iterator[Processes]:
    """Where this process runs. Under torchrun (which sets RANK, LOCAL_RANK and WORLD_SIZE) each process takes
    GPU LOCAL_RANK and joins a process group, NCCL on CUDA and gloo elsewhere, destroyed on leaving; a group
    that already exists (a caller's) is used and left alone. Otherwise one process: rank 0 of 1."""
    torchrun = "RANK" in os.environ
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if torchrun else (0, 0, 1)
    dev, amp_dtype = resolve_device_and_dtype(device, dtype, local_rank)
    own_group = torchrun and not dist.is_initialized()
    if own_group:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Processes(rank, local_rank, world, dev, amp_dtype)
    finally:
        if own_group:
            dist.destroy_process_group()


def checkpoint_blocks(model: GPT) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them: a block then keeps
    only its input (B, T, C) from forward to backward, for a second forward pass of the blocks (about a
    third more FLOPs per step: a forward pass is 2 of a step's 6 FLOPs per weight and token). The block's forward is replaced on the instance rather than wrapped in
    another module, so the parameter names, and with them every checkpoint, stay as they are. FSDP's hooks
    run around the call, outside the recomputed part, so the recomputation sees the gathered weights.
    Dropout masks come out the same: `checkpoint` replays the RNG state the forward pass saw."""
    for block in model.transformer.h:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def shard(model: GPT, amp_dtype: torch.dtype) -> None:
    """FSDP2, in place: each block is two groups, its two LayerNorms and the rest, each gathered for its
    forward and for its backward and freed in between; the root holds what is left (embeddings with the
    tied head, final LayerNorm). Afterwards the model's parameters are DTensors, each holding 1/world of
    its rows on this process. The root keeps its parameters gathered from its forward to the end of its
    backward (reshard_after_forward=False): it would gather them again at once for the backward, and the
    distillation loss reads the whole head after the forward (gpt2/training.py's kd_lm_loss).

    bf16: the step runs under autocast here too, and FSDP's policy is set so that the sharded model
    computes what autocast computes in one process or under DDP. Autocast keeps the weights and the
    residual stream in float32, and rounds a weight to bf16 only where a matrix multiply reads it;
    embeddings, LayerNorms and the loss see float32. So the blocks' matrices (and their biases) are
    gathered in bf16, the rounding autocast would do, at half the traffic and memory, and their gradients
    are reduced in float32 into the float32 shards that AdamW updates; the LayerNorms and the root are
    gathered in float32; and a block's input is not cast (cast_forward_inputs=False), so the residual
    stream stays float32 (x + a bf16 branch is float32). In one process this is autocast bit for bit
    (tests/test_fsdp_bf16.py); over several, only the order of the gradient sums differs.
    FSDP's usual policy, bf16 for every group, would carry the residual stream in bf16 instead, from
    bf16 embeddings on: every block's sum rounded to 8 bits, which no DDP run does. The price of
    agreeing: the root is gathered in float32, 2 more bytes per root parameter (79 MB for gpt2, 164 MB
    for gpt2-xl, held from forward to backward) and twice its bf16 traffic once a step; the LayerNorms'
    own group is one more small gather per block (in float32 too: only so does CPU's layer_norm accept
    a float32 input)."""
    if not dist.is_initialized():
        raise ValueError("--fsdp shards the model over the processes torchrun starts: run "
                         "`torchrun --standalone --nproc_per_node N train.py --fsdp ...` with N GPUs "
                         "(or leave out --fsdp for a single process)")
    if amp_dtype == torch.float16:
        raise ValueError("--fsdp trains in bf16 or fp32, and this GPU has no bf16: fp16 needs a loss scale that "
                         "agrees across shards, which train.py does not have. Pass --dtype fp32, or train with DDP "
                         "(leave out --fsdp)")
    float32 = MixedPrecisionPolicy()  # gathered and reduced in the parameters' own dtype
    matrices = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False) \
        if amp_dtype == torch.bfloat16 else float32
    for block in model.transformer.h:
        fully_shard([block.ln_1, block.ln_2], mp_policy=float32)
        fully_shard(block, mp_policy=matrices)
    fully_shard(model, mp_policy=float32, reshard_after_forward=False)


@torch.no_grad()
def gathered(state: dict, keep_on: torch.device | str | None) -> dict:
    """`state` (a state dict taken with keep_vars=True, so that the tied head and embedding are one
    object) with every sharded tensor gathered whole onto `keep_on` (rank 0: its CPU for a checkpoint;
    held whole on its GPU they would need the memory FSDP saves), or dropped where keep_on is None (the
    other ranks). Each gather is a collective: every rank calls this with the same keys in the same order.
    Tensors that are not sharded are returned detached, where they are (a DDP or single-process state)."""
    out, whole = {}, {}  # whole: id(tensor) -> its gathered copy, so a tied tensor is gathered (and saved) once
    for key, value in state.items():
        if isinstance(value, DTensor):
            if id(value) not in whole:
                full = value.full_tensor()
                whole[id(value)] = full.to(keep_on) if keep_on is not None else None
            out[key] = whole[id(value)]
        else:
            out[key] = value.detach() if isinstance(value, torch.Tensor) else value
    return out


def gathered_optimizer_state(optimizer: torch.optim.Optimizer, keep_on: torch.device | str | None) -> dict:
    """optimizer.state_dict() with every moment gathered whole (see `gathered`): under FSDP, the layout a
    single process writes (state numbered by parameter, whole tensors), so any run can resume from it."""
    state = optimizer.state_dict()
    return {**state, "state": {i: gathered(s, keep_on) for i, s in state["state"].items()}}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a single-process optimizer state dict. Where the optimizer's parameters are shards (DTensors),
    each moment is cut into this rank's shard exactly as its parameter was (every rank holds the whole
    checkpoint, so each takes its own rows: no communication)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict's numbering

    def like(param: torch.Tensor, value):
        if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape:
            return distribute_local(value, like=param)
        return value  # a step count, or a state of an unsharded parameter

    optimizer.load_state_dict({**state, "state": {i: {k: like(params[i], v) for k, v in s.items()}
                                                  for i, s in state["state"].items()}})


def gathered_model(model: GPT, keep_on: torch.device | None) -> GPT | None:
    """A plain GPT with the sharded `model`'s whole weights on `keep_on` (rank 0), None on the other ranks;
    every rank must call it. Rank 0 evaluates this copy, as it evaluates the plain module under DDP:
    evaluation runs under inference_mode, and buffers FSDP gathers there could not be used by training
    afterwards. The copy costs rank 0 the float32 weights (4 bytes per parameter) while it evaluates."""
    state = gathered(model.state_dict(keep_vars=True), keep_on)
    if keep_on is None:
        return None
    return model_from_state(TrainState(model=state, model_config=dataclasses.asdict(model.config)), device=keep_on)
