"""Train GPT-2 on token shards: fine-tune a published checkpoint, or train a small model from scratch.

    python train.py --data_dir shards/wikitext2 --out_dir runs/finetune            # fine-tune gpt2
    python train.py --init scratch --n_layer 4 --n_head 4 --n_embd 128 ...         # a tiny model
    torchrun --nproc_per_node 8 train.py ...                                       # data parallel
    python train.py ... --resume                                                   # continue out_dir

The batch is stated in tokens (`total_batch_tokens`); gradient accumulation is derived from it.
Every optimizer step reads `accum * world_size` micro-batches; micro-batch slot g = rank * accum + micro
draws from its own seeded stream (`TrainBatches(rank=g, world_size=accum * world_size)`) and seeds
dropout from (seed, step, g). So a step's data and dropout masks depend only on the global batch,
not on how it is split over processes and accumulation, and a resumed run repeats the uninterrupted one.

The run directory gets: run.json (resolved config, versions, hardware), log.jsonl (one line per step
and per evaluation), latest.pt (everything to resume; written after each evaluation and every
`checkpoint_interval` steps) and best.pt (weights with the lowest validation loss).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data.loader import SplitTokens, TrainBatches
from gpt2.checkpoint import CheckpointError, load_checkpoint, load_model, model_from_state, save_checkpoint, versions
from gpt2.cli import config_to_dict, parse_config
from gpt2.config import GPTConfig
from gpt2.device import resolve_device_and_dtype
from gpt2.kd import kd_loss, make_student
from gpt2.model import GPT
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.weights import DownloadError


@dataclass
class TrainConfig:
    """Train or fine-tune GPT-2 on token shards written by `python -m data.prepare`."""

    # model
    init: str = "gpt2"  # starting weights: a published name (gpt2, gpt2-medium, ...), a train.py checkpoint or
                        # run dir, a Hugging Face folder or .safetensors/.bin file, or "scratch" (random init)
    n_layer: int = 4  # init=scratch only: transformer blocks
    n_head: int = 4  # init=scratch only: attention heads per block
    n_embd: int = 128  # init=scratch only: model width (a multiple of n_head)
    dropout: float = 0.1  # dropout rate while training (embeddings, attention, residuals)
    init_layers: list[int] | None = None  # a smaller student: keep only these blocks of --init (e.g. 0 2 4 6 8 10,
                                          # DistilGPT2's every other layer); None: all of them
    # data
    data_dir: str = "shards/wikitext2"  # folder of train_*.bin / val_*.bin shards
    val_data_dir: str | None = None  # folder whose val split is evaluated; None: data_dir. Set it to the real
                                     # data when data_dir is a distilled set (which has no val split)
    out_dir: str = "runs/finetune"  # run directory: run.json, log.jsonl, latest.pt, best.pt
    seq_len: int = 1024  # tokens per training row; also the context of a scratch model
    micro_batch_size: int = 16  # rows per forward/backward pass; lower it if memory runs out
    total_batch_tokens: int = 32768  # tokens per optimizer step, over all micro-batches and processes
    # optimisation
    lr: float = 1e-4  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-5  # learning rate at the end of the cosine decay
    warmup_steps: int = 20  # linear warmup from lr / warmup_steps to lr
    max_steps: int | None = None  # optimizer steps in total; None: derived from epochs
    epochs: float = 3.0  # passes over the train split, used when max_steps is None
    weight_decay: float = 0.1  # AdamW decoupled decay, on matrices and embeddings only (not biases, LayerNorm)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    # knowledge distillation (gpt2/kd.py)
    teacher: str | None = None  # a frozen model whose softened distribution the loss also matches (any --init
                                # source but scratch); None: plain next-token cross-entropy
    kd_temperature: float = 2.0  # with --teacher: softmax temperature T of both distributions
    kd_alpha: float = 0.5  # with --teacher: loss = alpha * T^2 * KL(teacher || model) + (1 - alpha) * cross-entropy
    # hardware and precision
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # autocast precision; auto: bf16 on CUDA that has it,
                                                              # fp16 with loss scaling on older CUDA, fp32 on CPU
    compile: bool | None = None  # torch.compile the model; None: on for CUDA, off for CPU
    seed: int = 1337  # seeds data order and dropout
    # evaluation, logging, checkpoints
    eval_interval: int = 50  # evaluate the whole val split (and write latest.pt) every this many steps
    eval_stride: int | None = None  # evaluation window stride; None: seq_len (disjoint windows)
    eval_batch_size: int = 8  # rows per evaluation forward pass
    log_interval: int = 1  # refresh the progress bar every this many steps (log.jsonl records every step)
    checkpoint_interval: int | None = None  # also write latest.pt every this many steps; None: only at evaluations
    resume: bool = False  # continue the run in out_dir from its latest.pt

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "seq_len", "micro_batch_size", "total_batch_tokens",
                     "eval_interval", "eval_batch_size", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "eval_stride", "checkpoint_interval"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive (or none), got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps is None:
            raise ValueError(f"--epochs must be positive, got {self.epochs}")
        if self.init == "scratch" and self.n_embd % self.n_head:
            raise ValueError(f"--n_embd {self.n_embd} is not a multiple of --n_head {self.n_head}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= --min_lr <= --lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.init_layers is not None and self.init == "scratch":
            raise ValueError("--init_layers picks blocks of a trained model; it cannot be used with --init scratch")
        if not self.kd_temperature > 0 or not 0 <= self.kd_alpha <= 1:
            raise ValueError(f"need --kd_temperature > 0 and 0 <= --kd_alpha <= 1, got {self.kd_temperature}, {self.kd_alpha}")


class TrainingStopped(RuntimeError):
    """The run cannot go on (non-finite loss, a resume that does not match, ...); the message says why."""


# Settings that a resumed run must share with the checkpoint, or its data stream would differ.
RESUME_MUST_MATCH = ("init", "n_layer", "n_head", "n_embd", "seq_len", "micro_batch_size", "total_batch_tokens", "seed")


def lr_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup, then cosine decay to min_lr at max_steps."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)  # 0 -> 1
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on every parameter of 2 or more dimensions (linear weights, embeddings)
    and none on biases and LayerNorm parameters (nanoGPT's split). The fused kernel (CUDA and CPU) updates
    all parameters in one pass: ~5x faster than the per-tensor loop for gpt2 on CPU."""
    params = list(model.parameters())  # the tied head/embedding appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cuda", "cpu"))


