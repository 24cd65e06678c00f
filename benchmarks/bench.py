"""Throughput of this GPT-2 on this machine: training steps, generation, evaluation, data, forward.

    python -m benchmarks.bench                                   # every section, defaults for this device
    python -m benchmarks.bench --what train --batch_sizes 8 16   # one section, chosen batch sizes
    python -m benchmarks.bench --compare_hf                      # transformers' GPT2LMHeadModel side by side
    torchrun --nproc_per_node 8 -m benchmarks.bench --what train # aggregate and per-GPU tokens/s, DDP and FSDP steps
    python -m benchmarks.bench --append_md BENCHMARKS.md         # also append a dated, machine-labelled section

The weights are random (speed does not depend on them). Every figure is the median of --repeats
timed runs after --warmup untimed ones (torch.compile compiles there), the device synchronised
around each; with --compare_hf our runs and transformers' alternate, so background load hits both
(transformers runs with use_cache=False outside generation: logits alone, as ours computes them).
Sections:
  train     train.py's own step (gpt2.training.build_step + train_step: the data stream from shards of
            random tokens, per-slot dropout seeds, autocast, scaler, the chunked loss, clipping, fused
            AdamW, compile, and under torchrun a DDP row and an FSDP row, train.py --fsdp, side by side),
            one micro-batch per process, the loss read back as the loop reads it: the figure `make
            finetune` gets. ms/step, tokens/s, MFU, peak memory. --activation_checkpointing times every
            row with it. An FSDP row's peak memory counts the whole model each process holds until
            build_step shards it (as train.py's processes do when they start) when that is larger than
            the step's own peak; benchmarks/memory_plan.py gives the steady state term by term.
  generate  gpt2.sampler.generate, greedy, with the KV cache (eager), and (--compile_decode) with
            compile=True (the fixed-shape decode step under torch.compile; CUDA graphs on CUDA): the
            time to the first token (generating 1: prefill plus per-call setup), decode tokens/s from
            the time the other n-1 take, and end to end. Generation runs on weights stored in the
            precision (bf16 on CUDA), as distill.py and evaluate.py run it.
  eval      gpt2.metrics.perplexity.evaluate_perplexity against a bare forward of the same batches.
  data      data.loader.TrainBatches on synthetic shards (to the device, as train.py draws them).
  forward   model(idx) -> full (B, T, V) logits, no grad.
Peak memory = the model's weights + the most the measured code added above what was allocated before
(CUDA: torch.cuda.max_memory_allocated; CPU: peak resident set size, Linux only). MFU uses
benchmarks/flops.py's convention (6N + 12LCT FLOPs per token) and its table of dense bf16 peaks.
This file is the command line and the runner; each section's measurement is in benchmarks/sections.py.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

from benchmarks import sections
from benchmarks.harness import hf_twin
from benchmarks.report import ReportWriter, machine_info
from gpt2.cli import config_to_dict, parse_config, require_positive
from gpt2.config import GPTConfig
from gpt2.device import compile_wanted
from gpt2.distributed import Processes, torchrun_processes
from gpt2.model import GPT

SECTIONS = ("train", "generate", "eval", "data", "forward")


@dataclass
class BenchConfig:
    """Measure training, generation, evaluation, data loading and forward throughput (see benchmarks/bench.py's docstring)."""

    what: str = "train,generate,eval,data,forward"  # sections to run, comma-separated
    # model
    model: str = "gpt2"  # the shape of a published checkpoint, built with random weights
    n_layer: int | None = None  # override the shape's number of blocks
    n_head: int | None = None  # override its attention heads
    n_embd: int | None = None  # override its width
    vocab_size: int | None = None  # override its vocabulary size
    dropout: float = 0.1  # dropout of the training step (train.py's default); 0 times the model alone
    activation_checkpointing: bool = False  # train: time the step with train.py --activation_checkpointing
    # hardware
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA (fp16 without bf16); CPU: bf16 with bf16 units, else fp32
    threads: int | None = None  # torch.set_num_threads for CPU work; None keeps torch's default
    peak_tflops: float | None = None  # the device's dense peak for MFU; None: benchmarks/flops.py's table (CUDA only)
    # train, forward, eval
    batch_sizes: list[int] | None = None  # rows per step; None: 1 4 8 16 on CUDA, 1 2 on CPU
    seq_len: int | None = None  # tokens per row T; None: 1024 on CUDA, 128 on CPU
    compile: bool | None = None  # also time torch.compile'd training steps; None: on CUDA, off on CPU
    # generate
    gen_batch_sizes: list[int] | None = None  # rows generated together; None: 1 8 32 on CUDA, 1 8 on CPU
    prompt_len: int = 64  # prompt tokens per row (random ids)
    new_tokens: int | None = None  # tokens generated per row; None: 256 on CUDA, 32 on CPU
    compile_decode: bool | None = None  # also time generate(compile=True): the decode step compiled (CUDA graphs on
                                        # CUDA, inductor on CPU); None: on CUDA only
    eager: bool = True  # time the uncompiled training step and generate(); --no-eager: the compiled rows alone
                        # (gpu_check.sh times each compile in a step of its own)
    # data
    data_batch_size: int = 8  # B of the TrainBatches measurement
    data_seq_len: int = 1024  # T of the TrainBatches measurement
    # timing and output
    warmup: int = 2  # untimed runs before the timed ones
    repeats: int = 5  # timed runs of everything; the median is reported
    compare_hf: bool = False  # time transformers' GPT2LMHeadModel (same shape, weights, dtype; SDPA attention) too
    json_out: str = "bench.json"  # every figure, the machine and the resolved config, as JSON (rewritten after every row)
    append_md: str | None = None  # also append the tables to this markdown file, under a dated machine heading (each
                                  # row as it is measured)
    seed: int = 0  # seeds the weights and the random tokens

    def __post_init__(self) -> None:
        unknown = set(self.sections) - set(SECTIONS)
        if unknown or not self.sections:
            raise ValueError(f"--what {self.what!r}: choose from {', '.join(SECTIONS)} (comma-separated)")
        require_positive(self, "prompt_len", "data_batch_size", "data_seq_len", "repeats", "n_layer", "n_head", "n_embd",
                         "vocab_size", "seq_len", "new_tokens", "threads")
        for name in ("batch_sizes", "gen_batch_sizes"):
            if getattr(self, name) is not None and min(getattr(self, name)) < 1:
                raise ValueError(f"--{name} must all be at least 1, got {getattr(self, name)}")
        if self.warmup < 1:
            raise ValueError("--warmup must be at least 1: the first run allocates (and compiles) and is never timed")

    @property
    def sections(self) -> list[str]:
        return [s.strip() for s in self.what.split(",") if s.strip()]


def resolve(cfg: BenchConfig, device: torch.device) -> BenchConfig:
    """Fill the device-dependent defaults (None fields), so that the stored config says what ran."""
    cuda = device.type == "cuda"
    new_tokens = cfg.new_tokens or (256 if cuda else 32)
    return dataclasses.replace(
        cfg, batch_sizes=cfg.batch_sizes or ([1, 4, 8, 16] if cuda else [1, 2]), seq_len=cfg.seq_len or (1024 if cuda else 128),
        compile=compile_wanted(cfg.compile, device), gen_batch_sizes=cfg.gen_batch_sizes or ([1, 8, 32] if cuda else [1, 8]),
        new_tokens=new_tokens,
        compile_decode=compile_wanted(cfg.compile_decode, device))


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BenchConfig, argv)
    if "RANK" in os.environ and (cfg.sections != ["train"] or cfg.compare_hf):
        raise SystemExit("error: under torchrun, benchmarks.bench measures only the training step: pass --what train, "
                         "without --compare_hf; run the other sections as a single process")
    with torchrun_processes(cfg.device, cfg.dtype) as p:
        return run_sections(cfg, p)


