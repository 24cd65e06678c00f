"""bf16 against fp32 on this machine, ours against transformers in the same precision, side by side.

    python -m benchmarks.cpu_amp                           # both tables -> bench_cpu_amp.json
    python -m benchmarks.cpu_amp --append_md BENCHMARKS.md # also append them under a dated machine heading
    python -m benchmarks.cpu_amp --what profile            # the loss head's share of a training step (torch.profiler)

train     train.py's own step (gpt2.training.build_step + train_step: forward under autocast, the chunked
          loss, backward, clipping, fused AdamW) at two shapes: `gpt2` (12 x 768, B=4, T=256) and the
          study's (4 layers, 4 heads, n_embd 192, B=16, T=256); fp32 (no autocast) and bf16 autocast,
          ours and transformers' GPT2LMHeadModel (its own loss, under the same torch.autocast), the four
          candidates taking turns, so that load from other processes on a shared machine hits all alike.
generate  gpt2.sampler.generate, greedy, KV cache, on weights stored in fp32 and in bf16 (as distill.py
          and evaluate.py run it), against transformers' generate on the same weights, taking turns.
profile   torch.profiler over the gpt2-shape step in fp32 and bf16: the share of the step's CPU time spent
          in the head's loss (gpt2.losses.linear_cross_entropy, wrapped in a record_function here), and the
          operators that take the most time.
Every figure is the median of --repeats timed runs after --warmup untimed ones. Weights are random.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.harness import hf_twin, measure
from benchmarks.report import ReportWriter, machine_info
from data.loader import micro_batch_streams
from data.shards import shard_name, write_shard
from gpt2 import training
from gpt2.cli import config_to_dict, parse_config
from gpt2.config import GPTConfig
from gpt2.model import GPT
from gpt2.sampler import SamplingConfig, generate
from gpt2.train_config import TrainConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SHAPES = {"gpt2": (dict(), 4, 256), "study": (dict(n_layer=4, n_head=4, n_embd=192), 16, 256)}  # (shape, B, T)


@dataclass
class AmpBenchConfig:
    """bf16 against fp32 on the CPU: training steps, generation, and the loss head's share of a step."""

    what: str = "train,generate"  # sections, comma-separated: train, generate, profile
    shapes: str = "gpt2,study"  # training shapes, comma-separated: gpt2 (B=4, T=256), study (4x192, B=16, T=256)
    compare_hf: bool = True  # time transformers' GPT2LMHeadModel in the same precision too
    gen_batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 8])  # rows generated together
    prompt_len: int = 16  # prompt tokens per row (random ids)
    new_tokens: int = 32  # tokens generated per row
    dropout: float = 0.1  # the training step's dropout (train.py's default)
    warmup: int = 1  # untimed runs of each candidate before the timed ones
    repeats: int = 5  # timed runs of each candidate, taking turns; the median is reported
    json_out: str = "bench_cpu_amp.json"  # every figure, the machine and this config, as JSON
    append_md: str | None = None  # also append the tables to this markdown file


def hf_lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """transformers takes its loss from labels, shifted inside (T - 1 targets per row)."""
    return model(input_ids=x, labels=x, use_cache=False).loss


def step_maker(model: torch.nn.Module, dtype: torch.dtype, B: int, T: int, data_dir: str, hf: bool):
    """make() for `measure`: train.py's step (build_step + train_step) on a fresh copy of `model`."""

    def make():
        m = copy.deepcopy(model).train()
        cfg = TrainConfig(data_dir=data_dir, seq_len=T, micro_batch_size=B, total_batch_tokens=B * T, compile=False)
        batches = micro_batch_streams(data_dir, B, T, seed=0, rank=0, accum=1, world=1, device=torch.device("cpu"))
        parts = training.build_step(cfg, m, batches, torch.device("cpu"), dtype, rank=0)
        if hf:
            parts = dataclasses.replace(parts, loss_fn=hf_lm_loss)
        steps = iter(range(1, 10**9))
        return lambda: training.train_step(parts, next(steps), cfg.lr)[0].item()

    return make, model


def random_shards(tmp: str, vocab_size: int) -> str:
    write_shard(os.path.join(tmp, shard_name("train", 0)), np.random.default_rng(0).integers(0, vocab_size, 500_000))
    return tmp


def section_train(cfg: AmpBenchConfig):
    for shape in [s.strip() for s in cfg.shapes.split(",") if s.strip()]:
        overrides, B, T = SHAPES[shape]
        model = GPT(GPTConfig.from_name("gpt2", dropout=cfg.dropout, **overrides), seed=0)
        impls = {"ours": model, **({"hf": hf_twin(model)} if cfg.compare_hf else {})}
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = random_shards(tmp, model.config.vocab_size)
            res = measure({f"{name} {d}": step_maker(m, DTYPES[d], B, T, data_dir, hf=name == "hf")
                           for name, m in impls.items() for d in DTYPES}, torch.device("cpu"),
                          warmup=cfg.warmup, repeats=cfg.repeats)
        yield side_by_side({"shape": shape, "B": B, "T": T}, res, lambda r: B * T / r["median_s"], "tok/s")


