"""Throughput of this GPT-2 on this machine: training steps, generation, evaluation, data, forward.

    python bench.py                                   # every section, defaults for this device
    python bench.py --what train --batch_sizes 8 16   # one section, chosen batch sizes
    python bench.py --compare_hf                      # transformers' GPT2LMHeadModel side by side
    torchrun --nproc_per_node 8 bench.py --what train # aggregate and per-GPU tokens/s, DDP and FSDP steps
    python bench.py --append_md BENCHMARKS.md         # also append a dated, machine-labelled section

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
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch

from gpt2 import training
from benchmarks.harness import hf_twin, measure
from benchmarks.report import ReportWriter, machine_info
from data.loader import SplitTokens, TrainBatches, micro_batch_streams
from data.shards import shard_name, write_shard
from gpt2.cli import config_to_dict, parse_config, require_positive
from gpt2.config import GPTConfig
from gpt2.device import autocast, compile_wanted
from gpt2.distributed import Processes, torchrun_processes
from benchmarks.flops import flops_per_token, mfu, peak_tflops
from gpt2.model import GPT
from gpt2.train_config import TrainConfig
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.sampler import SamplingConfig, generate

SECTIONS = ("train", "generate", "eval", "data", "forward")


@dataclass
class BenchConfig:
    """Measure training, generation, evaluation, data loading and forward throughput (see bench.py's docstring)."""

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


@dataclass
class Bench:
    """What every section needs: the resolved config, the device, the autocast dtype, the models."""

    cfg: BenchConfig
    device: torch.device
    amp_dtype: torch.dtype  # autocast dtype of training, forward and eval; generation stores the weights in it
    model: GPT
    hf: torch.nn.Module | None  # transformers' twin (same weights), or None
    world: int = 1  # processes under torchrun

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def tokens(self, B: int, T: int) -> torch.Tensor:
        return torch.randint(0, self.model.config.vocab_size, (B, T), device=self.device)  # (B, T)

    def measure(self, candidates: dict, **kw) -> dict:
        return measure(candidates, self.device, **{"warmup": self.cfg.warmup, "repeats": self.cfg.repeats, **kw})

    def impls(self) -> dict:
        return {"ours": self.model, **({"hf": self.hf} if self.hf is not None else {})}


def runs_ms(res: dict) -> dict:
    """Every timed run (ms) of each candidate: kept in the JSON (as "_runs_ms", left out of the tables)."""
    return {name: [round(t * 1e3, 2) for t in r.get("runs_s", [])] for name, r in res.items()}


def ratio(a, b) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b else None


def add_ratios(row: dict, columns: dict[str, str], mine: str = "ours ", theirs: str = "hf ") -> None:
    """row[column] = row[mine + figure] / row[theirs + figure] for column, figure in `columns`, when theirs was measured."""
    for column, figure in columns.items():
        if theirs + figure in row:
            row[column] = ratio(row.get(mine + figure), row.get(theirs + figure))


# ---------------------------------------------------------------------------------------------
# Sections: each yields its table's rows (dicts whose keys are the columns) as it measures them


def hf_lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """transformers takes its loss from labels, shifted inside (T - 1 targets per row)."""
    return model(input_ids=x, labels=x, use_cache=False).loss


def train_step(b: Bench, model: torch.nn.Module, B: int, compiled: bool, hf: bool, data_dir: str, fsdp: bool = False):
    """make() for `measure`: train.py's own step (gpt2.training.build_step + train_step: its data streams,
    per-slot dropout seeds, autocast, scaler, clipping, fused AdamW, activation checkpointing, compile and
    DDP or FSDP wrapping) on one micro-batch per process, the loss read back as train.py's loop reads it
    every step. With fsdp, build_step shards `model` in place."""

    def make():
        model.train()
        cfg = TrainConfig(data_dir=data_dir, seq_len=b.cfg.seq_len, micro_batch_size=B,
                                total_batch_tokens=B * b.cfg.seq_len * b.world, compile=compiled, seed=b.cfg.seed,
                                fsdp=fsdp, activation_checkpointing=b.cfg.activation_checkpointing)
        rank = torch.distributed.get_rank() if b.world > 1 else 0
        batches = micro_batch_streams(data_dir, B, b.cfg.seq_len, seed=cfg.seed, rank=rank, accum=1, world=b.world,
                                      device=b.device)
        parts = training.build_step(cfg, model, batches, b.device, b.amp_dtype, rank)
        if hf:  # the same step, with transformers' own loss
            parts = dataclasses.replace(parts, loss_fn=hf_lm_loss)
        steps = iter(range(1, 10**9))
        return lambda: training.train_step(parts, next(steps), cfg.lr)[0].item()

    return make, model


def random_shards(b: Bench, tmp: str) -> str:
    """A train split of random tokens for the training step to read, as train.py reads its shards."""
    tokens = np.random.default_rng(b.cfg.seed).integers(0, b.model.config.vocab_size, 2_000_000)
    write_shard(os.path.join(tmp, shard_name("train", 0)), tokens)
    return tmp


def section_train(b: Bench) -> Iterator[dict]:
    cfg, T = b.cfg, b.cfg.seq_len
    flops = flops_per_token(b.model.config, T)
    peak = cfg.peak_tflops
    if peak is None and b.device.type == "cuda" and b.amp_dtype != torch.float32:  # the table holds bf16 peaks
        peak = peak_tflops(torch.cuda.get_device_name(b.device))
    shardings = ["ddp", "fsdp"] if torch.distributed.is_initialized() else [None]  # torchrun: both, side by side
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = random_shards(b, tmp)
        for compiled in [False, True] if cfg.compile else [False]:
            for B in cfg.batch_sizes:
                for sharding in shardings:
                    # Fresh copies each time (FSDP shards its copy in place), so the twins stay equal.
                    res = b.measure({name: train_step(b, copy.deepcopy(m), B, compiled, name == "hf", data_dir,
                                                      fsdp=sharding == "fsdp") for name, m in b.impls().items()})
                    yield train_row(b, res, B, compiled, sharding, flops, peak)


def train_row(b: Bench, res: dict, B: int, compiled: bool, sharding: str | None, flops: int, peak: float | None) -> dict:
    T = b.cfg.seq_len
    row = {"B": B, "T": T, "compile": compiled, **({"ranks": b.world, "sharding": sharding} if sharding else {})}
    for name, r in res.items():
        tok_s = B * T * b.world / r["median_s"] if "median_s" in r else None  # all processes together
        row |= {f"{name} ms/step": r["median_s"] * 1e3 if tok_s else r["error"], f"{name} tok/s": tok_s,
                **({f"{name} tok/s per process": tok_s / b.world if tok_s else None} if b.world > 1 else {}),
                f"{name} MFU": mfu(tok_s / b.world, flops, peak) if tok_s else None,
                f"{name} peak MiB": r["peak_mib"] if tok_s else None}
    add_ratios(row, {"ours/hf tok/s": "tok/s", "ours/hf mem": "peak MiB"})
    return row | {"_runs_ms": runs_ms(res)}


def forward(b: Bench, model, x: torch.Tensor, hf: bool = False):
    """make() for `measure`: full logits (B, T, V) of x, no grad, under the autocast of training."""

    def make():
        model.eval()

        @torch.inference_mode()
        def run():
            with b.autocast():
                return model(x, use_cache=False).logits if hf else model(x)  # no KV cache kept: logits alone

        return run

    return make, model


def section_forward(b: Bench) -> Iterator[dict]:
    T = b.cfg.seq_len
    for B in b.cfg.batch_sizes:
        x = b.tokens(B, T)
        res = b.measure({name: forward(b, m, x, hf=name == "hf") for name, m in b.impls().items()})
        row = {"B": B, "T": T}
        for name, r in res.items():
            ok = "median_s" in r
            row |= {f"{name} ms": r["median_s"] * 1e3 if ok else r["error"], f"{name} tok/s": B * T / r["median_s"] if ok else None,
                    f"{name} peak MiB": r["peak_mib"] if ok else None}
        add_ratios(row, {"ours/hf tok/s": "tok/s", "ours/hf mem": "peak MiB"})
        yield row | {"_runs_ms": runs_ms(res)}


def section_eval(b: Bench) -> Iterator[dict]:
    """evaluate_perplexity over n_batches full batches vs the bare forward of one: any per-token Python
    work in evaluation (batching, the float32 cross-entropy, the sums) shows as a ratio below 1."""
    B, T, n_batches = max(b.cfg.batch_sizes), b.cfg.seq_len, 4
    tokens = np.random.default_rng(b.cfg.seed).integers(0, b.model.config.vocab_size, B * T * n_batches + 1)
    def make_eval():
        return lambda: evaluate_perplexity(b.model, tokens, seq_len=T, batch_size=B, device=b.device,
                                           autocast_dtype=b.amp_dtype, progress=False)

    res = b.measure({"eval": (make_eval, b.model), "forward": forward(b, b.model, b.tokens(B, T))})
    if "median_s" not in res["eval"] or "median_s" not in res["forward"]:
        yield {"B": B, "T": T, "eval tok/s": "out of memory"}
        return
    eval_tok_s, forward_tok_s = B * T * n_batches / res["eval"]["median_s"], B * T / res["forward"]["median_s"]
    yield {"B": B, "T": T, "tokens": B * T * n_batches, "eval tok/s": eval_tok_s, "forward tok/s": forward_tok_s,
           "eval/forward": eval_tok_s / forward_tok_s, "eval peak MiB": res["eval"]["peak_mib"], "_runs_ms": runs_ms(res)}


def section_data(b: Bench) -> Iterator[dict]:
    B, T, n_batches = b.cfg.data_batch_size, b.cfg.data_seq_len, 20
    with tempfile.TemporaryDirectory() as tmp:
        gen = np.random.default_rng(b.cfg.seed)
        for i in range(2):  # two shards of 4M tokens: some windows cross the boundary
            write_shard(os.path.join(tmp, shard_name("train", i)), gen.integers(0, 50257, 4_000_000))
        split = SplitTokens(tmp, "train")

        def make():
            batches = TrainBatches(split, B, T, seed=b.cfg.seed, device=b.device)  # to the device, as train.py draws
            return lambda: [batches.next() for _ in range(n_batches)]

        r = b.measure({"TrainBatches": (make, torch.nn.Module())})["TrainBatches"]
    yield {"B": B, "T": T, "to": str(b.device), "batches/s": n_batches / r["median_s"],
           "tok/s": n_batches * B * T / r["median_s"], "peak MiB": r["peak_mib"]}


def generation_paths(b: Bench, ours: GPT, hf, prompt: torch.Tensor) -> dict:
    """name -> (run(k) -> tokens (B, T0 + k), greedy, exactly k new tokens; the model it runs)."""
    greedy_cfg = SamplingConfig("greedy")
    paths = {"ours": (lambda k: generate(ours, prompt, k, sampling=greedy_cfg).tokens, ours)}
    if hf is not None:
        mask = torch.ones_like(prompt)
        paths["hf"] = (lambda k: hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=k,
                                             min_new_tokens=k, pad_token_id=0), hf)
    if b.cfg.compile_decode:  # compiles (and records the CUDA graph) during the warm-up runs
        paths["ours compiled"] = (lambda k: generate(ours, prompt, k, sampling=greedy_cfg, compile=True).tokens, ours)
    return paths


