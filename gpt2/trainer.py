"""A training run: fine-tune a published checkpoint, or train a small model from scratch (train.py's
command line is a thin layer over `train`).

The batch is stated in tokens (`total_batch_tokens`); gradient accumulation is derived from it.
Every optimizer step reads `accum * world_size` micro-batches; micro-batch slot g = rank * accum + micro
draws from its own seeded stream (`TrainBatches(rank=g, world_size=accum * world_size)`) and seeds
dropout from (seed, step, g). So a step's data and dropout masks depend only on the global batch,
not on how it is split over processes and accumulation, and a resumed run repeats the uninterrupted one.

The tokens come in through `TrainData` (`data.loader.training_data` reads them from token shards): this
package reads no files of data. The run directory gets: run.json (resolved config, versions, hardware),
log.jsonl (one line per step and per evaluation), latest.pt (everything to resume, a `TrainState`; written
after each evaluation and every `checkpoint_interval` steps) and best.pt (weights with the lowest validation
loss). A sharded run (--fsdp) writes the same files: its shards are gathered on rank 0 (gpt2/distributed.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from gpt2.checkpoint import TrainState, load_checkpoint, load_model, model_from_state, save_checkpoint, versions
from gpt2.cli import config_to_dict
from gpt2.config import GPTConfig
from gpt2.device import compile_wanted, device_name
from gpt2.distributed import gathered, gathered_model, gathered_optimizer_state, torchrun_processes
from gpt2.kd import make_student
from gpt2.model import GPT
from gpt2.train_config import TrainConfig
from gpt2.training import TrainingStopped, build_step, grad_accum_steps, train_step
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.weights import DownloadError


@dataclass
class TrainData:
    """The tokens a run reads, handed in by its caller (`data.loader.training_data` reads them from shards)."""

    n_train_tokens: int  # tokens in the train split: --epochs counts passes over them
    val_tokens: Sequence  # the validation split, 1-D token ids: every evaluation scores all of it, in order
    batches: Callable[..., list]  # batches(rank=, accum=, world=, device=): this process's micro-batch slots, one
    # seeded stream each (.next() -> (x, y), (B, T) each; state_dict / load_state_dict for checkpoints)


RESUME_MUST_MATCH = ("init", "n_layer", "n_head", "n_embd", "seq_len", "micro_batch_size", "total_batch_tokens", "seed",
                     "ignore_first_tokens")


def lr_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup, then cosine decay to min_lr at max_steps."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)  # 0 -> 1
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def build_model(cfg: TrainConfig, device: torch.device) -> GPT:
    if cfg.init == "scratch":
        config = GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_positions=cfg.seq_len,
                           dropout=cfg.dropout)
        return GPT(config, seed=cfg.seed).to(device)
    try:
        model = load_model(cfg.init, device=device, dtype=torch.float32, dropout=cfg.dropout)  # float32 weights
        # whatever the file holds (a bf16 export): AdamW updates them, autocast computes in the low precision
    except DownloadError as e:
        raise TrainingStopped(f"{e}\nWith the weights on disk, pass their folder (config.json + model.safetensors) "
                              "as --init DIR; or train a small model with --init scratch") from e
    if cfg.init_layers is not None:
        model = make_student(model, cfg.init_layers)
    if cfg.seq_len > model.config.n_positions:
        raise TrainingStopped(f"--seq_len {cfg.seq_len} exceeds the context of {cfg.init} "
                              f"({model.config.n_positions} positions); use --seq_len {model.config.n_positions} or less")
    return model


def check_resumable(state: TrainState, cfg: TrainConfig, derived: dict, path: Path) -> None:
    """Name every setting that differs between the checkpoint and this run, if any would change the run."""
    saved = {**config_to_dict(TrainConfig()), **state.config}  # a setting newer than the checkpoint: its default
    now = config_to_dict(cfg)
    diffs = [f"{k}={saved[k]!r} in the checkpoint, {now[k]!r} now" for k in RESUME_MUST_MATCH if saved[k] != now[k]]
    for k in ("world_size", "train_tokens"):
        if state.derived[k] != derived[k]:
            diffs.append(f"{k}={state.derived[k]} in the checkpoint, {derived[k]} now")
    if diffs:
        raise TrainingStopped(f"cannot resume from {path}: " + "; ".join(diffs) + ". Pass the checkpoint's "
                              f"settings (they are in {path.parent / 'run.json'}) or start a new --out_dir.")


def train(cfg: TrainConfig, data: TrainData) -> dict:
    """Run training as configured on `data`, alone or as one process of torchrun's; returns the summary
    (also printed)."""
    with torchrun_processes(cfg.device, cfg.dtype) as p:
        return Run(cfg, data, p.device, p.amp_dtype, p.rank, p.world).loop()


class StopSignals:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, saves and stops (a second signal kills at
    once). Only the main thread may set handlers; elsewhere nothing is installed."""

    def __init__(self):
        self.signalled = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        self.signalled = True
        signal.signal(signum, self.previous[signum])

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class Run:
    """One training run: its step parts, files (run.json, log.jsonl, checkpoints) and the loop."""

    def __init__(self, cfg: TrainConfig, data: TrainData, device: torch.device, amp_dtype: torch.dtype, rank: int,
                 world: int):
        self.cfg, self.device, self.amp_dtype, self.rank, self.world = cfg, device, amp_dtype, rank, world
        self.master, self.out_dir = rank == 0, Path(cfg.out_dir)  # only rank 0 writes files and prints
        self.latest = self.out_dir / "latest.pt"
        if not cfg.resume and self.latest.exists():
            raise TrainingStopped(f"{self.out_dir} already holds a run ({self.latest}); pass --resume to continue it, "
                                  "or choose another --out_dir (or delete that folder)")
        self.val_tokens, train_tokens = data.val_tokens, data.n_train_tokens
        self.max_steps = cfg.max_steps or math.ceil(cfg.epochs * train_tokens / cfg.total_batch_tokens)
        self.derived = dict(world_size=world, grad_accum_steps=grad_accum_steps(cfg, world), max_steps=self.max_steps,
                            device=str(device), device_name=device_name(device),
                            dtype=str(amp_dtype).removeprefix("torch."), compile=compile_wanted(cfg.compile, device),
                            train_tokens=train_tokens, val_tokens=len(self.val_tokens))
        state = None
        if cfg.resume:
            state = load_checkpoint(self.latest)  # says so if there is none
            check_resumable(state, cfg, self.derived, self.latest)
        raw_model = model_from_state(state, device=device, dropout=cfg.dropout) if state else build_model(cfg, device)
        batches = data.batches(rank=rank, accum=self.derived["grad_accum_steps"], world=world, device=device)
        self.parts = build_step(cfg, raw_model, batches, device, amp_dtype, rank, state)
        self.step, self.best_val_loss, self.elapsed_before = (state.step, state.best_val_loss, state.elapsed_s) \
            if state else (0, float("inf"), 0.0)
        self.record = {"config": config_to_dict(cfg), "derived": self.derived,
                       "model_config": dataclasses.asdict(self.parts.raw_model.config),
                       "n_params": self.parts.raw_model.num_params(), "versions": versions()}
        self.log_file = self.open_log(resumed=state is not None) if self.master else None
        self.say = tqdm.write if self.master else (lambda *a, **k: None)  # prints above the progress bar
        self.t_start = time.perf_counter()

    def open_log(self, resumed: bool):
        """Write run.json; open log.jsonl for appending, without the lines of steps a resume will redo."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "run.json").write_text(json.dumps(self.record, indent=2) + "\n")
        tqdm.write(json.dumps(self.record, indent=2))
        log_path = self.out_dir / "log.jsonl"
        if resumed and log_path.exists():
            lines = log_path.read_text().splitlines(keepends=True)
            log_path.write_text("".join(line for line in lines if json.loads(line)["step"] <= self.step))
        return open(log_path, "a")

    def log(self, record: dict) -> None:
        if self.log_file:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def evaluate(self) -> float:
        """Loss on the whole validation split, computed on rank 0 and shared with every rank. Under FSDP
        every rank first joins in gathering the whole weights into a plain copy, which rank 0 evaluates."""
        p = self.parts
        model = gathered_model(p.raw_model, self.device if self.master else None) if p.fsdp else p.raw_model
        result = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self.master:
            r = evaluate_perplexity(model, self.val_tokens, seq_len=self.cfg.seq_len, stride=self.cfg.eval_stride,
                                    batch_size=self.cfg.eval_batch_size, device=self.device, progress=False,
                                    autocast_dtype=self.amp_dtype)
            result[0], result[1] = r.loss, r.n_tokens
        if p.distributed:
            dist.broadcast(result, src=0)
        val_loss = result[0].item()
        self.log({"kind": "eval", "step": self.step, "val_loss": val_loss, "val_ppl": math.exp(val_loss),
                  "val_tokens": int(result[1])})
        self.say(f"step {self.step}: val loss {val_loss:.4f}, ppl {math.exp(val_loss):.2f}")
        return val_loss

    def checkpoint(self, val_loss: float | None) -> None:
        """latest.pt (everything to resume), and best.pt when the validation loss improved. Under FSDP every
        rank joins in gathering the shards onto rank 0's CPU, so the files are those a single process writes."""
        p = self.parts
        sampler_states = [b.state_dict() for b in p.batches]
        if p.distributed:  # every slot's sampler, in slot order, so that any rank can resume its own
            gathered_states = [None] * self.world
            dist.all_gather_object(gathered_states, sampler_states)
            sampler_states = [s for rank_states in gathered_states for s in rank_states]
        keep_on = "cpu" if self.master else None  # only used for shards: other tensors stay where they are
        model_state = gathered(p.raw_model.state_dict(keep_vars=True), keep_on)
        optimizer_state = gathered_optimizer_state(p.optimizer, keep_on)
        improved = val_loss is not None and val_loss < self.best_val_loss
        self.best_val_loss = val_loss if improved else self.best_val_loss
        if not self.master:
            return
        weights = TrainState(model=model_state, model_config=self.record["model_config"], step=self.step,
                             config=self.record["config"], derived=self.derived, val_loss=val_loss)
        if improved:
            save_checkpoint(self.out_dir / "best.pt", weights)
        save_checkpoint(self.latest, dataclasses.replace(
            weights, optimizer=optimizer_state, scaler=p.scaler.state_dict(), batches=sampler_states,
            best_val_loss=self.best_val_loss, elapsed_s=self.elapsed_before + time.perf_counter() - self.t_start))

    def after_step(self, loss_sum: torch.Tensor, grad_norm: torch.Tensor, signalled: bool, lr: float, t0: float) -> bool:
        """Share the loss and any stop request across processes, stop on a non-finite loss, log. True: stop.

        The step's time is read here, after `tolist()` has waited for the device: kernels are queued
        asynchronously on a GPU, so a clock read when train_step returns would time the queueing. Nothing in
        the step waits per micro-batch (under fp16, GradScaler's step reads its overflow flag once)."""
        stats = torch.stack([loss_sum, torch.tensor(float(signalled), device=self.device)])
        if self.parts.distributed:
            dist.all_reduce(stats)  # sum over processes: mean loss, and whether any was signalled
        (loss_total, signals), grad_norm = stats.tolist(), grad_norm.item()  # the device is done with the step
        dt = time.perf_counter() - t0
        loss, stopping = loss_total / self.world, bool(signals)
        if not math.isfinite(loss):
            raise TrainingStopped(
                f"loss is {loss} at step {self.step}: training diverged (try a lower --lr or --dtype bf16/fp32). "
                f"Nothing was saved after it; the last good checkpoint is "
                f"{self.latest if self.latest.exists() else '(none yet)'}")
        tokens = self.cfg.total_batch_tokens
        self.log({"kind": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "tokens_seen": self.step * tokens, "tok_per_s": tokens / dt,
                  "elapsed_s": self.elapsed_before + time.perf_counter() - self.t_start})
        if self.step % self.cfg.log_interval == 0:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / dt:,.0f}")
        return stopping

    def loop(self) -> dict:
        cfg = self.cfg
        self.bar = tqdm(total=self.max_steps, initial=self.step, disable=not self.master, dynamic_ncols=True, unit="step")
        stopping = False
        try:
            with StopSignals() as signals:
                if self.step == 0:
                    self.evaluate()  # the starting point, for comparison
                self.parts.raw_model.train()
                while self.step < self.max_steps and not stopping:
                    self.step += 1
                    t0, lr = time.perf_counter(), lr_at(self.step, cfg, self.max_steps)
                    loss_sum, grad_norm = train_step(self.parts, self.step, lr)
                    stopping = self.after_step(loss_sum, grad_norm, signals.signalled, lr, t0)
                    self.bar.update(1)
                    if self.step % cfg.eval_interval == 0 or self.step == self.max_steps:
                        self.checkpoint(self.evaluate())
                    elif (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or stopping:
                        self.checkpoint(None)
        finally:
            self.bar.close()
            if self.log_file:
                self.log_file.close()
        return self.summary()

    def summary(self) -> dict:
        step, wall, best = self.step, time.perf_counter() - self.t_start, self.best_val_loss
        tokens = step * self.cfg.total_batch_tokens
        summary = {"steps": step, "max_steps": self.max_steps, "tokens": tokens, "wall_s": wall,
                   "best_val_loss": best, "best_val_ppl": math.exp(best) if best < 1e9 else None,
                   "stopped_early": step < self.max_steps}
        self.say(f"{'stopped at' if step < self.max_steps else 'done:'} step {step}/{self.max_steps}, {tokens:,} tokens, "
                 f"{wall:.0f} s this session; best val loss {best:.4f} (ppl {summary['best_val_ppl'] or float('nan'):.2f}); "
                 f"checkpoints in {self.out_dir}")
        return summary

