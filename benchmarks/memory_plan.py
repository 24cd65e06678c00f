"""Per-GPU memory of train.py's step, term by term: gpt2 / medium / large / xl under DDP and FSDP on 1, 2, 4
and 8 GPUs, with and without activation checkpointing, and which setting fits 24, 40 and 80 GB.

    python -m benchmarks.memory_plan                                  # B = 4, T = 1024: tables and JSON
    python -m benchmarks.memory_plan --micro_batch_size 8 --seq_len 512
    python -m benchmarks.memory_plan --validate                       # the formulas against this CPU

The step is train.py's on a GPU: bf16 autocast, float32 weights, fused AdamW, dropout, flash attention,
the chunked loss of gpt2/losses.py. N parameters, R processes (FSDP), C width, V vocabulary, L blocks:

    weights       4 N           FSDP: 4 N / R, this rank's rows of every tensor
    optimizer     8 N           AdamW's two moments; FSDP: 8 N / R
    DDP buckets   4 N           DDP all-reduces the gradients through a flat copy of its own (2+ GPUs)
    gathered      FSDP only     the root's weights (embeddings and tied head: gathered from its forward to
                                the end of its backward) and two blocks' (the one running, the next one
                                prefetched), in bf16 (FSDP's mixed-precision policy)
    gradients     4 N           FSDP: 4 N / R, once reduce-scattered
    activations   what autograd keeps from the forward pass for the backward: SAVED_PER_BLOCK for every
                  block and token (with activation checkpointing: only each block's input), plus the final
                  LayerNorm's input and the loss's gradient of the hidden states; and autocast's bf16 copies
                  of the block weights (DDP; under FSDP the gathered weights are bf16 already)

Weights, optimizer and DDP buckets are held between steps. The step's peak adds the most of three moments:
the end of the forward pass (the activations; the loss's float32 gradient of the head, 4 V C; one chunk's
logits and their temporaries, 8 x 256 x V), the start of the backward with activation checkpointing (one
block recomputed), and the end of the backward (every gradient; the embedding's dense gradient).
`step_moments` spells each out.

Not counted: the CUDA context and NCCL's buffers (about 1 GiB per process) and the caching allocator's
slack; "fits" asks the peak to stay under 90% of the GPU's memory less 1 GiB.

--validate runs train.py's own step (gpt2.training.build_step + train_step) on this CPU at small shapes,
in fresh processes (DDP and FSDP under torchrun with 2 processes), and compares with the same formulas
in float32 without dropout: the state a step leaves behind (AdamW's moments, DDP's buckets) and the
step's peak above it, from the resident set (Linux). Not in bf16: the CPU's bf16 matrix multiplies add
workspaces and float32 copies of their operands that CUDA's do not. What autograd keeps in bf16 (and
in float32) is checked exactly instead, tensor by tensor, by tests/test_fsdp.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import json_from_subprocess
from data.loader import micro_batch_streams
from data.shards import shard_name, write_shard
from gpt2 import training
from gpt2.cli import config_to_dict, parse_config
from gpt2.config import GPTConfig
from gpt2.losses import default_chunk_size
from gpt2.model import GPT
from gpt2.train_config import TrainConfig

MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPU_COUNTS = (1, 2, 4, 8)
GPU_GIB = (24, 40, 80)
GIB = 2**30
REPO = Path(__file__).resolve().parents[1]  # the measuring children run `python -m benchmarks.memory_plan` here

# What autograd keeps, per block and token, from the forward pass until the backward: (what, how many
# times C values, kind). "residual": the residual stream, float32 under autocast (the embeddings are
# float32, and adding a bf16 branch to them promotes); "compute": the autocast dtype; "mask": a dropout mask.
SAVED_PER_BLOCK = (
    ("block input, ln_1's input", 1, "residual"),
    ("ln_1 output, c_attn's input", 1, "compute"),
    ("q, k, v: attention's inputs", 3, "compute"),
    ("attention output: attention keeps it, c_proj reads it (flash attention writes the heads side by side)",
     1, "compute"),
    ("dropout mask after attention", 1, "mask"),
    ("residual after attention, ln_2's input", 1, "residual"),
    ("ln_2 output, c_fc's input", 1, "compute"),
    ("c_fc output, GELU's input", 4, "compute"),
    ("GELU output, c_proj's input", 4, "compute"),
    ("dropout mask after the MLP", 1, "mask"),
)


@dataclass(frozen=True)
class Precision:
    """Bytes per value: `compute` of autocast's activations (2: bf16, 4: none), `mask` per dropout-mask entry
    (1 on CUDA; 0 without dropout); `chunk_rows`: rows per chunk of the loss on the device (gpt2/losses.py)."""

    compute: int = 2
    mask: int = 1
    chunk_rows: int = default_chunk_size(torch.device("cuda"))

    def of(self, kind: str) -> int:
        return {"residual": 4, "compute": self.compute, "mask": self.mask}[kind]


@dataclass(frozen=True)
class Setting:
    gpus: int
    fsdp: bool
    checkpointing: bool

    @property
    def name(self) -> str:
        return ("FSDP" if self.fsdp else "DDP" if self.gpus > 1 else "1 process") + (" + AC" if self.checkpointing else "")


def parameter_counts(c: GPTConfig) -> tuple[int, int, int]:
    """(N, one block's, the root's: embeddings with the tied head and the final LayerNorm)."""
    block = 12 * c.n_embd**2 + 13 * c.n_embd  # c_attn 3C^2 + 3C, c_proj C^2 + C, c_fc 4C^2 + 4C, c_proj 4C^2 + C, 2 LN
    root = (c.vocab_size + c.n_positions) * c.n_embd + 2 * c.n_embd
    return c.n_layer * block + root, block, root


def activations(c: GPTConfig, tokens: int, checkpointing: bool, p: Precision) -> tuple[int, int]:
    """(what the forward pass leaves for the backward, one block's share of it without checkpointing)."""
    C = c.n_embd
    block = sum(width * p.of(kind) for _, width, kind in SAVED_PER_BLOCK) * C * tokens
    kept = c.n_layer * (4 * C * tokens if checkpointing else block)  # checkpointing: each block's input only
    outside = (4 + p.mask + 4) * C * tokens  # ln_f's input, the embedding dropout's mask, d loss / d hidden
    return kept + outside, block


def plan(c: GPTConfig, s: Setting, B: int, T: int, p: Precision = Precision()) -> dict[str, int]:
    """Bytes per GPU: each term, what stays between steps ("state") and the step's peak."""
    N, n_block, n_root = parameter_counts(c)
    R = s.gpus if s.fsdp else 1
    kept, _ = activations(c, B * T, s.checkpointing, p)
    t = {"weights": 4 * N // R, "optimizer": 8 * N // R, "ddp_buckets": 4 * N if s.gpus > 1 and not s.fsdp else 0,
         "gathered": 4 * n_root + p.compute * 2 * n_block if s.fsdp else 0, "gradients": 4 * N // R,
         "activations": kept + (0 if s.checkpointing else weight_casts(c, s, p))}
    t["state"] = t["weights"] + t["optimizer"] + t["ddp_buckets"]
    t["peak"] = t["state"] + max(step_moments(c, s, B, T, p).values())
    return t


def weight_casts(c: GPTConfig, s: Setting, p: Precision) -> int:
    """autocast's bf16 copies of the block weights: they live through the forward pass (its cast cache) and,
    without checkpointing, on into the backward (the matrix multiplies keep them). FSDP gathers bf16 already."""
    _, n_block, _ = parameter_counts(c)
    return 2 * c.n_layer * (n_block - 4 * c.n_embd) if p.compute == 2 and not s.fsdp else 0  # LayerNorms stay


def step_moments(c: GPTConfig, s: Setting, B: int, T: int, p: Precision) -> dict[str, int]:
    """Bytes above the state at the step's three fullest moments."""
    N, n_block, n_root = parameter_counts(c)
    V, C, L, R, bf16 = c.vocab_size, c.n_embd, c.n_layer, s.gpus, p.compute == 2
    kept, block = activations(c, B * T, s.checkpointing, p)
    gb = p.compute if s.fsdp else 4  # bytes of a gathered block weight: FSDP gathers those in the autocast dtype
    root = 4 * n_root if s.fsdp else 0  # the root (float32) stays gathered from its forward to the end of its backward
    # The loss, one chunk of n rows at a time: its float32 logits and log-sum-exp's temporary (in bf16: the
    # float32 d logits, its bf16 copy and the bf16 (V, C) product added to the head's gradient); the head's
    # float32 gradient, and under autocast its bf16 copy (FSDP gathers the root in float32, as autocast keeps it).
    n = min(p.chunk_rows, B * T)
    chunk = max(8 * n * V, 6 * n * V + 2 * V * C) if bf16 else 8 * n * V
    head = 4 * V * C + (2 * V * C if bf16 else 0)
    moments = {"forward end": root + kept + weight_casts(c, s, p) + head + chunk}
    if s.checkpointing:  # the top block recomputed (and the next one gathered), with its gradients
        moments["recompute"] = root + (2 * gb * n_block if s.fsdp else 0) + kept + 4 * V * C + block + 4 * n_block
    if s.fsdp:  # the blocks' gradients sharded; the root's whole: while the embedding's dense gradient is
        # added to the head's (its weights still gathered), then while a float32 copy is reduce-scattered
        moments["backward end"] = 4 * L * n_block // R + 4 * n_root + max(8 * V * C, 4 * n_root * (R + 1) // R)
    else:  # every gradient, and the embedding's dense gradient before it is added to the head's
        moments["backward end"] = 4 * N + 4 * V * C
    return moments


def fits(peak: int, gib: int) -> bool:
    return peak <= 0.9 * gib * GIB - GIB  # room for the CUDA context, NCCL and the allocator's slack


@dataclass
class PlanConfig:
    """Per-GPU memory of train.py's step for the four GPT-2 sizes (see benchmarks/memory_plan.py's docstring)."""

    micro_batch_size: int = 4  # B: rows per micro-batch on each GPU, for the table of terms
    seq_len: int = 1024  # T: tokens per row
    max_micro_batch: int = 64  # the table of what fits tries micro-batches 1, 2, 4, ... up to this
    validate: bool = False  # also check the formulas against train.py's step measured on this CPU (~1-2 minutes)
    json_out: str = "memory_plan.json"  # every figure, as JSON

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "seq_len", "max_micro_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.seq_len > 1024:
            raise ValueError(f"--seq_len {self.seq_len} exceeds GPT-2's context of 1024 positions")


def gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def terms_table(cfg: PlanConfig) -> tuple[list[str], list[dict]]:
    B, T = cfg.micro_batch_size, cfg.seq_len
    lines = [f"Per GPU, GiB, at micro-batch {B} x {T} tokens (AC: activation checkpointing)\n",
             "| model | GPUs | setting | weights | gradients | optimizer | DDP buckets / FSDP gathered | activations "
             "| peak | activations, AC | peak, AC |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for name in MODELS:
        c = GPTConfig.from_name(name)
        for gpus in GPU_COUNTS:
            for fsdp in (False, True):
                plain, ac = (plan(c, Setting(gpus, fsdp, ck), B, T) for ck in (False, True))
                rows.append({"model": name, "gpus": gpus, "fsdp": fsdp, "B": B, "T": T, "plain": plain, "checkpointing": ac})
                lines.append(f"| {name} | {gpus} | {Setting(gpus, fsdp, False).name} | {gib(plain['weights'])} | "
                             f"{gib(plain['gradients'])} | {gib(plain['optimizer'])} | "
                             f"{gib(plain['ddp_buckets'] + plain['gathered'])} | {gib(plain['activations'])} | "
                             f"{gib(plain['peak'])} | {gib(ac['activations'])} | {gib(ac['peak'])} |")
    return lines, rows


def largest_micro_batch(c: GPTConfig, s: Setting, T: int, gpu_gib: int, limit: int) -> int:
    """The largest power-of-two micro-batch whose peak fits `gpu_gib`, 0 if not even 1."""
    best, B = 0, 1
    while B <= limit and fits(plan(c, s, B, T)["peak"], gpu_gib):
        best, B = B, 2 * B
    return best


def fits_table(cfg: PlanConfig) -> tuple[list[str], list[dict]]:
    T = cfg.seq_len
    lines = [f"Largest micro-batch (rows of {T} tokens, powers of two up to {cfg.max_micro_batch}) that fits one GPU, "
             "on 1 / 2 / 4 / 8 GPUs (DDP on 1 GPU: one process, no buckets); - : does not fit\n",
             "| model | setting | " + " | ".join(f"{g} GB" for g in GPU_GIB) + " |", "|---|---|" + "---|" * len(GPU_GIB)]
    rows = []
    for name in MODELS:
        c = GPTConfig.from_name(name)
        for fsdp in (False, True):
            for ck in (False, True):
                cells = {g: [largest_micro_batch(c, Setting(n, fsdp, ck), T, g, cfg.max_micro_batch) for n in GPU_COUNTS]
                         for g in GPU_GIB}
                rows.append({"model": name, "fsdp": fsdp, "checkpointing": ck, "T": T,
                             "largest_micro_batch": {f"{g} GB": dict(zip(GPU_COUNTS, v)) for g, v in cells.items()}})
                label = ("FSDP" if fsdp else "DDP") + (" + AC" if ck else "")
                lines.append(f"| {name} | {label} | " + " | ".join(" / ".join(str(b) if b else "-" for b in cells[g])
                                                                   for g in GPU_GIB) + " |")
    return lines, rows


def teacher_table() -> list[str]:
    """A frozen bf16 teacher for distillation, per GPU: replicated, or sharded with FSDP (its root and two
    blocks gathered while it runs)."""
    lines = ["Distillation teacher in bf16, per GPU, GiB: replicated | sharded over 2 / 4 / 8 GPUs\n",
             "| teacher | replicated | sharded, 2 | sharded, 4 | sharded, 8 |", "|---|---:|---:|---:|---:|"]
    for name in MODELS:
        N, n_block, n_root = parameter_counts(GPTConfig.from_name(name))
        sharded = [2 * N / R + 2 * (n_root + 2 * n_block) for R in (2, 4, 8)]
        lines.append(f"| {name} | {gib(2 * N)} | " + " | ".join(gib(x) for x in sharded) + " |")
    return lines


# ---------------------------------------------------------------------------------------------
# Validation: the formulas against train.py's step on this CPU

# Small shapes whose terms are tens to hundreds of MiB, far above the resident set's noise: GPT-2's vocabulary,
# 4 blocks of width 256. "activations" has the forward pass's memory dominate, "state" the gradients'.
CHECK_MODEL = dict(n_layer=4, n_head=4, n_embd=256)
CHECK_SHAPES = {"activations": (8, 256), "state": (1, 32)}  # (B, T)
CHECKS = [  # (shape, processes, fsdp, checkpointing)
    ("activations", 1, False, False), ("activations", 1, False, True), ("activations", 2, False, False),
    ("activations", 2, True, False), ("activations", 2, True, True),
    ("state", 1, False, False), ("state", 2, False, False), ("state", 2, True, False),
]
TOLERANCE = 0.15


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def _settle() -> int:
    """Hand freed heap back to the OS, restart the high-water mark, and return the resident set."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    return _rss("VmRSS")


def _step_parts(spec: dict, model: GPT, data_dir: str, B: int, T: int, world: int):
    cfg = TrainConfig(init="scratch", data_dir=data_dir, seq_len=T, micro_batch_size=B, total_batch_tokens=B * T * world,
                            compile=False, fsdp=spec["fsdp"], activation_checkpointing=spec["checkpointing"], seed=0)
    rank = torch.distributed.get_rank() if world > 1 else 0
    batches = micro_batch_streams(data_dir, B, T, seed=0, rank=rank, accum=1, world=world)
    return training.build_step(cfg, model, batches, torch.device("cpu"), torch.float32, rank)


def measure_in_this_process(spec: dict) -> dict:
    """train.py's step at the spec's shape, in this fresh process (under torchrun, on each rank): the
    resident set held after two steps above what was held before them (AdamW's moments, DDP's buckets),
    and the third step's peak above that. A step of a one-block model of the same kind runs first: the
    pages of code and the thread pools a step touches are then in place."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    torch.set_num_threads(1)
    B, T = CHECK_SHAPES[spec["shape"]]
    config = GPTConfig(**CHECK_MODEL, n_positions=T, dropout=0.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_shard(os.path.join(tmp, shard_name("train", 0)), np.random.default_rng(0).integers(0, 50257, 100_000))
            warm = _step_parts(spec, GPT(replace(config, n_layer=1, n_embd=64, n_head=1)), tmp, B, T, world)
            training.train_step(warm, 1, 1e-4)
            del warm
            model = GPT(config)
            parts = _step_parts(spec, model, tmp, B, T, world)
            before = _settle()
            training.train_step(parts, 1, 1e-4)
            training.train_step(parts, 2, 1e-4)  # DDP lays its buckets out again, in the order of the first backward
            after = _settle()
            training.train_step(parts, 3, 1e-4)
            peak = _rss("VmHWM")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return {"state": after - before, "step": peak - after}


def measure(spec: dict) -> dict:
    """measure_in_this_process in a fresh process (torchrun for 2), as rank 0 reports it. MALLOC_MMAP_THRESHOLD_
    has glibc map every allocation of 64 KiB or more on its own, so a freed tensor leaves the resident set."""
    env = {**os.environ, "MEMORY_PLAN_MEASURE": json.dumps(spec), "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "65536", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    launch = [sys.executable] if spec["processes"] == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(spec["processes"])]
    return json_from_subprocess([*launch, "-m", "benchmarks.memory_plan"], f"the measurement {spec}", env=env,
                                cwd=REPO, timeout=600)


def validate() -> tuple[list[str], list[dict], bool]:
    lines = [f"The formulas against train.py's step on this CPU, float32, no dropout (4 blocks, C=256, V=50257; "
             f"MiB per process; measured / planned must lie within {TOLERANCE:.0%} of 1)\n",
             "| B x T | setting | state: planned | measured | ratio | step above it: planned | measured | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows, all_ok = [], True
    for shape, processes, fsdp, ck in CHECKS:
        spec = dict(shape=shape, processes=processes, fsdp=fsdp, checkpointing=ck)
        B, T = CHECK_SHAPES[shape]
        s = Setting(processes, fsdp, ck)
        cpu = Precision(compute=4, mask=0, chunk_rows=default_chunk_size(torch.device("cpu")))
        t = plan(GPTConfig(**CHECK_MODEL, n_positions=T), s, B, T, cpu)
        planned = {"state": t["optimizer"] + t["ddp_buckets"], "step": t["peak"] - t["state"]}
        measured = measure(spec)
        ratio = {k: measured[k] / planned[k] for k in planned}
        ok = all(abs(r - 1) <= TOLERANCE for r in ratio.values())
        all_ok &= ok
        rows.append({**spec, "B": B, "T": T, "planned": planned, "measured": measured, "ok": ok})
        cells = [f"{planned[k] / 2**20:.0f} | {measured[k] / 2**20:.0f} | {ratio[k]:.2f}{'' if ok else ' NO'}"
                 for k in ("state", "step")]
        lines.append(f"| {B} x {T} | {s.name} | " + " | ".join(cells) + " |")
    return lines, rows, all_ok


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(PlanConfig, argv)
    report = {"config": config_to_dict(cfg)}
    for name, (lines, rows) in {"terms": terms_table(cfg), "fits": fits_table(cfg)}.items():
        print("\n".join(lines) + "\n")
        report[name] = rows
    print("\n".join(teacher_table()) + "\n")
    ok = True
    if cfg.validate:
        lines, report["validation"], ok = validate()
        print("\n".join(lines) + "\n")
        print("every term within the tolerance" if ok else "some terms are off: see the rows marked NO")
    Path(cfg.json_out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {cfg.json_out}")
    if not ok:
        sys.exit(1)
    return report


if __name__ == "__main__":
    if "MEMORY_PLAN_MEASURE" in os.environ:  # a measuring child (see `measure`): one JSON line from rank 0
        result = measure_in_this_process(json.loads(os.environ["MEMORY_PLAN_MEASURE"]))
        if int(os.environ.get("RANK", 0)) == 0:
            print(json.dumps(result))
    else:
        main()
