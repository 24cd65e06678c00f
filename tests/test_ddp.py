"""Two processes (torchrun, gloo on CPU) train exactly what one process does with the same global batch.

World 2 x 1 micro-batch and world 1 x 2 micro-batches read the same micro-batch slots (g = rank * accum
+ micro: its own data stream and dropout seed), so the losses agree up to the order of the sums."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2.checkpoint import load_checkpoint
from test_train import VOCAB, run_training, records, tiny, tiny_and_quick  # noqa: F401 (an autouse fixture)

REPO = Path(__file__).resolve().parents[1]

# torchrun starts this: train.py's main() with the tests' small vocabulary and one thread per process.
WORKER = f"""
import functools, sys
sys.path.insert(0, {str(REPO)!r})
import torch
import train
import gpt2.trainer
from gpt2.config import GPTConfig
gpt2.trainer.GPTConfig = functools.partial(GPTConfig, vocab_size={VOCAB})
torch.set_num_threads(1)
train.main(sys.argv[1:])
"""


def as_flags(cfg) -> list[str]:
    flags = []
    for name, value in vars(cfg).items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif value is not None:
            flags += [f"--{name}", str(value)]
    return flags


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_two_processes_match_one(tmp_path):
    settings = dict(micro_batch_size=4, total_batch_tokens=2 * 4 * 16, max_steps=4, eval_interval=2, dropout=0.1)
    one = tiny(tmp_path, out_dir=str(tmp_path / "one"), **settings)
    two = tiny(tmp_path, out_dir=str(tmp_path / "two"), **settings)
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(tmp_path / "worker.py"), *as_flags(two)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    run_training(one)  # in this process: world 1, so 2 micro-batches per step

    assert load_checkpoint(tmp_path / "two" / "latest.pt").derived["world_size"] == 2
    assert load_checkpoint(tmp_path / "one" / "latest.pt").derived["grad_accum_steps"] == 2
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("eval", "val_loss")):
        a, b = ([r[key] for r in records(d, kind)] for d in (one.out_dir, two.out_dir))
        assert len(a) == len(b) > 0
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (kind, key, a, b)
    w1, w2 = (load_checkpoint(Path(d) / "latest.pt").model for d in (one.out_dir, two.out_dir))
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=0, atol=1e-5, msg=name)
    assert len(load_checkpoint(tmp_path / "two" / "latest.pt").batches) == 2  # every rank's sampler
