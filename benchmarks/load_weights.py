"""How long loading GPT-2 weights takes, and how much memory it needs: the reference reader
`safetensors.torch.load_file`, our reader `gpt2.safetensors.load_file`, and our whole
`gpt2.weights.load_pretrained` (read, map names, transpose, build the model).

Each measurement runs in a fresh Python process, so that neither time nor peak memory carries over
from the one before; methods take turns, after one untimed warm-up round that puts the file in the
page cache, and the median of the repeats is reported. Both readers memory-map the file and return
before reading it, so each process also reads every byte once (a sum over every tensor) and both
times are shown. Peak memory is the growth of the process's resident-set high-water mark (VmHWM)
over its size once torch is imported: mapped pages that are read count, as they do for the OS.

    python -m benchmarks.load_weights                       # a random gpt2-shaped checkpoint in a temp dir
    python -m benchmarks.load_weights --checkpoint DIR      # any HF directory: config.json + model.safetensors
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2.cli import config_to_dict, parse_config


@dataclass
class BenchConfig:
    """Time and peak memory of loading GPT-2 weights: the reference reader, ours, and load_pretrained."""

    checkpoint: str | None = None  # HF directory (config.json + model.safetensors); none: a random gpt2 in a temp dir
    repeats: int = 5  # fresh processes per method; the median is reported
    json_out: str = "bench_load_weights.json"  # where the results are written

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")


METHODS = {  # name: (import, call returning a dict of tensors or a module)
    "safetensors.torch.load_file": ("from safetensors.torch import load_file", "load_file(DIR / 'model.safetensors')"),
    "gpt2.safetensors.load_file": ("from gpt2.safetensors import load_file", "load_file(DIR / 'model.safetensors')"),
    "gpt2.weights.load_pretrained": ("from gpt2.weights import load_pretrained", "load_pretrained(DIR)"),
}

# The child process: import, then time the load and a read of every byte; print one JSON line.
CHILD = """
import json, sys, time
from pathlib import Path
import torch
{imports}

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024  # kB -> bytes

DIR = Path(sys.argv[1])
base = status("VmRSS:")
t0 = time.perf_counter()
loaded = {call}
t1 = time.perf_counter()
tensors = list(loaded.values()) if isinstance(loaded, dict) else list(loaded.parameters())
checksum = sum(float(t.sum()) for t in tensors)
t2 = time.perf_counter()
print(json.dumps(dict(load_s=t1 - t0, load_and_read_s=t2 - t0, peak_bytes=status("VmHWM:") - base,
                      checksum=checksum, numel=sum(t.numel() for t in tensors))))
"""


def measure(method: str, directory: Path) -> dict:
    imports, call = METHODS[method]
    out = subprocess.run([sys.executable, "-c", CHILD.format(imports=imports, call=call), str(directory)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed in its subprocess:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_random_gpt2(directory: Path) -> Path:
    """A random gpt2-shaped checkpoint, written by transformers exactly as a fine-tuned one would be."""
    from transformers import GPT2Config, GPT2LMHeadModel  # the reference writer, needed only here

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory)
    return directory


def main() -> None:
    cfg = parse_config(BenchConfig)
    print(json.dumps(config_to_dict(cfg)))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(cfg.checkpoint) if cfg.checkpoint else write_random_gpt2(Path(tmp))
        size = (directory / "model.safetensors").stat().st_size
        for method in METHODS:  # warm-up: the page cache, the .pyc files
            measure(method, directory)
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(cfg.repeats):
            for method in METHODS:
                runs[method].append(measure(method, directory))

    sums = {m: rs[0]["checksum"] for m, rs in runs.items()}
    if sums["gpt2.safetensors.load_file"] != sums["safetensors.torch.load_file"]:
        raise RuntimeError(f"the two readers disagree on the file's contents: checksums {sums}")
    results = {}
    for method, rs in runs.items():
        results[method] = {key: statistics.median(r[key] for r in rs) for key in ("load_s", "load_and_read_s", "peak_bytes")}
        results[method]["numel"] = rs[0]["numel"]
    base = results["safetensors.torch.load_file"]
    print(f"\n{size / 2**20:.0f} MiB model.safetensors, median of {cfg.repeats} fresh processes each\n")
    print(f"{'method':<30} {'load s':>8} {'load+read s':>12} {'x ref':>6} {'peak MiB':>9} {'x ref':>6}")
    for method, r in results.items():
        r["time_vs_reference"] = r["load_and_read_s"] / base["load_and_read_s"]
        r["peak_vs_reference"] = r["peak_bytes"] / base["peak_bytes"]
        print(f"{method:<30} {r['load_s']:>8.3f} {r['load_and_read_s']:>12.3f} {r['time_vs_reference']:>6.2f} "
              f"{r['peak_bytes'] / 2**20:>9.0f} {r['peak_vs_reference']:>6.2f}")
    report = dict(config=config_to_dict(cfg), file_bytes=size, results=results, runs=runs,
                  machine=dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                               cpus=os.cpu_count()))
    Path(cfg.json_out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {cfg.json_out}")


if __name__ == "__main__":
    main()
