"""What benchmarks/bench.py prints and stores: the machine it ran on, its tables (markdown), JSON, BENCHMARKS.md.

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

from gpt2.atomic import atomic_open
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


class ReportWriter:
    """benchmarks/bench.py's report on disk as it grows. Each row is added to report["sections"] and then json_out
    and append_md are rewritten whole through gpt2.atomic (a temporary file renamed over the old one), so
    a run killed at its time limit leaves every row measured until then, and never a half-written file.
    append_md keeps what the file held when the run started, with this run's section after it (a process
    appending to the same file meanwhile would be overwritten: run one benchmark at a time per file)."""

    def __init__(self, report: dict, json_out: str | None, append_md: str | None):
        self.report, self.json_out, self.append_md = report, json_out, append_md
        md = Path(append_md) if append_md else None
        self.md_before = md.read_text() if md is not None and md.is_file() else ""
        self.save()  # the machine and the command, before the first figure

    def add(self, section: str, row: dict) -> None:
        self.report["sections"].setdefault(section, []).append(row)
        self.save()

    def save(self) -> None:
        if self.json_out:
            with atomic_open(self.json_out) as f:
                f.write((json.dumps(self.report, indent=2) + "\n").encode())
        if self.append_md:
            with atomic_open(self.append_md) as f:
                f.write((self.md_before + "\n" + markdown(self.report) + "\n").encode())

    def finish(self) -> None:
        """Print the tables and say where they are."""
        print("\n" + markdown(self.report))
        if self.json_out:
            print(f"wrote {self.json_out}")
        if self.append_md:
            print(f"appended the tables to {self.append_md}")