def run_sections(cfg: BenchConfig, p: Processes) -> dict:
    """Every section --what names, in order, on this process's device; rank 0 prints and writes the report."""
    device, amp_dtype, rank, world = p.device, p.amp_dtype, p.rank, p.world
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg = resolve(cfg, device)
    if not cfg.eager and not (cfg.compile and "train" in cfg.sections or cfg.compile_decode and "generate" in cfg.sections):
        raise SystemExit("error: --no-eager leaves nothing to time: it times only the compiled rows, so pass "
                         "--what train with --compile or --what generate with --compile_decode")
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size") if getattr(cfg, k) is not None}
    try:
        model_config = GPTConfig.from_name(cfg.model, dropout=cfg.dropout, **shape)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    for what, length in (("--seq_len", cfg.seq_len), ("--prompt_len + --new_tokens", cfg.prompt_len + cfg.new_tokens)):
        if length > model_config.n_positions:
            raise SystemExit(f"error: {what} = {length} exceeds the model's context of {model_config.n_positions} "
                             "positions; lower it")
    torch.manual_seed(cfg.seed + rank)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(config_to_dict(cfg))
    model = GPT(model_config, seed=cfg.seed).to(device)
    hf, hf_note = None, None
    if cfg.compare_hf:
        try:
            hf = hf_twin(model)
        except ImportError:
            hf_note = "--compare_hf: transformers is not installed (pip install transformers); measured ours alone"
            say(hf_note)
    bench = sections.Bench(cfg, device, amp_dtype, model, hf, world)
    report = {"config": config_to_dict(cfg), "machine": machine_info(device, amp_dtype, world), "notes": [],
              "flops_convention": "MFU: 6N + 12LCT FLOPs per trained token, N = matrix-multiply weights (benchmarks/flops.py)",
              "sections": {}}
    if hf_note:
        report["notes"].append(hf_note)
    run = {"train": sections.section_train, "generate": sections.section_generate, "eval": sections.section_eval,
           "data": sections.section_data, "forward": sections.section_forward}
    # Every row reaches json_out and append_md the moment it is measured: a run stopped at a time limit keeps them.
    writer = ReportWriter(report, cfg.json_out, cfg.append_md) if rank == 0 else ReportWriter(report, None, None)
    for name in cfg.sections:
        start = time.perf_counter()
        for row in run[name](bench):
            writer.add(name, row)
            say(f"{name}:", {k: v for k, v in row.items() if not k.startswith("_")})
        say(f"[{name}: {time.perf_counter() - start:.0f} s]")
    if rank == 0:
        writer.finish()
    return report


if __name__ == "__main__":
    main()