def section_generate(b: Bench) -> Iterator[dict]:
    cfg, n, T0 = b.cfg, b.cfg.new_tokens, b.cfg.prompt_len
    cast = b.amp_dtype != torch.float32  # generation runs on weights stored in the dtype, not under autocast
    ours = (copy.deepcopy(b.model).to(b.amp_dtype) if cast else b.model).eval()
    hf = (copy.deepcopy(b.hf).to(b.amp_dtype) if cast else b.hf).eval() if b.hf is not None else None
    for B in cfg.gen_batch_sizes:
        prompt = b.tokens(B, T0)  # (B, T0)
        paths = generation_paths(b, ours, hf, prompt)
        tokens: dict[str, torch.Tensor] = {}

        def runs(path: str, k: int):
            def make():
                def run():
                    with torch.inference_mode():
                        tokens[path] = paths[path][0](k)  # (B, T0 + k)
                return run
            return make, paths[path][1]

        full = b.measure({p: runs(p, n) for p in paths})  # prefill + n - 1 decode steps
        same = {p: (tokens[p] == tokens["ours"]).float().mean().item() for p in paths if p in tokens and "ours" in tokens}
        first = b.measure({p: runs(p, 1) for p in paths})  # time to the first token: prefill and per-call setup
        rows, by_path = [], {}  # this batch size's rows, yielded once the ratios between them are in
        for p in paths:
            if "median_s" not in full[p] or "median_s" not in first[p]:
                rows.append({"B": B, "path": p, "first token ms": "out of memory"})
                continue
            decode_s = full[p]["median_s"] - first[p]["median_s"]
            by_path[p] = {"B": B, "path": p, "prompt": T0, "new": n,
                          "first token ms": 1e3 * first[p]["median_s"],
                          "decode tok/s": B * (n - 1) / decode_s if n > 1 and decode_s > 0 else None,
                          "decode ms/step": 1e3 * decode_s / (n - 1) if n > 1 else None,
                          "end-to-end tok/s": B * n / full[p]["median_s"], "peak MiB": full[p]["peak_mib"],
                          "same tokens as ours": same.get(p) if p != "ours" else None,
                          "_runs_ms": {"1 token": runs_ms(first)[p], f"{n} tokens": runs_ms(full)[p]}}
            rows.append(by_path[p])
        if "ours" in by_path and "hf" in by_path:
            mine, theirs = by_path["ours"], by_path["hf"]
            for column, figure in (("ours/hf decode", "decode tok/s"), ("ours/hf end-to-end", "end-to-end tok/s"),
                                   ("ours/hf mem", "peak MiB")):
                mine[column] = ratio(mine[figure], theirs[figure])
        yield from rows


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BenchConfig, argv)
    if "RANK" in os.environ and (cfg.sections != ["train"] or cfg.compare_hf):
        raise SystemExit("error: under torchrun, bench.py measures only the training step: pass --what train, "
                         "without --compare_hf; run the other sections as a single process")
    with torchrun_processes(cfg.device, cfg.dtype) as p:
        return run_sections(cfg, p)


def run_sections(cfg: BenchConfig, p: Processes) -> dict:
    """Every section --what names, in order, on this process's device; rank 0 prints and writes the report."""
    device, amp_dtype, rank, world = p.device, p.amp_dtype, p.rank, p.world
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg = resolve(cfg, device)
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
    bench = Bench(cfg, device, amp_dtype, model, hf, world)
    report = {"config": config_to_dict(cfg), "machine": machine_info(device, amp_dtype, world), "notes": [],
              "flops_convention": "MFU: 6N + 12LCT FLOPs per trained token, N = matrix-multiply weights (benchmarks/flops.py)",
              "sections": {}}
    if hf_note:
        report["notes"].append(hf_note)
    run = {"train": section_train, "generate": section_generate, "eval": section_eval, "data": section_data,
           "forward": section_forward}
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
