"""What bench.py prints and stores: the machine it ran on, its tables (markdown), JSON, BENCHMARKS.md.

A figure means little without the machine, the software and the command that produced it, so every
report carries them: device name, CPU count and threads, torch/CUDA/transformers versions, git
commit (and whether the tree had uncommitted changes), the load average (others' work slows a
shared machine), the command line and the UTC date.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from gpt2.checkpoint import versions
from gpt2.device import device_name


def _git_dirty() -> bool | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device, dtype: torch.dtype, world_size: int = 1) -> dict:
    try:
        transformers = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        transformers = None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
        "device_name": device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": world_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        **versions(),
        "git_uncommitted_changes": _git_dirty(),
        "cuda": torch.version.cuda,
        "transformers": transformers,
        "platform": platform.platform(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }


RATIOS = ("eval/forward", "scaling eff.", "same tokens as ours")  # printed with two decimals, like every ours/hf


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, float):
        return str(value)
    if "MFU" in key:
        return f"{100 * value:.1f}%"
    if key.startswith("ours/hf") or key in RATIOS:
        return f"{value:.2f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row if not key.startswith("_")))  # first-seen order
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    m = report["machine"]
    commit = (m.get("git_commit") or "unknown")[:10] + (" + uncommitted changes" if m.get("git_uncommitted_changes") else "")
    load = ", ".join(f"{x:.1f}" for x in m["load_average"]) if m.get("load_average") else "n/a"
    out = [f"### {m['date_utc']} UTC · {m['device_name']}" + (f" × {m['world_size']}" if m["world_size"] > 1 else ""),
           "", f"`{m['command']}`", "",
           f"{m['device']} ({m['dtype']}), {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), load average "
           f"{load} at the start; torch {m['torch']}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else "")
           + (f", transformers {m['transformers']}" if m.get("transformers") else "") + f"; git {commit}.",
           f"{report['flops_convention']}. Medians of {report['config']['repeats']} timed runs.", ""]
    out += [f"- {note}" for note in report.get("notes", [])]
    for name, rows in report["sections"].items():
        out += [f"**{name}**", "", markdown_table(rows), ""]
    return "\n".join(out)


def print_and_save(report: dict, json_out: str | None, append_md: str | None) -> None:
    text = markdown(report)
    print("\n" + text)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_out}")
    if append_md:
        with open(append_md, "a") as f:
            f.write("\n" + text + "\n")
        print(f"appended the tables to {append_md}")
