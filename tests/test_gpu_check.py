"""benchmarks/gpu_check.sh in its dry mode: every step of the five GPU parts, the same commands at a tiny shape
on this CPU, so that a lent GPU machine (no network, minutes counted) never meets a step that cannot run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# The steps of each part in the order they run (the dry run's batch sizes: 1 and 4 for training, 2 and 4 for generation).
PARTS = [["train_eager", "generate_eager", "train_compiled", "generate_compiled"],
         ["train_sweep_eager", "train_compiled_b1", "train_compiled_b4", "compat"],
         ["generate_sweep_eager", "generate_compiled_b2", "generate_compiled_b4", "tests"],
         ["vs_hf_train", "vs_hf_generate"],
         ["data", "train_py", "train_py_ddp", "train_py_fsdp", "train_py_fsdp_compile"]]


@pytest.mark.slow
@pytest.mark.shared
def test_dry_run_passes_every_step_and_writes_every_row(wikitext_raw, encoding, tmp_path):
    # The defaults the README's GPU commands rely on: the raw text found in shared/, else ../shared (the fixture's)
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDS", "RAW_DIR")} | {"PYTHON": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "dry", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "every step passed" in log
    steps = re.findall(r"^=== (\w+) \(\d\d:\d\d:\d\d, limit \d+s = the GPU's (\d+)s x 3\)", log, flags=re.M)
    assert [name for name, _ in steps] == [name for part in PARTS for name in part]  # cheap rows first in each part
    limits = dict((name, int(limit)) for name, limit in steps)
    for part in PARTS:  # on the GPU every step of a part gets its whole limit, whatever the steps before it took
        assert sum(limits[name] for name in part) <= 480, part
    sections = {}
    for path in tmp_path.glob("bench-*.json"):
        for section, rows in json.loads(path.read_text())["sections"].items():
            assert rows, f"{path.name}: {section} has no rows"
            sections.setdefault(section, []).extend(rows)
            if "compiled" in path.name:  # a compile step times the compiled rows alone
                assert all(row.get("compile", True) is True and row.get("path", "ours compiled") == "ours compiled"
                           for row in rows), (path.name, rows)
    assert set(sections) == {"train", "generate", "eval", "data", "forward"}
    hf = json.loads((tmp_path / "bench-hf-train.json").read_text())["sections"]["train"]
    assert any("hf tok/s" in row for row in hf) and {row["compile"] for row in hf} == {False, True}
    for run_name in ("run", "run_ddp", "run_fsdp", "run_fsdp_compile"):  # train.py's log came back, not its checkpoints
        assert (tmp_path / f"{run_name}.log.jsonl").read_text().strip() and not (tmp_path / run_name).exists()
    assert not (tmp_path / "shards").exists()
    assert len(list(tmp_path.glob("bench-*.json"))) == 12
    assert len(list(tmp_path.iterdir())) == 18  # 12 JSON, 4 run logs, the log and the markdown: within 8 per part


def test_usage_errors_exit_2(tmp_path):
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "6", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "1|2|3|4|5|dry OUT_DIR" in run.stderr
