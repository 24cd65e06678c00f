"""Memory and time of one training step with the full (B, T, V) logits, as today, against the chunked,
fused losses of gpt2/losses.py. gpt2 shape, random weights, B = 2, T = 1024, float32, CPU; one step =
forward + backward, no optimizer. Four variants:

    ce_full      logits = model(x), then F.cross_entropy of the flattened float logits
    ce_chunked   the final hidden states, then linear_cross_entropy
    kd_full      student and teacher logits, then the distillation formula on them (`full_logits_kd` below,
                 what train.py --teacher computed before gpt2/losses.py)
    kd_chunked   student and teacher hidden states (model(x, return_hidden=True)), then linear_kd_loss

The KD teacher is the 12-block model, under no_grad; the student has 6 of its blocks, the same width
(gpt2/kd.py's make_student, DistilGPT2's choice of blocks).

Memory: each variant runs in a fresh process. It builds its model(s), runs one warm-up step (which
allocates the gradient buffers, thread pools and allocator arenas), zeroes the gradients in place and
hands freed heap back to the OS (malloc_trim), then measures one more step: the growth of the resident
set's high-water mark (VmHWM, reset through /proc/self/clear_refs; Linux) above the resident set just
before it. So "above the models' own memory" means above the weights and their gradient buffers, which
every variant holds alike: what remains is the activations, the loss's own tensors and the backward's
temporaries. The process's whole peak (ru_maxrss) is reported too.
Time: ce_full and ce_chunked on one model, in one process, take turns after a warm-up step each
(benchmarks/harness.py), so that load from other processes hits both alike; the median step gives tokens/s.

    python -m benchmarks.loss_memory [--repeats 3] [--json_out bench_loss_memory.json]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt2.cli import config_to_dict, parse_config
from gpt2.config import GPTConfig
from gpt2.kd import make_student
from gpt2.losses import IGNORE_INDEX, linear_cross_entropy, linear_kd_loss
from gpt2.model import GPT
from benchmarks.harness import json_from_subprocess, measure, peak_memory

VARIANTS = ["ce_full", "ce_chunked", "kd_full", "kd_chunked"]
TARGETS = {"ce_chunked": 0.75, "kd_chunked": 0.5}  # the issue's ceilings: peak above the models vs the full logits'
MIN_SPEED = 0.95  # the floor: ce_chunked tokens/s vs ce_full's


@dataclass
class BenchConfig:
    """Peak memory above the models, and step time, of full-logits and chunked losses (gpt2/losses.py)."""

    model: str = "gpt2"  # shape of the model (the KD teacher), with random weights
    batch_size: int = 2  # B, rows per step
    seq_len: int = 1024  # T, tokens per row
    chunk_size: int | None = None  # rows per chunk of the chunked losses; none: gpt2/losses.py's default
    temperature: float = 2.0  # KD softmax temperature (train.py's default)
    kd_weight: float = 0.5  # KD weight of the KL term (train.py's --kd_weight default)
    repeats: int = 3  # timed steps of each cross-entropy variant after one warm-up; the median is reported
    json_out: str = "bench_loss_memory.json"  # where the results are written

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")


def full_logits_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                   temperature: float, kd_weight: float) -> torch.Tensor:
    """kd_weight * T^2 * KL(p_T || q_T) + (1 - kd_weight) * CE on the whole (B, T, V) logits: the formula that
    linear_kd_loss computes chunk by chunk, as gpt2/kd.py's kd_loss wrote it before gpt2/losses.py."""
    V = student_logits.size(-1)
    student, teacher = student_logits.float().view(-1, V), teacher_logits.float().view(-1, V)  # (N, V) each
    y = targets.reshape(-1)  # (N,)
    ce = F.cross_entropy(student, y, ignore_index=IGNORE_INDEX)
    valid = (y != IGNORE_INDEX).float()  # (N,)
    log_q = F.log_softmax(student / temperature, dim=-1)  # student, softened
    log_p = F.log_softmax(teacher / temperature, dim=-1)  # teacher, softened
    kl = ((log_p.exp() * (log_p - log_q)).sum(-1) * valid).sum() / valid.sum()
    return kd_weight * temperature**2 * kl + (1 - kd_weight) * ce


def final_hidden(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    return model(idx, return_hidden=True)  # (B, T, C) after ln_f: what the head reads


def loss_of(variant: str, cfg: BenchConfig, student: GPT, teacher: GPT | None, x: torch.Tensor, y: torch.Tensor):
    """The loss of one batch, computed the way `variant` does."""
    if variant == "ce_full":
        logits = student(x)  # (B, T, V)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX)
    if variant == "ce_chunked":
        return linear_cross_entropy(final_hidden(student, x), student.lm_head.weight, y, chunk_size=cfg.chunk_size)
    if variant == "kd_full":  # in train.py's order: the student, then the frozen teacher
        logits = student(x)  # (B, T, V)
        with torch.no_grad():
            teacher_logits = teacher(x)  # (B, T, V)
        return full_logits_kd(logits, teacher_logits, y, temperature=cfg.temperature, kd_weight=cfg.kd_weight)
    hidden = final_hidden(student, x)  # (B, T, C)
    with torch.no_grad():
        teacher_hidden = final_hidden(teacher, x)  # (B, T, C)
    return linear_kd_loss(hidden, student.lm_head.weight, teacher_hidden, teacher.lm_head.weight, y,
                          temperature=cfg.temperature, kd_weight=cfg.kd_weight, chunk_size=cfg.chunk_size)[0]


def build(cfg: BenchConfig, kd: bool):
    """(student, teacher or None, x, y): the trained model (for KD, a student cut from the teacher) and a batch."""
    config = GPTConfig.from_name(cfg.model)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (cfg.batch_size, cfg.seq_len), generator=g)  # (B, T)
    y = torch.randint(0, config.vocab_size, (cfg.batch_size, cfg.seq_len), generator=g)  # (B, T)
    model = GPT(config)
    if not kd:
        return model, None, x, y
    return make_student(model), model.eval().requires_grad_(False), x, y  # half the blocks, the same width


