"""How benchmarks/bench.py measures: wall time around a synchronised device, peak memory, and transformers' twin.

`measure` sets each candidate up and warms it alone (measuring its peak memory there: the optimizer
state, caches and activations it allocates), then times the candidates in alternation, so that load
from other processes on a shared machine hits all of them alike, and reports the median.

Peak memory = the candidate's weights + the most its setup and warm-up runs added above what was
allocated before: on CUDA from torch.cuda.max_memory_allocated (tensors only); on CPU from the
process's peak resident set size (VmHWM, reset through /proc/self/clear_refs, Linux >= 4.0; freed
heap is first handed back with malloc_trim so that one candidate does not inherit another's pages).
On other systems the CPU figure is left out.

`json_from_subprocess` runs a measurement in a fresh process (memory figures need one each) and reads back
the JSON line it printed last.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from gpt2.model import GPT


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `repeats` runs after one untimed warm-up run (CPU work only:
    nothing to synchronise), and the individual times."""
    fn()  # warm-up: caches, thread pools, lazily loaded files
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, StopIteration):
        return None


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict):
    """Sets out["added"]: the most memory the block held above what was held before it (bytes), or None."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield
        out["added"] = torch.cuda.max_memory_allocated(device) - start
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc only; elsewhere the peak may start lower than it should
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        start = _proc_status_bytes("VmRSS")
    except OSError:
        start = None
    yield
    peak = _proc_status_bytes("VmHWM")
    out["added"] = None if start is None or peak is None else max(0, peak - start)


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # the tied head counted once


def measure(candidates: dict, device: torch.device, *, warmup: int, repeats: int) -> dict:
    """candidates: name -> (make, model). make() sets up (optimizer, caches, compilation wrapper, ...) and
    returns a function that does the measured work once. Returns name -> {"median_s", "runs_s",
    "peak_mib"}, or {"error": "out of memory"} for a candidate that did not fit on the GPU."""
    results, fns = {}, {}
    for name, (make, model) in candidates.items():
        mem: dict = {}
        try:
            with peak_memory(device, mem):
                fn = make()
                for _ in range(warmup):
                    fn()
                sync(device)
        except torch.cuda.OutOfMemoryError:
            fn = None
            gc.collect()
            torch.cuda.empty_cache()
            results[name] = {"error": "out of memory"}
            continue
        fns[name] = fn
        added = mem.get("added")
        results[name] = {"runs_s": [], "peak_mib": None if added is None else (weight_bytes(model) + added) / 2**20}
    for _ in range(repeats):
        for name, fn in fns.items():  # alternate: background load hits every candidate alike
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            results[name]["runs_s"].append(time.perf_counter() - start)
    for name in fns:
        results[name]["median_s"] = statistics.median(results[name]["runs_s"])
    return results


def hf_twin(model: GPT):
    """transformers' GPT2LMHeadModel with our shape, dropout and weights (Conv1D weights transposed back),
    SDPA attention, on our device. Raises ImportError without transformers (a test-only dependency)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    from gpt2.weights import CONV1D

    logging.set_verbosity_error()  # generate() warns about the flags it ignores
    d = model.config.to_hf_dict()
    d["bos_token_id"] = d["eos_token_id"] = min(50256, model.config.vocab_size - 1)  # a test's tiny vocabulary
    hf = GPT2LMHeadModel(GPT2Config(**d, attn_implementation="sdpa"))
    state = {k: v.t() if k.endswith(CONV1D) else v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or not all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing):
        raise RuntimeError(f"transformers' GPT-2 does not match ours: missing {missing}, unexpected {unexpected}")
    return hf.to(model.lm_head.weight.device)


def json_from_subprocess(command: list[str], what: str, **run_kw) -> dict:
    """Run `command` (subprocess.run keywords in run_kw: env, cwd, timeout) and return the last line of
    its stdout that is a JSON object. A failed run raises RuntimeError naming `what`, with stderr's tail."""
    out = subprocess.run(command, capture_output=True, text=True, check=False, **run_kw)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed in its subprocess (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def print_table_and_save(columns: list[tuple[str, int]], rows: list[tuple[str, ...]], results: dict, out_json) -> dict:
    """Print `rows` (formatted strings) under `columns` ((title, width) each: the first column left-aligned,
    the rest right-aligned), then write `results` to `out_json` as JSON. Returns `results`."""
    def line(cells) -> str:
        return " ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, columns)))
    print(line([title for title, _ in columns]))
    for row in rows:
        print(line(row))
    Path(out_json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_json}")
    return results