def build_model(cfg: TrainConfig, device: torch.device) -> GPT:
    if cfg.init == "scratch":
        config = GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_positions=cfg.seq_len,
                           dropout=cfg.dropout)
        return GPT(config, seed=cfg.seed).to(device)
    try:
        model = load_model(cfg.init, device=device, dropout=cfg.dropout)
    except DownloadError as e:
        raise TrainingStopped(f"{e}\nWith the weights on disk, pass their folder (config.json + model.safetensors) "
                              "as --init DIR; or train a small model with --init scratch") from e
    if cfg.init_layers is not None:
        model = make_student(model, cfg.init_layers)
    if cfg.seq_len > model.config.n_positions:
        raise TrainingStopped(f"--seq_len {cfg.seq_len} exceeds the context of {cfg.init} "
                              f"({model.config.n_positions} positions); use --seq_len {model.config.n_positions} or less")
    return model


def micro_seed(seed: int, step: int, slot: int) -> int:
    """The dropout seed of micro-batch slot `slot` at optimizer step `step`: independent streams per (step, slot)."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1)[0])


def lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one micro-batch. (With --teacher, kd_lm_loss replaces it.)"""
    _, loss = model(x, y)
    return loss


def kd_lm_loss(model, x: torch.Tensor, y: torch.Tensor, *, teacher: GPT, temperature: float, alpha: float) -> torch.Tensor:
    """Knowledge distillation of one micro-batch (gpt2/kd.py): the model's logits against the frozen
    teacher's, both softened by `temperature`, mixed with the cross-entropy. It runs inside the step's
    autocast, so the teacher's forward pass uses the same precision; no_grad: the teacher never trains."""
    logits, _ = model(x)  # (B, T, V)
    with torch.no_grad():
        teacher_logits, _ = teacher(x)  # (B, T, V)
    loss, _ = kd_loss(logits, teacher_logits, y, temperature=temperature, alpha=alpha)
    return loss


