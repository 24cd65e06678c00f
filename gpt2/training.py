"""One training step: what a training run's loop runs (gpt2/trainer.py) and benchmarks/bench.py times, built once per run.

    lm_loss, kd_lm_loss          a micro-batch's loss: the model's trunk, then the head's loss chunk by chunk
    build_step(cfg, model, ...)  the model wrapped for the run (activation checkpointing, FSDP, DDP, compile),
                                 its fused AdamW, loss scaler and loss, with the micro-batch streams handed in
    train_step(parts, step, lr)  every micro-batch's forward (autocast) and backward, clip, optimizer step

A step's data and dropout depend only on the global batch: micro-batch slot g = rank * accum + micro reads
its own seeded stream (`batches`, one per slot, made by the caller) and seeds dropout from (seed, step, g),
whatever the number of processes. `cfg` is a TrainConfig (gpt2/train_config.py).

What torch.compile sees is the trunk alone, `model(x, return_hidden=True)`: its graph does not grow with
the micro-batch. The loss's chunk loop (gpt2/losses.py) runs outside it, as a few large kernels per chunk;
inside, the compiler would unroll one copy of the loop body per chunk (at B=16, T=1024: 64 of CPU's
256-row chunks, 8 of CUDA's 2,048).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2.checkpoint import TrainState, load_model
from gpt2.device import autocast, compile_wanted
from gpt2.distributed import checkpoint_blocks, load_optimizer_state, shard
from gpt2.losses import IGNORE_INDEX, linear_cross_entropy, linear_kd_loss
from gpt2.model import GPT
from gpt2.train_config import TrainConfig
from gpt2.weights import DownloadError


class TrainingStopped(RuntimeError):
    """The run cannot go on (non-finite loss, a resume that does not match, ...); the message says why."""


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on every parameter of 2 or more dimensions (linear weights, embeddings)
    and none on biases and LayerNorm parameters (nanoGPT's split). The fused kernel (CUDA and CPU) updates
    all parameters in one pass rather than a loop over tensors. Under FSDP the parameters
    are shards (DTensors) and the fused kernel updates each rank's rows the same way (CPU and CUDA)."""
    params = list(model.parameters())  # the tied head/embedding appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cuda", "cpu"))


def micro_seed(seed: int, step: int, slot: int) -> int:
    """The dropout seed of micro-batch slot `slot` at optimizer step `step`: independent streams per (step, slot)."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1)[0])


def lm_loss(model, x: torch.Tensor, y: torch.Tensor, *, student: GPT) -> torch.Tensor:
    """Mean next-token cross-entropy of one micro-batch. `model` runs the trunk (compiled and/or wrapped for
    DDP or FSDP); `student` is the plain module inside it, whose head the loss reads chunk by chunk from the
    final hidden states: the (B, T, V) logits are never whole."""
    hidden = model(x, return_hidden=True)  # (B, T, C)
    # The head is read now, after the forward, not bound when the step is built: under --fsdp the root module
    # (embeddings, tied head) stays gathered from its forward to the end of its backward (gpt2/distributed.py),
    # and only in that window is lm_head.weight the whole matrix rather than this rank's shard.
    loss = linear_cross_entropy(hidden, student.lm_head.weight, y)  # the mean over the targets not ignored
    # A micro-batch with every target ignored (--ignore_first_tokens) has no mean: 0 / 0 = nan, with zero
    # gradients. It counts 0, as the distillation loss does, rather than stopping the run as diverged.
    return torch.where((y != IGNORE_INDEX).any(), loss, 0.0)


def kd_lm_loss(model, x: torch.Tensor, y: torch.Tensor, *, student: GPT, teacher: GPT, temperature: float,
               kd_weight: float) -> torch.Tensor:
    """Knowledge distillation of one micro-batch (the student made by gpt2/kd.py, the loss in gpt2/losses.py):
    the model's distribution against the frozen teacher's, both softened by `temperature`, mixed with the
    cross-entropy, chunk by chunk from the two models' final hidden states, the head read as in `lm_loss`.
    It runs inside the step's autocast; no_grad: the teacher never trains."""
    hidden = model(x, return_hidden=True)  # (B, T, C)
    with torch.no_grad():
        teacher_hidden = teacher(x, return_hidden=True)  # (B, T, C_teacher)
    loss, _ = linear_kd_loss(hidden, student.lm_head.weight, teacher_hidden, teacher.lm_head.weight, y,
                             temperature=temperature, kd_weight=kd_weight)
    return loss


@dataclass
class StepParts:
    """Everything one optimizer step touches. The run's loop (gpt2/trainer.py) and the benchmark's training figure both run
    `train_step` on these, so the benchmark times exactly the step a run takes."""

    model: torch.nn.Module  # what the forward pass calls: raw_model, DDP-wrapped and/or compiled
    raw_model: GPT  # the module itself (under FSDP, sharded in place): clipping, checkpoints, evaluation
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling; enabled for fp16 only
    amp_dtype: torch.dtype  # autocast dtype; float32 means no autocast
    batches: list  # this rank's micro-batch slots, one seeded stream each: .next() -> (x, y) (B, T) each
    loss_fn: Callable  # loss_fn(model, x, y) -> the micro-batch's mean loss
    seed: int  # seeds dropout per (step, slot)
    rank: int
    grad_clip: float  # 0: no clipping
    distributed: bool  # several processes (torchrun): DDP, or FSDP when `fsdp`
    fsdp: bool