def step_fn(variant: str, cfg: BenchConfig, student: GPT, teacher: GPT | None, x: torch.Tensor, y: torch.Tensor):
    def step():
        loss_of(variant, cfg, student, teacher, x, y).backward()

    return step


def measure_memory(variant: str, cfg: BenchConfig) -> dict:
    """In this (fresh) process: the step's peak above the models' weights and gradients, in bytes."""
    student, teacher, x, y = build(cfg, kd=variant.startswith("kd"))
    step = step_fn(variant, cfg, student, teacher, x, y)
    step()  # warm-up: gradient buffers, thread pools, allocator arenas
    student.zero_grad(set_to_none=False)  # keep the buffers: they are the model's, not the step's
    out: dict = {}
    with peak_memory(torch.device("cpu"), out):
        step()
    models = [m for m in (student, teacher) if m is not None]
    return dict(step_peak_bytes=out["added"],
                weight_bytes=sum(p.numel() * p.element_size() for m in models for p in m.parameters()),
                grad_bytes=sum(p.grad.numel() * p.grad.element_size() for p in student.parameters()),
                process_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # kB on Linux


# The child process: one variant's memory, printed as one JSON line.
CHILD = """
import json, sys
from benchmarks import loss_memory
cfg = loss_memory.BenchConfig(**json.loads(sys.argv[2]))
print(json.dumps(loss_memory.measure_memory(sys.argv[1], cfg)))
"""


def memory_in_fresh_process(variant: str, cfg: BenchConfig) -> dict:
    """`variant`'s memory measured in a new process started from the repository root, like this one."""
    command = [sys.executable, "-c", CHILD, variant, json.dumps(config_to_dict(cfg))]
    return json_from_subprocess(command, variant, cwd=Path(__file__).resolve().parents[1])


def measure_time(cfg: BenchConfig) -> dict:
    """Median step time of ce_full and ce_chunked on one model, taking turns."""
    model, _, x, y = build(cfg, kd=False)
    candidates = {v: (lambda v=v: step_fn(v, cfg, model, None, x, y), model) for v in ("ce_full", "ce_chunked")}
    results = measure(candidates, torch.device("cpu"), warmup=1, repeats=cfg.repeats)
    return {v: dict(median_s=r["median_s"], runs_s=r["runs_s"]) for v, r in results.items()}


def report(cfg: BenchConfig, memory: dict, times: dict) -> None:
    tokens = cfg.batch_size * cfg.seq_len
    mib = 2**20
    print(f"\n{cfg.model}, B={cfg.batch_size}, T={cfg.seq_len}, float32, CPU ({os.cpu_count()} cores); peak memory of "
          f"one step above the models' weights and gradients, each variant in a fresh process\n")
    print("| variant | step peak above models (MiB) | vs full logits | target | process peak (MiB) | step (s) "
          "| tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in VARIANTS:
        m = memory[v]
        full = memory[v.replace("chunked", "full")]
        m["vs_full"] = m["step_peak_bytes"] / full["step_peak_bytes"]
        target = f"<= {TARGETS[v]}" if v in TARGETS else ""
        t = times.get(v)
        time_cells = f"{t['median_s']:.2f} | {tokens / t['median_s']:.0f}" if t else " | "
        print(f"| {v} | {m['step_peak_bytes'] / mib:.0f} | {m['vs_full']:.2f} | {target} | "
              f"{m['process_peak_bytes'] / mib:.0f} | {time_cells} |")
    speed = times["ce_full"]["median_s"] / times["ce_chunked"]["median_s"]
    times["ce_chunked"]["speed_vs_full"] = speed
    print(f"\nce_chunked tokens/s = {speed:.3f}x ce_full's (target >= {MIN_SPEED}); median of {cfg.repeats} steps each")
    misses = [f"{v} memory {memory[v]['vs_full']:.2f}x > {limit}" for v, limit in TARGETS.items()
              if memory[v]["vs_full"] > limit] + ([f"speed {speed:.3f}x < {MIN_SPEED}"] if speed < MIN_SPEED else [])
    print("targets met" if not misses else "targets missed: " + "; ".join(misses))


def main() -> None:
    cfg = parse_config(BenchConfig)
    print(json.dumps(config_to_dict(cfg)))
    memory = {v: memory_in_fresh_process(v, cfg) for v in VARIANTS}
    times = measure_time(cfg)
    report(cfg, memory, times)
    result = dict(config=config_to_dict(cfg), memory=memory, time=times,
                  machine=dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                               cpus=os.cpu_count(), threads=torch.get_num_threads()))
    Path(cfg.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {cfg.json_out}")


if __name__ == "__main__":
    main()
