"""What benchmarks/bench.py measures, one section at a time (its docstring says what each row holds): every
`section_*` takes the `Bench` (the resolved config, device and models) and yields its table's rows.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from benchmarks.flops import flops_per_token, mfu, peak_tflops
from benchmarks.harness import measure
from data.loader import SplitTokens, TrainBatches, micro_batch_streams
from data.shards import shard_name, write_shard
from gpt2 import training
from gpt2.device import autocast
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.model import GPT
from gpt2.sampler import SamplingConfig, generate
from gpt2.train_config import TrainConfig


@dataclass
class Bench:
    """What every section needs: the resolved config, the device, the autocast dtype, the models."""

    cfg: BenchConfig  # benchmarks.bench's, resolved: every device-dependent default filled
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
        for compiled in [False] * cfg.eager + [True] * cfg.compile:
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
    paths = {"ours": (lambda k: generate(ours, prompt, k, sampling=greedy_cfg).tokens, ours)} if b.cfg.eager else {}
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