def train_step(p: StepParts, step: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step: every micro-batch forward (autocast) and backward, gradients all-reduced on the
    last one only (DDP; FSDP reduce-scatters every micro-batch's, so that they stay sharded), unscale, clip,
    step, zero. Returns (this rank's mean loss, gradient norm), on the device: nothing here waits for it."""
    accum = len(p.batches)
    for group in p.optimizer.param_groups:
        group["lr"] = lr
    device = p.raw_model.lm_head.weight.device
    loss_sum = torch.zeros((), device=device)
    for micro, batches in enumerate(p.batches):
        x, y = batches.next()  # (B, T) each
        torch.manual_seed(micro_seed(p.seed, step, p.rank * accum + micro))  # this slot's dropout masks
        defer_sync = p.distributed and not p.fsdp and micro < accum - 1
        sync = p.model.no_sync() if defer_sync else contextlib.nullcontext()
        with sync:
            with autocast(device, p.amp_dtype):
                loss = p.loss_fn(p.model, x, y) / accum  # mean of the micro-batches' means: each has B*T targets
                # (fewer with --ignore_first_tokens, a few per cent apart for a distilled set's long sequences)
            p.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    p.scaler.unscale_(p.optimizer)  # clip true gradients, not scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(p.raw_model.parameters(), p.grad_clip or float("inf"))
    p.scaler.step(p.optimizer)  # skipped by the scaler if fp16 gradients overflowed
    p.scaler.update()
    p.optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def grad_accum_steps(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per process per optimizer step, from the batch stated in tokens."""
    tokens_per_micro_step = cfg.micro_batch_size * cfg.seq_len * world
    if cfg.total_batch_tokens % tokens_per_micro_step:
        raise TrainingStopped(
            f"--total_batch_tokens {cfg.total_batch_tokens} is not a multiple of micro_batch_size x seq_len x "
            f"world_size = {cfg.micro_batch_size} x {cfg.seq_len} x {world} = {tokens_per_micro_step}; "
            f"e.g. use --total_batch_tokens {max(1, round(cfg.total_batch_tokens / tokens_per_micro_step)) * tokens_per_micro_step}")
    return cfg.total_batch_tokens // tokens_per_micro_step


def make_loss_fn(cfg: TrainConfig, raw_model: GPT, device: torch.device, amp_dtype: torch.dtype) -> Callable:
    """The plain cross-entropy, or with --teacher the distillation loss against the loaded teacher.
    A frozen teacher needs no float32 master weights: under bf16 autocast it is stored in bf16 (half the
    memory; its matrix multiplies ran in bf16 anyway). It is replicated on every process, also under --fsdp:
    2 bytes per parameter (0.25 GB for gpt2, 3.1 GB for gpt2-xl) buys a forward pass with no all-gathers,
    where sharding it would save at most that much and gather the whole teacher every micro-batch
    (benchmarks/memory_plan.py)."""
    if cfg.teacher is None:
        return functools.partial(lm_loss, student=raw_model)
    dtype = torch.bfloat16 if amp_dtype == torch.bfloat16 else torch.float32
    try:  # part of the config, not of the state: a resumed run loads it again
        teacher = load_model(cfg.teacher, device=device, dtype=dtype).requires_grad_(False)  # eval mode: no dropout
    except DownloadError as e:
        raise TrainingStopped(f"--teacher {cfg.teacher}: {e}") from e
    return functools.partial(kd_lm_loss, student=raw_model, teacher=teacher, temperature=cfg.kd_temperature,
                             kd_weight=cfg.kd_weight)


def build_step(cfg: TrainConfig, raw_model: GPT, batches: list, device: torch.device, amp_dtype: torch.dtype,
               rank: int, state: TrainState | None = None) -> StepParts:
    """`raw_model` (on `device`) with its optimizer, scaler and loss, wrapped for the run (activation
    checkpointing, FSDP sharding in place, DDP, compile) and ready for `train_step` on `batches`, this rank's
    micro-batch streams (`data.loader.micro_batch_streams`); a checkpoint's `state` restores optimizer,
    scaler and the streams' positions."""
    distributed = dist.is_initialized()
    if cfg.activation_checkpointing:
        checkpoint_blocks(raw_model)
    if cfg.fsdp:
        shard(raw_model, amp_dtype)  # before the optimizer: AdamW's moments are made like the (sharded) parameters
    optimizer = make_optimizer(raw_model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    if state is not None:
        load_optimizer_state(optimizer, state.optimizer)
        scaler.load_state_dict(state.scaler)
        for m, b in enumerate(batches):
            b.load_state_dict(state.batches[rank * len(batches) + m])
    model = raw_model
    if distributed and not cfg.fsdp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_wanted(cfg.compile, device):
        # DDP first, then compile (PyTorch's order for compiled DDP): the compiler splits the graph at DDP's
        # gradient buckets, so each bucket's all-reduce starts while the rest of the backward still runs.
        # dynamic=False: a run has one micro-batch shape, compiled for it alone. (By default a second shape in
        # one process, bench.py's next batch size, would recompile with symbolic shapes: a slower compile.)
        model = torch.compile(model, dynamic=False)
    return StepParts(model=model, raw_model=raw_model, optimizer=optimizer, scaler=scaler, amp_dtype=amp_dtype,
                     batches=batches, loss_fn=make_loss_fn(cfg, raw_model, device, amp_dtype), seed=cfg.seed,
                     rank=rank, grad_clip=cfg.grad_clip, distributed=distributed, fsdp=cfg.fsdp)