def check_resumable(state: dict, cfg: TrainConfig, derived: dict, path: Path) -> None:
    """Name every setting that differs between the checkpoint and this run, if any would change the run."""
    saved, now = state["config"], config_to_dict(cfg)
    diffs = [f"{k}={saved[k]!r} in the checkpoint, {now[k]!r} now" for k in RESUME_MUST_MATCH if saved[k] != now[k]]
    for k in ("world_size", "train_tokens"):
        if state["derived"][k] != derived[k]:
            diffs.append(f"{k}={state['derived'][k]} in the checkpoint, {derived[k]} now")
    if diffs:
        raise TrainingStopped(f"cannot resume from {path}: " + "; ".join(diffs) + ". Pass the checkpoint's "
                              f"settings (they are in {path.parent / 'run.json'}) or start a new --out_dir.")


def train(cfg: TrainConfig, loss_fn=lm_loss) -> dict:
    """Run training as configured; returns the summary (also printed). `loss_fn(model, x, y)` -> scalar loss."""
    # ---- processes and devices: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE
    ddp = "RANK" in os.environ
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
    device, amp_dtype = resolve_device_and_dtype(cfg.device, cfg.dtype, local_rank)
    if ddp:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, loss_fn, device, amp_dtype, rank, world, ddp)
    finally:
        if ddp:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, loss_fn, device: torch.device, amp_dtype: torch.dtype, rank: int, world: int, ddp: bool) -> dict:
    master, out_dir = rank == 0, Path(cfg.out_dir)  # only rank 0 writes files and prints
    say = tqdm.write if master else (lambda *a, **k: None)  # prints above the progress bar

    # ---- batch arithmetic, stated in tokens
    tokens_per_micro_step = cfg.micro_batch_size * cfg.seq_len * world
    if cfg.total_batch_tokens % tokens_per_micro_step:
        raise TrainingStopped(
            f"--total_batch_tokens {cfg.total_batch_tokens} is not a multiple of micro_batch_size x seq_len x "
            f"world_size = {cfg.micro_batch_size} x {cfg.seq_len} x {world} = {tokens_per_micro_step}; "
            f"e.g. use --total_batch_tokens {max(1, round(cfg.total_batch_tokens / tokens_per_micro_step)) * tokens_per_micro_step}")
    accum = cfg.total_batch_tokens // tokens_per_micro_step

    # ---- data
    train_tokens, val_tokens = SplitTokens(cfg.data_dir, "train"), SplitTokens(cfg.val_data_dir or cfg.data_dir, "val")
    max_steps = cfg.max_steps or math.ceil(cfg.epochs * len(train_tokens) / cfg.total_batch_tokens)
    batches = [TrainBatches(train_tokens, cfg.micro_batch_size, cfg.seq_len, seed=cfg.seed, rank=rank * accum + m,
                            world_size=world * accum, device=device) for m in range(accum)]  # one per slot

    # ---- model, optimizer, precision; everything a resume restores
    latest = out_dir / "latest.pt"
    if not cfg.resume and latest.exists():
        raise TrainingStopped(f"{out_dir} already holds a run ({latest}); pass --resume to continue it, "
                              "or choose another --out_dir (or delete that folder)")
    compile_model = cfg.compile if cfg.compile is not None else device.type == "cuda"
    derived = dict(world_size=world, grad_accum_steps=accum, max_steps=max_steps, device=str(device),
                   device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
                   dtype=str(amp_dtype).removeprefix("torch."), compile=compile_model,
                   train_tokens=len(train_tokens), val_tokens=len(val_tokens))
    state = None
    if cfg.resume:
        state = load_checkpoint(latest)  # says so if there is none
        check_resumable(state, cfg, derived, latest)
        raw_model = model_from_state(state, device=device, dropout=cfg.dropout)
    else:
        raw_model = build_model(cfg, device)
    optimizer = make_optimizer(raw_model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    step, best_val_loss, elapsed_before = 0, float("inf"), 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        for m, b in enumerate(batches):
            b.load_state_dict(state["batches"][rank * accum + m])
        step, best_val_loss, elapsed_before = state["step"], state["best_val_loss"], state["elapsed_s"]
    model = torch.compile(raw_model) if compile_model else raw_model
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32)
    if cfg.teacher is not None:  # part of the config, not of the state: a resumed run loads it again
        try:
            teacher = load_model(cfg.teacher, device=device).requires_grad_(False)  # eval mode: no dropout
        except DownloadError as e:
            raise TrainingStopped(f"--teacher {cfg.teacher}: {e}") from e
        loss_fn = functools.partial(kd_lm_loss, teacher=teacher, temperature=cfg.kd_temperature, alpha=cfg.kd_alpha)

    # ---- run record: resolved config, versions, hardware
    run = {"config": config_to_dict(cfg), "derived": derived, "model_config": dataclasses.asdict(raw_model.config),
           "n_params": raw_model.num_params(), "versions": versions()}
    log_path = out_dir / "log.jsonl"
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        say(json.dumps(run, indent=2))
        if state is not None and log_path.exists():  # drop lines of steps after the checkpoint: they are redone
            lines = log_path.read_text().splitlines(keepends=True)
            log_path.write_text("".join(line for line in lines if json.loads(line)["step"] <= step))
    log_file = open(log_path, "a") if master else None

    def log(record: dict) -> None:
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    def evaluate() -> float:
        """Loss on the whole validation split, computed on rank 0 and shared with every rank."""
        result = torch.zeros(2, dtype=torch.float64, device=device)
        if master:
            r = evaluate_perplexity(raw_model, val_tokens, seq_len=cfg.seq_len, stride=cfg.eval_stride,
                                    batch_size=cfg.eval_batch_size, device=device, progress=False,
                                    autocast_dtype=amp_dtype if amp_dtype != torch.float32 else None)
            result[0], result[1] = r.loss, r.n_tokens
        if ddp:
            dist.broadcast(result, src=0)
        val_loss = result[0].item()
        log({"kind": "eval", "step": step, "val_loss": val_loss, "val_ppl": math.exp(val_loss), "val_tokens": int(result[1])})
        say(f"step {step}: val loss {val_loss:.4f}, ppl {math.exp(val_loss):.2f}")
        return val_loss

    def checkpoint(val_loss: float | None) -> None:
        nonlocal best_val_loss
        sampler_states = [b.state_dict() for b in batches]
        if ddp:  # every slot's sampler, in slot order, so that any rank can resume its own
            gathered = [None] * world
            dist.all_gather_object(gathered, sampler_states)
            sampler_states = [s for rank_states in gathered for s in rank_states]
        improved = val_loss is not None and val_loss < best_val_loss
        best_val_loss = val_loss if improved else best_val_loss
        if not master:
            return
        weights = {"model": raw_model.state_dict(), "model_config": run["model_config"], "step": step,
                   "config": run["config"], "derived": derived, "val_loss": val_loss}
        if improved:
            save_checkpoint(out_dir / "best.pt", weights)
        save_checkpoint(latest, {**weights, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                 "batches": sampler_states, "best_val_loss": best_val_loss,
                                 "elapsed_s": elapsed_before + time.perf_counter() - t_start})

    # ---- SIGINT / SIGTERM: finish the current step, write latest.pt, stop (a second signal kills at once).
    # The handler only raises a flag; every process stops after the step in which any of them saw one.
    signalled, stopping = False, False

    def request_stop(signum, frame):
        nonlocal signalled
        signalled = True
        signal.signal(signum, previous_handlers[signum])

    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}

    t_start = time.perf_counter()
    tokens_per_step = cfg.total_batch_tokens
    bar = tqdm(total=max_steps, initial=step, disable=not master, dynamic_ncols=True, unit="step")
    try:
        if step == 0:
            evaluate()  # the starting point, for comparison
        raw_model.train()
        while step < max_steps and not stopping:
            step += 1
            t0 = time.perf_counter()
            lr = lr_at(step, cfg, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(accum):
                x, y = batches[micro].next()  # (B, T) each
                torch.manual_seed(micro_seed(cfg.seed, step, rank * accum + micro))  # this slot's dropout masks
                # Gradients are all-reduced across processes only on the last micro-step.
                sync = contextlib.nullcontext() if not ddp or micro == accum - 1 else model.no_sync()
                with sync:
                    with autocast:
                        loss = loss_fn(model, x, y) / accum  # every micro-batch has B*T targets: mean of means
                    scaler.scale(loss).backward()
                loss_sum += loss.detach()
            scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip or float("inf"))
            scaler.step(optimizer)  # skipped by the scaler if fp16 gradients overflowed
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

            stats = torch.stack([loss_sum, torch.tensor(float(signalled), device=device)])
            if ddp:
                dist.all_reduce(stats)  # sum over processes: mean loss, and whether any was signalled
            loss_value, stopping = stats[0].item() / world, bool(stats[1].item())
            if not math.isfinite(loss_value):
                raise TrainingStopped(
                    f"loss is {loss_value} at step {step}: training diverged (try a lower --lr or --dtype bf16/fp32). "
                    f"Nothing was saved after it; the last good checkpoint is "
                    f"{latest if latest.exists() else '(none yet)'}")
            dt = time.perf_counter() - t0
            log({"kind": "train", "step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(),
                 "tokens_seen": step * tokens_per_step, "tok_per_s": tokens_per_step / dt,
                 "elapsed_s": elapsed_before + time.perf_counter() - t_start})
            bar.update(1)
            if step % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_step / dt:,.0f}")

            if step % cfg.eval_interval == 0 or step == max_steps:
                checkpoint(evaluate())
            elif (cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0) or stopping:
                checkpoint(None)
    finally:
        bar.close()
        if log_file:
            log_file.close()
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)

    wall = time.perf_counter() - t_start
    summary = {"steps": step, "max_steps": max_steps, "tokens": step * tokens_per_step, "wall_s": wall,
               "best_val_loss": best_val_loss, "best_val_ppl": math.exp(best_val_loss) if best_val_loss < 1e9 else None,
               "stopped_early": step < max_steps}
    say(f"{'stopped at' if step < max_steps else 'done:'} step {step}/{max_steps}, {step * tokens_per_step:,} tokens, "
        f"{wall:.0f} s this session; best val loss {best_val_loss:.4f} (ppl {summary['best_val_ppl'] or float('nan'):.2f}); "
        f"checkpoints in {out_dir}")
    return summary


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainConfig, argv)
    try:
        train(cfg)
    except torch.cuda.OutOfMemoryError:
        sys.exit(f"error: out of GPU memory at --micro_batch_size {cfg.micro_batch_size} x --seq_len {cfg.seq_len}. "
                 f"Try --micro_batch_size {max(1, cfg.micro_batch_size // 2)}: --total_batch_tokens "
                 f"{cfg.total_batch_tokens} stays, so gradient accumulation doubles and the run is the same.")
    except (TrainingStopped, CheckpointError, FileNotFoundError, ValueError) as e:
        # ValueError covers ShardError (data), WeightsError (--init) and invalid shapes: user mistakes
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
