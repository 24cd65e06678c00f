"""What the scripts leave behind, read back for evaluate.py, report.py and the studies' reports: a train.py
run directory, and any JSON result file (`read_json`).

    run.json    the resolved config, derived settings (device, accumulation, ...), versions
    log.jsonl   one JSON record per optimizer step ("train") and per evaluation ("eval")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_json(path: Path) -> dict | None:
    """A JSON file the scripts wrote, or None with a warning when it cannot be read (a report skips it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"warning: skipping {path}: {e}", file=sys.stderr)
        return None


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

