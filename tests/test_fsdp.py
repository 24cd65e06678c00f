"""FSDP2 and activation checkpointing (gpt2/distributed.py): two processes (torchrun, gloo on CPU) with
--fsdp train what one process does with the same global batch, with and without activation checkpointing
and with distillation; a run killed mid-step resumes to the same losses bit for bit; its checkpoints are
the files a single process writes, and export to a folder transformers loads with the same logits.

Two torchrun launches serve every test here (starting processes is most of the cost): the first runs
--fsdp, --fsdp --activation_checkpointing, --fsdp --teacher, --fsdp --dtype bf16, and a run that is killed
(SIGKILL) when it draws its first micro-batch of step 3; the second resumes that run. The references run
in this process: world 1 with 2 micro-batches reads the same micro-batch slots as world 2 with 1
(tests/test_ddp.py)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2 import trainer
from gpt2.checkpoint import load_checkpoint, load_model
from gpt2.checkpoint import main as checkpoint_main
from gpt2.config import GPTConfig
from gpt2.losses import linear_cross_entropy
from gpt2.model import GPT
from test_ddp import as_flags
from test_train import VOCAB, run_training, deterministic, records, tiny, tiny_and_quick  # noqa: F401 (an autouse fixture)

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(micro_batch_size=4, total_batch_tokens=2 * 4 * 16, max_steps=4, eval_interval=2, dropout=0.1)
KILLED_AT_BATCH = 3  # each process draws one micro-batch per step: the first of step 3 (latest.pt is step 2's)

# torchrun starts this: train.py's main() for each run of a list, with the tests' small vocabulary and one
# thread per process, in one process group (set up once: a group destroyed and set up again at once can
# rendezvous with the old one's addresses). A run with "kill_at_batch" SIGKILLs its process when it draws
# that micro-batch.
WORKER = f"""
import functools, json, os, signal, sys
sys.path.insert(0, {str(REPO)!r})
import torch
import train
import gpt2.trainer
from gpt2.config import GPTConfig
gpt2.trainer.GPTConfig = functools.partial(GPTConfig, vocab_size={VOCAB})
torch.set_num_threads(1)
torch.distributed.init_process_group("gloo")
from data.loader import TrainBatches
draw = TrainBatches.next
for run in json.loads(open(sys.argv[1]).read()):
    calls = [0]
    def next_or_die(self, kill_at=run.get("kill_at_batch")):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return draw(self)
    TrainBatches.next = next_or_die
    train.main(run["argv"])