def side_by_side(row: dict, res: dict, figure, unit: str) -> dict:
    """row + each candidate's figure, bf16/fp32 for each implementation, ours/hf in each precision."""
    values = {name: figure(r) for name, r in res.items()}
    row = row | {f"{name} {unit}": v for name, v in values.items()}
    for impl in ("ours", "hf"):
        if f"{impl} fp32" in values:
            row[f"{impl} bf16/fp32"] = values[f"{impl} bf16"] / values[f"{impl} fp32"]
    for d in DTYPES:
        if f"hf {d}" in values:
            row[f"ours/hf {d}"] = values[f"ours {d}"] / values[f"hf {d}"]
    return row | {"_runs_ms": {name: [round(t * 1e3, 1) for t in r["runs_s"]] for name, r in res.items()}}


def section_generate(cfg: AmpBenchConfig):
    model = GPT(GPTConfig.from_name("gpt2", dropout=0.0), seed=0).eval()
    hf = hf_twin(model).eval() if cfg.compare_hf else None
    greedy, n = SamplingConfig("greedy"), cfg.new_tokens
    for B in cfg.gen_batch_sizes:
        prompt = torch.randint(0, model.config.vocab_size, (B, cfg.prompt_len), generator=torch.Generator().manual_seed(B))
        candidates = {}
        for d, dtype in DTYPES.items():  # weights stored in the precision, as distill.py and evaluate.py generate
            ours = copy.deepcopy(model).to(dtype)
            candidates[f"ours {d}"] = (lambda m=ours: torch.inference_mode()(
                lambda: generate(m, prompt, n, sampling=greedy).tokens), ours)
            if hf is not None:
                theirs = copy.deepcopy(hf).to(dtype)
                candidates[f"hf {d}"] = (lambda m=theirs: torch.inference_mode()(lambda: m.generate(
                    prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=n,
                    min_new_tokens=n, pad_token_id=0)), theirs)
        res = measure(candidates, torch.device("cpu"), warmup=cfg.warmup, repeats=cfg.repeats)
        yield side_by_side({"B": B, "prompt": cfg.prompt_len, "new": n}, res, lambda r: B * n / r["median_s"],
                           "tok/s")


def section_profile(cfg: AmpBenchConfig):
    """The loss head's share of the gpt2-shape step's CPU time, fp32 and bf16, one profiled step after two
    untimed ones; the five operators that take the most time, for the bf16 step's cast question."""
    overrides, B, T = SHAPES["gpt2"]
    model = GPT(GPTConfig.from_name("gpt2", dropout=cfg.dropout, **overrides), seed=0)
    loss = training.linear_cross_entropy

    def loss_head(*args, **kw):
        with record_function("loss head"):
            return loss(*args, **kw)

    training.linear_cross_entropy = loss_head  # what training.lm_loss calls: the step itself is unchanged
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = random_shards(tmp, model.config.vocab_size)
            for d, dtype in DTYPES.items():
                step = step_maker(model, dtype, B, T, data_dir, hf=False)[0]()
                step(), step()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    with record_function("step"):
                        step()
                events = {e.key: e for e in prof.key_averages()}
                total = events["step"].cpu_time_total
                ops = sorted((e for e in prof.key_averages() if e.key not in ("step", "loss head")),
                             key=lambda e: -e.self_cpu_time_total)[:5]
                yield {"shape": "gpt2", "B": B, "T": T, "dtype": d, "step ms": total / 1e3,
                       "loss head ms": events["loss head"].cpu_time_total / 1e3,
                       "loss head share": events["loss head"].cpu_time_total / total,
                       "top self-time ops": ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in ops)}
    finally:
        training.linear_cross_entropy = loss


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(AmpBenchConfig, argv)
    sections = {"train": section_train, "generate": section_generate, "profile": section_profile}
    chosen = [s.strip() for s in cfg.what.split(",") if s.strip()]
    if not chosen or set(chosen) - set(sections):
        raise SystemExit(f"error: --what {cfg.what!r}: choose from {', '.join(sections)} (comma-separated)")
    unknown = {s.strip() for s in cfg.shapes.split(",")} - set(SHAPES)
    if unknown:
        raise SystemExit(f"error: --shapes {cfg.shapes!r}: choose from {', '.join(SHAPES)} (comma-separated)")
    report = {"config": config_to_dict(cfg), "machine": machine_info(torch.device("cpu"), torch.bfloat16) | cpu_flags(),
              "flops_convention": f"CPU bf16 units: {cpu_flags()['bf16_flags']}", "notes": [], "sections": {}}
    writer = ReportWriter(report, cfg.json_out, cfg.append_md)
    for name in chosen:
        for row in sections[name](cfg):
            writer.add(name, row)
            print(f"{name}:", {k: v for k, v in row.items() if not k.startswith("_")}, flush=True)
    writer.finish()
    return report


def cpu_flags() -> dict:
    """The CPU's bf16 flags as /proc/cpuinfo lists them (lscpu's), and what torch finds."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = []
    present = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16") if f in flags]
    return {"bf16_flags": ", ".join(present) or "none (no amx_bf16, no avx512_bf16)"}


if __name__ == "__main__":
    main()
