"""What train.py leaves in a run directory, read back for evaluate.py and report.py; and how figures print.

    run.json    the resolved config, derived settings (device, accumulation, ...), versions
    log.jsonl   one JSON record per optimizer step ("train") and per evaluation ("eval")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of a run's log.jsonl; a line cut short by a killed run is skipped."""
    path = Path(run_dir) / "log.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            records.append(entry)
    return records


def run_record(source: str | Path) -> dict | None:
    """What train.py recorded about the run that produced `source` (a run directory, or a checkpoint
    inside one): its starting weights and data, and from log.jsonl the last step, the tokens trained
    on (tokens_seen) and the training wall time (elapsed_s, evaluations included). None otherwise."""
    path = Path(source)
    run_dir = path if path.is_dir() else path.parent if path.suffix == ".pt" else None
    if run_dir is None or not ((run_dir / "run.json").is_file() or (run_dir / "log.jsonl").is_file()):
        return None
    record: dict = {"run_dir": str(run_dir), "steps": None, "train_tokens": None, "train_seconds": None}
    if (run_dir / "run.json").is_file():
        try:
            run = json.loads((run_dir / "run.json").read_text())
            record.update(init=run["config"].get("init"), data_dir=run["config"].get("data_dir"),
                          device_name=run.get("derived", {}).get("device_name"), n_params=run.get("n_params"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            print(f"warning: {run_dir / 'run.json'} is not readable as train.py's run record ({e})", file=sys.stderr)
    for entry in read_log(run_dir):
        if entry.get("kind") == "train":
            record.update(steps=entry.get("step"), train_tokens=entry.get("tokens_seen"),
                          train_seconds=entry.get("elapsed_s"))
    return record


def count(n: float | None) -> str:
    """1234567 -> '1.23M'; None -> '—'."""
    if n is None:
        return "—"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def duration(s: float | None) -> str:
    """Seconds as '42 s', '3.5 min' or '2.10 h'; None -> '—'."""
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def fixed(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"
