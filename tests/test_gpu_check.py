"""benchmarks/gpu_check.sh in its dry mode: every step of both GPU parts, the same commands at a tiny shape
on this CPU, so that a lent GPU machine (no network, minutes counted) never meets a step that cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.shared
def test_dry_run_passes_every_step_and_writes_every_row(wikitext_raw, encoding, tmp_path):
    # The defaults the README's GPU commands rely on: the raw text found in shared/, else ../shared (the fixture's)
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDS", "RAW_DIR")} | {"PYTHON": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "dry", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "every step passed" in (tmp_path / "gpu_check.log").read_text()
    sections = {}
    for name in ("train", "generate", "train-sweep", "generate-sweep", "hf"):
        for section, rows in json.loads((tmp_path / f"bench-{name}.json").read_text())["sections"].items():
            assert rows, f"bench-{name}.json: {section} has no rows"
            sections.setdefault(section, []).extend(rows)
    assert set(sections) == {"train", "generate", "eval", "data", "forward"}
    assert any("hf tok/s" in row for row in sections["train"])  # the comparison with transformers ran
    for run_name in ("run", "run_ddp", "run_fsdp"):  # train.py's log came back; its checkpoints were removed
        assert (tmp_path / f"{run_name}.log.jsonl").read_text().strip() and not (tmp_path / run_name).exists()
    assert not (tmp_path / "shards").exists()
    assert len(list(tmp_path.iterdir())) == 10  # 4 files from part 1 and 6 from part 2: within 8 per part


def test_usage_errors_exit_2(tmp_path):
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", "3", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "1|2|dry OUT_DIR" in run.stderr
