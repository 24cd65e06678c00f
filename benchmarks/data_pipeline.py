"""Data pipeline speed: preparing shards, and drawing batches.

    python -m benchmarks.data_pipeline [--raw_dir ../shared/wikitext-2-raw] [--repeats 3]

Measures, each as the median of --repeats runs (after one untimed warm-up):
1. prepare --offline from the local valid + test splits (what CI and these machines can do);
2. prepare of a full-size stand-in for Wikitext-2: a synthetic wiki.train.raw (10.9 MB, wiki.valid.raw
   and wiki.test.raw repeated and concatenated) beside the real valid and test splits, so all three
   splits, 13.3 MB of text, go through the same code path as the real dataset (target: < 15 s);
3. TrainBatches throughput at B=8, T=1024 on CPU (target: > 1M tokens/s), and the resident memory
   before and after --memory_batches batches (it must stay flat);
4. EvalBatches throughput over the test split.
Prepare times are in-process (the interpreter and torch import, ~2 s, are reported once apart).
Prints a table and writes --out_json.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch

from data.loader import SplitTokens, TrainBatches
from gpt2.metrics.windows import EvalBatches
from data.prepare import PrepareConfig, run
from gpt2.cli import config_to_dict, parse_config
from benchmarks.harness import median_time, print_table_and_save

FULL_TRAIN_BYTES = 10_918_892  # wiki.train.raw of Wikitext-2 raw


@dataclass
class BenchConfig:
    """Time shard preparation and batch sampling."""

    raw_dir: str = "../shared/wikitext-2-raw"  # folder holding wiki.valid.raw and wiki.test.raw
    repeats: int = 3  # timed runs per measurement; the median is reported
    batch_size: int = 8  # B for the sampler benchmark
    seq_len: int = 1024  # T for the sampler benchmark
    batches: int = 2000  # batches per timed sampler run
    memory_batches: int = 100_000  # batches drawn between the two resident-memory readings
    threads: int = 0  # tokenizer threads; 0: one per CPU core
    out_json: str = "bench_data_pipeline.json"  # where the results go (JSON)


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def quiet(fn):
    def call():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn()

    return call


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv)
    raw = Path(cfg.raw_dir)
    valid, test = (raw / "wiki.valid.raw").read_bytes(), (raw / "wiki.test.raw").read_bytes()
    results = {"config": config_to_dict(cfg), "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "torch": torch.__version__, "tiktoken": tiktoken.__version__}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        measure_prepare(cfg, Path(tmp), valid, test, results, rows)
        measure_loaders(cfg, Path(tmp), results, rows)
    columns = [("measurement", 42), ("size", 16), ("time (median)", 16), ("rate", 14)]
    return print_table_and_save(columns, rows, results, cfg.out_json)


def measure_prepare(cfg: BenchConfig, tmp: Path, valid: bytes, test: bytes, results: dict, rows: list) -> None:
    """data.prepare offline (valid + test), at the full size of the three splits, and once from the shell."""
    raw = Path(cfg.raw_dir)
    offline = PrepareConfig(raw_dir=str(raw), offline=True, out_dir=str(tmp / "offline"), threads=cfg.threads)
    t, times = median_time(quiet(lambda: run(offline, [])), cfg.repeats)
    mb = (len(valid) + len(test)) / 1e6
    results["prepare_offline"] = {"seconds": t, "runs": times, "text_mb": mb}
    rows.append(("prepare --offline (valid+test)", f"{mb:.1f} MB", f"{t:.2f} s", f"{mb / t:.1f} MB/s"))

    # Full-size stand-in: a synthetic train split made of the real valid and test text repeated.
    full = tmp / "full-raw"
    full.mkdir()
    synthetic = ((valid + test) * (FULL_TRAIN_BYTES // (len(valid) + len(test)) + 1))[:FULL_TRAIN_BYTES]
    synthetic = synthetic[: synthetic.rindex(b"\n") + 1]  # end at a line, as the real file does
    (full / "wiki.train.raw").write_bytes(synthetic)
    (full / "wiki.valid.raw").write_bytes(valid)
    (full / "wiki.test.raw").write_bytes(test)
    three = PrepareConfig(raw_dir=str(full), out_dir=str(tmp / "full"), allow_checksum_mismatch=True, threads=cfg.threads)
    t, times = median_time(quiet(lambda: run(three, [])), cfg.repeats)
    mb = (len(synthetic) + len(valid) + len(test)) / 1e6
    results["prepare_full_size"] = {"seconds": t, "runs": times, "text_mb": mb, "target_seconds": 15}
    rows.append(("prepare, 3 splits, full size (synthetic)", f"{mb:.1f} MB", f"{t:.2f} s", f"{mb / t:.1f} MB/s"))

    # The same, end to end from the shell (interpreter start and imports included), once.
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "data.prepare", "--raw_dir", str(full), "--out_dir", str(tmp / "cli"),
                    "--allow_checksum_mismatch", "--threads", str(cfg.threads)], check=True, capture_output=True)
    t = time.perf_counter() - t0
    results["prepare_full_size_cli_seconds"] = t
    rows.append(("  same, `python -m data.prepare`, 1 run", f"{mb:.1f} MB", f"{t:.2f} s", f"{mb / t:.1f} MB/s"))


def measure_loaders(cfg: BenchConfig, tmp: Path, results: dict, rows: list) -> None:
    """TrainBatches' speed and memory, and EvalBatches', over the offline shards measure_prepare wrote."""
    train = SplitTokens(tmp / "offline", "train")
    B, T = cfg.batch_size, cfg.seq_len
    sampler = TrainBatches(train, B, T, seed=0)
    t, times = median_time(lambda: [sampler.next() for _ in range(cfg.batches)], cfg.repeats)
    tok_s = cfg.batches * B * T / t
    results["train_batches"] = {"tokens_per_s": tok_s, "batches_per_s": cfg.batches / t, "runs": times,
                                "B": B, "T": T, "target_tokens_per_s": 1e6}
    rows.append((f"TrainBatches B={B} T={T}, CPU", f"{cfg.batches} batches", f"{t:.3f} s", f"{tok_s / 1e6:.1f} M tok/s"))

    before = rss_mb()
    for _ in range(cfg.memory_batches):
        sampler.next()
    after = rss_mb()
    results["train_batches_memory"] = {"batches": cfg.memory_batches, "rss_mb_before": before, "rss_mb_after": after}
    rows.append(("  resident memory over the batches", f"{cfg.memory_batches} batches", f"{before:.0f} -> {after:.0f} MB", ""))

    test_split = SplitTokens(tmp / "offline", "test")
    t, times = median_time(lambda: sum(1 for _ in EvalBatches(test_split, T, batch_size=B)), cfg.repeats)
    tok_s = (len(test_split) - 1) / t
    results["eval_batches"] = {"tokens_per_s": tok_s, "runs": times, "n_scored": len(test_split) - 1}
    rows.append((f"EvalBatches B={B} T={T}, test split", f"{len(test_split):,} tokens", f"{t:.3f} s", f"{tok_s / 1e6:.1f} M tok/s"))


if __name__ == "__main__":
    main()