torch.distributed.destroy_process_group()
"""

gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                          reason="this torch build has no gloo backend")


def torchrun(tmp: Path, name: str, runs: list[dict]) -> subprocess.CompletedProcess:
    (tmp / "worker.py").write_text(WORKER)
    (tmp / f"{name}.json").write_text(json.dumps(runs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp / "worker.py"), str(tmp / f"{name}.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """name -> run directory: one / one_ac / one_kd / one_bf16 in this process; fsdp / fsdp_ac / fsdp_kd /
    fsdp_bf16 / resumed in two."""
    tmp = tmp_path_factory.mktemp("fsdp")
    cfg = {name: tiny(tmp, out_dir=str(tmp / name), **SETTINGS, **extra) for name, extra in [
        ("one", {}), ("one_ac", dict(activation_checkpointing=True)), ("one_kd", dict(teacher=str(tmp / "one"))),
        ("fsdp", dict(fsdp=True)), ("fsdp_ac", dict(fsdp=True, activation_checkpointing=True)),
        ("fsdp_kd", dict(fsdp=True, teacher=str(tmp / "one"))), ("killed", dict(fsdp=True)),
        ("one_bf16", dict(dtype="bf16")), ("fsdp_bf16", dict(fsdp=True, dtype="bf16"))]}
    with pytest.MonkeyPatch.context() as mp:  # what the autouse fixture does, for this module-wide fixture
        mp.setattr(trainer, "GPTConfig", functools.partial(GPTConfig, vocab_size=VOCAB))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for name in ("one", "one_ac", "one_kd", "one_bf16"):  # one is the distillation runs' teacher
                run_training(cfg[name])
        finally:
            torch.set_num_threads(threads)
    first = torchrun(tmp, "first", [{"argv": as_flags(cfg[n])} for n in ("fsdp", "fsdp_ac", "fsdp_kd", "fsdp_bf16")]
                     + [{"argv": as_flags(cfg["killed"]), "kill_at_batch": KILLED_AT_BATCH}])
    assert first.returncode != 0 and "SIGKILL" in first.stderr, first.stderr[-3000:]  # the last run was killed
    assert load_checkpoint(tmp / "killed" / "latest.pt").step == 2 and records(tmp / "killed", "train")[-1]["step"] == 2
    second = torchrun(tmp, "second", [{"argv": as_flags(cfg["killed"]) + ["--resume"]}])
    assert second.returncode == 0, second.stderr[-3000:]
    return {name: Path(c.out_dir) for name, c in cfg.items()}


def assert_same_run(a: Path, b: Path, atol: float, weights_atol: float | None = None) -> None:
    """Per-step losses, gradient norms and validation losses within atol, the final weights within
    weights_atol (atol unless given)."""
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("eval", "val_loss")):
        x, y = ([r[key] for r in records(d, kind)] for d in (a, b))
        assert len(x) == len(y) > 0
        assert max(abs(u - v) for u, v in zip(x, y)) <= atol, (kind, key, x, y)
    w1, w2 = (load_checkpoint(d / "latest.pt").model for d in (a, b))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=0, atol=weights_atol or atol, msg=name)


@gloo
def test_fsdp_trains_what_one_process_trains(runs):
    assert len(records(runs["fsdp"], "train")) == SETTINGS["max_steps"]
    assert_same_run(runs["one"], runs["fsdp"], atol=1e-5)
    state = load_checkpoint(runs["fsdp"] / "latest.pt")
    assert state.derived["world_size"] == 2 and state.config["fsdp"] is True


@gloo
def test_activation_checkpointing_changes_nothing(runs):
    assert_same_run(runs["one"], runs["fsdp_ac"], atol=1e-5)
    # In one process the recomputation repeats the same operations on the same inputs: bit for bit.
    assert [deterministic(r) for r in records(runs["one_ac"], "train")] == \
        [deterministic(r) for r in records(runs["one"], "train")]


@gloo
def test_distillation_under_fsdp_trains_what_one_process_trains(runs):
    assert_same_run(runs["one_kd"], runs["fsdp_kd"], atol=1e-5)
    assert records(runs["one_kd"], "train")[-1]["loss"] != records(runs["one"], "train")[-1]["loss"]  # KD took part


@gloo
def test_fsdp_in_bf16_trains_what_one_process_trains(runs):
    """Under bf16 autocast as well (gpt2/distributed.py's shard: the weights rounded to bf16 as autocast
    rounds them, a float32 residual stream). In one process the two are the same bit for bit
    (tests/test_fsdp_bf16.py). Here only the sum of the two micro-batches' gradients is taken another way
    (reduce-scatter, not .grad accumulation): the first step agrees to float32 rounding, and AdamW, which
    divides by the root of the gradients' squares, carries those last bits of its near-zero gradients
    into whole differences of its steps. The tolerances (measured: losses and gradient norms 6e-5,
    weights 7.5e-4) are 1e-6 for the first step, 2e-4 for the run and lr (3e-3, an AdamW step at most)
    for the weights; FSDP's usual all-bf16 policy, its residual stream in bf16, misses every one
    (7e-5 and 1.2e-3 at the first step, 1.2e-3 over the run, 7.8e-3 for the weights)."""
    one, fsdp = (records(runs[n], "train")[0] for n in ("one_bf16", "fsdp_bf16"))
    assert abs(one["loss"] - fsdp["loss"]) <= 1e-6 and abs(one["grad_norm"] - fsdp["grad_norm"]) <= 1e-6
    assert_same_run(runs["one_bf16"], runs["fsdp_bf16"], atol=2e-4, weights_atol=3e-3)
    assert records(runs["one"], "train")[0]["loss"] != one["loss"]  # bf16 took part
    fp32, bf16 = (records(runs[n], "train")[0]["loss"] for n in ("one", "one_bf16"))
    assert fp32 != bf16  # bf16 took part


@gloo
def test_killed_fsdp_run_resumes_to_the_same_losses_bit_for_bit(runs):
    for kind in ("train", "eval"):
        assert [deterministic(r) for r in records(runs["killed"], kind)] == \
            [deterministic(r) for r in records(runs["fsdp"], kind)]
    a, b = (load_checkpoint(runs[n] / "latest.pt") for n in ("fsdp", "killed"))
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    for i, moments in a.optimizer["state"].items():
        assert all(torch.equal(v, b.optimizer["state"][i][k]) for k, v in moments.items())


@gloo
def test_sharded_checkpoints_are_single_process_files(runs, tmp_path):
    """latest.pt of an FSDP run has the layout of one process's: whole tensors, optimizer state numbered by
    parameter, the tie kept; its best.pt exports to a folder transformers loads with our logits."""
    one, fsdp = (load_checkpoint(runs[n] / "latest.pt") for n in ("one", "fsdp"))
    assert one.model.keys() == fsdp.model.keys()
    assert fsdp.model["lm_head.weight"] is fsdp.model["transformer.wte.weight"]
    assert fsdp.optimizer["param_groups"] == one.optimizer["param_groups"]
    for i, moments in one.optimizer["state"].items():
        for k, v in moments.items():
            torch.testing.assert_close(fsdp.optimizer["state"][i][k], v, rtol=0, atol=1e-5, msg=f"{i} {k}")
    assert len(fsdp.batches) == 2  # every rank's sampler

    transformers = pytest.importorskip("transformers")
    checkpoint_main(["export", str(runs["fsdp"]), str(tmp_path / "hf")])
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ours, reference = load_model(runs["fsdp"]), load_model(runs["one"])
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        logits = ours(idx)
        assert (hf(idx).logits - logits).abs().max().item() <= 1e-5
        assert (reference(idx) - logits).abs().max().item() <= 1e-4  # the same training, 2 ways


def test_fsdp_without_torchrun_says_how_to_start_it(tmp_path):
    with pytest.raises(ValueError, match="torchrun --standalone --nproc_per_node N train.py --fsdp"):
        run_training(tiny(tmp_path, fsdp=True))


# ------------------------------------------------------------------------------------------------
# benchmarks/memory_plan.py: its counts against the model itself. (`--validate` checks its peaks
# against train.py's step measured on this CPU; memory measurements are too noisy for a test.)


def test_planner_counts_every_parameter():
    from benchmarks.memory_plan import MODELS, parameter_counts

    for name in MODELS:
        config = GPTConfig.from_name(name)
        with torch.device("meta"):
            model = GPT(config)
        N, block, root = parameter_counts(config)
        assert N == model.num_params() and block == sum(p.numel() for p in model.transformer.h[0].parameters())
        assert root == N - config.n_layer * block


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_planned_activations_are_what_autograd_keeps(dtype, checkpointing):
    """Every tensor autograd saves in the forward pass (the parameters aside; views counted once), against
    the planner's activations, autocast's weight copies and the loss's gradient of the head, within 1%."""
    from benchmarks.memory_plan import Precision, activations, parameter_counts
    from gpt2.distributed import checkpoint_blocks

    config = GPTConfig(vocab_size=512, n_positions=64, n_layer=3, n_head=2, n_embd=128, dropout=0.0)
    model = GPT(config).train()
    if checkpointing:
        checkpoint_blocks(model)
    params, saved = {p.untyped_storage().data_ptr() for p in model.parameters()}, {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    B, T = 4, 64
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            hidden = model(torch.randint(0, 512, (B, T)), return_hidden=True)  # the step's loss, as train.py takes it
            linear_cross_entropy(hidden, model.lm_head.weight, torch.randint(0, 512, (B, T)))
    bf16 = dtype == torch.bfloat16
    kept, _ = activations(config, B * T, checkpointing, Precision(compute=2 if bf16 else 4, mask=0))
    _, block, _ = parameter_counts(config)
    casts = 2 * config.n_layer * (block - 4 * config.n_embd) if bf16 and not checkpointing else 0
    planned = kept + casts + 4 * config.vocab_size * config.n_embd
    assert abs(sum(saved.values()) / planned - 1) < 0.01, (sum(saved.values()), planned)


@gloo
def test_fsdp_refuses_fp16_with_a_way_out():
    """fp16 needs a loss scale that agrees across shards; the message says what to run instead."""
    from gpt2.distributed import shard

    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="--dtype fp32, or train with DDP"):
            shard(GPT(GPTConfig(vocab_size=VOCAB, n_positions=16, n_layer=1, n_head=2, n_embd=32)), torch.float16)
    finally:
        torch.distributed.destroy_process_group()
