"""train.py on a tiny scratch model and tiny shards: it learns, accumulation equals a big batch,
a killed run resumes to the same losses bit for bit, failures stop with a message, --help is complete."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data.loader
from data.loader import micro_batch_streams, training_data
from gpt2 import trainer
from gpt2 import training
from gpt2.training import lm_loss
from data.loader import TrainBatches
from data.shards import write_shard
from gpt2.checkpoint import load_checkpoint
from gpt2.cli import build_parser, field_comments, parse_config
from gpt2.config import GPTConfig
from gpt2.train_config import TrainConfig
from gpt2.training import TrainingStopped


def run_training(cfg: TrainConfig) -> dict:
    """What train.py runs: the run fed the shards its config names."""
    return trainer.train(cfg, training_data(cfg))

REPO = Path(__file__).resolve().parents[1]
VOCAB = 256  # the toy corpus uses ids < 200; a small vocabulary keeps every step cheap


@pytest.fixture(autouse=True)
def tiny_and_quick(monkeypatch):
    """Scratch models get a 256-token vocabulary (the head and embedding dominate a tiny model's cost),
    and torch one thread: ops this small only lose time synchronising threads on a shared machine."""
    monkeypatch.setattr(trainer, "GPTConfig", functools.partial(GPTConfig, vocab_size=VOCAB))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_shards(data_dir: Path, seed: int = 0) -> Path:
    """A learnable toy corpus: one random 48-token "sentence" over 200 ids, repeated with light noise."""
    rng = np.random.default_rng(seed)
    sentence = rng.integers(0, 200, size=48)
    stream = np.tile(sentence, 60)
    noise = rng.random(stream.size) < 0.05
    stream[noise] = rng.integers(0, 200, size=int(noise.sum()))
    data_dir.mkdir(parents=True, exist_ok=True)
    write_shard(data_dir / "train_000000.bin", stream[:2400])
    write_shard(data_dir / "val_000000.bin", stream[2400:])
    return data_dir


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        make_shards(data_dir)
    settings = dict(init="scratch", n_layer=2, n_head=2, n_embd=32, dropout=0.0, data_dir=str(data_dir),
                    out_dir=str(tmp_path / "run"), seq_len=16, micro_batch_size=4, total_batch_tokens=64, lr=3e-3,
                    min_lr=3e-4, warmup_steps=2, max_steps=6, eval_interval=3, device="cpu", dtype="fp32",
                    compile=False, seed=0)
    return TrainConfig(**{**settings, **overrides})


def records(out_dir, kind: str) -> list[dict]:
    lines = (Path(out_dir) / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def deterministic(record: dict) -> dict:
    """A log record without its timings."""
    return {k: v for k, v in record.items() if k not in ("tok_per_s", "elapsed_s")}


def test_tiny_model_overfits_tiny_data(tmp_path):
    cfg = tiny(tmp_path, max_steps=40, eval_interval=20, lr=1e-2, min_lr=1e-3)
    summary = run_training(cfg)
    losses = [r["loss"] for r in records(cfg.out_dir, "train")]
    assert len(losses) == 40
    assert abs(losses[0] - np.log(VOCAB)) < 0.5  # a fresh model is close to uniform
    assert max(losses[-5:]) < 0.5 * losses[0]
    val = records(cfg.out_dir, "eval")
    assert [r["step"] for r in val] == [0, 20, 40]
    assert val[-1]["val_loss"] < 0.5 * val[0]["val_loss"]
    assert summary["best_val_loss"] == min(r["val_loss"] for r in val[1:])
    assert load_checkpoint(Path(cfg.out_dir) / "best.pt").val_loss == summary["best_val_loss"]
    run = json.loads((Path(cfg.out_dir) / "run.json").read_text())
    assert run["config"]["lr"] == 1e-2 and run["derived"]["grad_accum_steps"] == 1


class FixedBatches:
    """Stands in for TrainBatches: the same 8 rows every step, split over slots. Slot g of W gets rows
    [g * B, (g + 1) * B), so 4 slots of 2 rows and 1 slot of 8 rows see the same global batch."""

    def __init__(self, tokens, batch_size, seq_len, *, seed=0, rank=0, world_size=1, device="cpu", ignore_first_tokens=0,
                 eots=None):
        assert batch_size * world_size == 8
        starts = np.arange(8) * 37
        windows = torch.from_numpy(np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        self.rows = windows[rank * batch_size:(rank + 1) * batch_size]  # (B, T + 1)

    def next(self):
        return self.rows[:, :-1], self.rows[:, 1:]

    def state_dict(self):
        return {}


def test_gradient_accumulation_equals_one_big_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(data.loader, "TrainBatches", FixedBatches)
    runs = {}
    for micro in (2, 8):  # 4 micro-batches of 2 rows, then 1 of 8: total_batch_tokens = 8 x 16 both times
        cfg = tiny(tmp_path, micro_batch_size=micro, total_batch_tokens=128, max_steps=1, eval_interval=1,
                   weight_decay=0.1, out_dir=str(tmp_path / f"micro{micro}"))
        run_training(cfg)
        runs[micro] = load_checkpoint(Path(cfg.out_dir) / "latest.pt")
    assert runs[2].derived["grad_accum_steps"] == 4 and runs[8].derived["grad_accum_steps"] == 1
    before = trainer.build_model(tiny(tmp_path), torch.device("cpu")).state_dict()
    for name, p in runs[8].model.items():
        assert not torch.equal(p, before[name]) or name.endswith("bias") or "ln" in name  # the step moved it
        torch.testing.assert_close(runs[2].model[name], p, rtol=0, atol=1e-6, msg=name)
    loss2, loss8 = (records(tmp_path / f"micro{m}", "train")[0]["loss"] for m in (2, 8))
    assert abs(loss2 - loss8) < 1e-6


def test_resume_after_a_crash_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    """With dropout and accumulation: crash at step 8 (latest.pt is from step 6), resume, finish at 10."""
    settings = dict(max_steps=10, eval_interval=4, checkpoint_interval=3, dropout=0.1, micro_batch_size=2)
    whole = tiny(tmp_path, out_dir=str(tmp_path / "whole"), **settings)
    run_training(whole)

    cut = tiny(tmp_path, out_dir=str(tmp_path / "cut"), **settings)
    real_next, calls = TrainBatches.next, [0]

    def crashes_in_step_8(self):
        calls[0] += 1
        if calls[0] == 7 * 2 + 1:  # 2 micro-batches per step: the first of step 8
            raise RuntimeError("simulated crash")
        return real_next(self)

    monkeypatch.setattr(TrainBatches, "next", crashes_in_step_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cut)
    monkeypatch.setattr(TrainBatches, "next", real_next)
    assert load_checkpoint(Path(cut.out_dir) / "latest.pt").step == 6
    assert records(cut.out_dir, "train")[-1]["step"] == 7
    run_training(tiny(tmp_path, out_dir=str(tmp_path / "cut"), resume=True, **settings))

    for kind in ("train", "eval"):
        assert [deterministic(r) for r in records(cut.out_dir, kind)] == [deterministic(r) for r in records(whole.out_dir, kind)]
    assert len(records(cut.out_dir, "train")) == 10
    a, b = (load_checkpoint(Path(d) / "latest.pt").model for d in (whole.out_dir, cut.out_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_names_the_mismatch_and_refuses_to_overwrite(tmp_path):
    run_training(tiny(tmp_path, max_steps=2, eval_interval=2))
    with pytest.raises(TrainingStopped, match=r"seq_len=16 in the checkpoint, 8 now.*micro_batch_size=4 in the checkpoint, 2 now"):
        run_training(tiny(tmp_path, max_steps=4, resume=True, seq_len=8, micro_batch_size=2, total_batch_tokens=16))
    with pytest.raises(TrainingStopped, match="already holds a run.*--resume"):
        run_training(tiny(tmp_path, max_steps=4))
    summary = run_training(tiny(tmp_path, max_steps=4, eval_interval=2, resume=True))  # a longer schedule is fine
    assert summary["steps"] == 4


def test_nan_loss_stops_without_saving_after_it(tmp_path):
    cfg = tiny(tmp_path, lr=1e30, min_lr=0.0, warmup_steps=0, grad_clip=0.0, max_steps=20, eval_interval=1)
    with pytest.raises(TrainingStopped, match=r"loss is (nan|inf) at step (\d+).*last good checkpoint is .*latest\.pt") as e:
        run_training(cfg)
    failed_at = int(re.search(r"at step (\d+)", str(e.value))[1])
    assert failed_at > 1
    assert load_checkpoint(Path(cfg.out_dir) / "latest.pt").step == failed_at - 1
    assert all(np.isfinite(r["loss"]) for r in records(cfg.out_dir, "train"))


def test_sigint_finishes_the_step_and_saves(tmp_path, monkeypatch):
    def interrupted_at_step_3(model, x, y, **kw):
        interrupted_at_step_3.calls += 1
        if interrupted_at_step_3.calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return lm_loss(model, x, y, **kw)

    interrupted_at_step_3.calls = 0
    monkeypatch.setattr(training, "lm_loss", interrupted_at_step_3)
    # what the process had before the run: Python's default handler, or SIG_IGN under `nohup ... &`
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    summary = run_training(tiny(tmp_path, max_steps=10, eval_interval=100))
    assert summary["steps"] == 3 and summary["stopped_early"]
    assert load_checkpoint(tmp_path / "run" / "latest.pt").step == 3
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


def test_bf16_autocast_runs_on_cpu_with_the_same_loss_curve(tmp_path):
    """What --dtype auto picks on a CPU with bf16 units (gpt2/device.py): a short run's val loss within 1% of fp32's."""
    short_run = dict(max_steps=30, eval_interval=15, lr=1e-2, min_lr=1e-3)
    fp32 = tiny(tmp_path, **short_run, out_dir=str(tmp_path / "fp32"))
    bf16 = tiny(tmp_path, **short_run, out_dir=str(tmp_path / "bf16"), dtype="bf16")
    run_training(fp32)
    run_training(bf16)
    assert json.loads((tmp_path / "bf16" / "run.json").read_text())["derived"]["dtype"] == "bfloat16"
    l32, l16 = ([r["loss"] for r in records(c.out_dir, "train")] for c in (fp32, bf16))
    assert all(np.isfinite(l16))
    assert l16 != l32  # the matmuls really ran in bfloat16
    assert max(abs(a - b) for a, b in zip(l16, l32)) < 0.1
    v32, v16 = ([r["val_loss"] for r in records(c.out_dir, "eval")] for c in (fp32, bf16))
    assert v32[-1] < 0.5 * v32[0]  # it learned: the comparison is of a moving curve, not of log(V) twice
    assert abs(v16[-1] - v32[-1]) <= 0.01 * v32[-1]


def test_user_mistakes_get_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data.prepare"):
        run_training(tiny(tmp_path, data_dir=str(tmp_path / "missing")))
    with pytest.raises(TrainingStopped, match="not a multiple of micro_batch_size x seq_len x world_size = 4 x 16 x 1 = 64"):
        run_training(tiny(tmp_path, total_batch_tokens=100))
    with pytest.raises(Exception, match="neither a published GPT-2"):
        run_training(tiny(tmp_path, init=str(tmp_path / "no-such-weights")))


def test_help_lists_every_field_with_its_comment():
    comments = field_comments(TrainConfig)
    help_text = " ".join(build_parser(TrainConfig).format_help().split())  # argparse wraps lines
    for name in TrainConfig.__dataclass_fields__:
        assert comments.get(name), f"TrainConfig.{name} has no comment"
        assert f"--{name}" in help_text and " ".join(comments[name].split()) in help_text, name
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "--total_batch_tokens" in out.stdout


def test_command_line_errors_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, ["--dtype", "fp8"])
    assert e.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--init", "scratch", "--n_embd", "130", "--n_head", "4"])
    assert "--n_embd 130 is not a multiple of --n_head 4" in capsys.readouterr().err
    cfg = parse_config(TrainConfig, ["--no-compile", "--max_steps", "none", "--micro-batch-size", "2"])
    assert cfg.compile is False and cfg.max_steps is None and cfg.micro_batch_size == 2


# ---------------------------------------------------------------------------------- ready for a GPU


def test_compiled_step_is_the_same_graph_at_2_and_16_loss_chunks(tmp_path, monkeypatch):
    """torch.compile sees the trunk only; the chunked loss runs outside it. Inside, its Python loop would be
    unrolled once per 256-row chunk: the graph (and its compile time) would grow with the micro-batch."""
    from torch._dynamo.testing import CompileCounter

    real_compile, graphs = torch.compile, {}
    for B in (2, 16):  # B x T = 512 and 4,096 rows of the loss: 2 and 16 chunks of the CPU's 256 rows
        counter = CompileCounter()
        monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=counter))
        torch._dynamo.reset()
        cfg = tiny(tmp_path, seq_len=256, micro_batch_size=B, total_batch_tokens=B * 256, compile=True)
        model = trainer.build_model(cfg, torch.device("cpu"))
        batches = micro_batch_streams(cfg.data_dir, B, 256, seed=0, rank=0, accum=1, world=1)
        parts = training.build_step(cfg, model, batches, torch.device("cpu"), torch.float32, 0)
        training.train_step(parts, 1, 1e-3)
        graphs[B] = (counter.frame_count, counter.op_count)
    torch._dynamo.reset()
    assert graphs[2][0] == 1 and graphs[2] == graphs[16], graphs


def test_compiled_step_has_fixed_shapes_at_a_second_batch_size(tmp_path, monkeypatch):
    """A second micro-batch shape in one process (bench.py's batch sizes) compiles a graph of fixed shapes
    again, not one of symbolic shapes (torch.compile's default for a shape it has seen change): a graph that
    replays as a CUDA graph, and a compile no longer than the first."""
    real_compile, inputs = torch.compile, []

    def backend(gm, example_inputs):  # dynamo's graph run eagerly, its inputs noted
        inputs.append(example_inputs)
        return gm.forward

    def compile_noting_the_trunk(fn, **kw):  # the model's compile; the loss chunks' own (gpt2/losses.py) as they are
        return real_compile(fn, backend=backend, **kw) if isinstance(fn, torch.nn.Module) else real_compile(fn, **kw)

    monkeypatch.setattr(torch, "compile", compile_noting_the_trunk)
    torch._dynamo.reset()
    for B in (2, 4):
        cfg = tiny(tmp_path, seq_len=16, micro_batch_size=B, total_batch_tokens=B * 16, compile=True)
        model = trainer.build_model(cfg, torch.device("cpu"))
        batches = micro_batch_streams(cfg.data_dir, B, 16, seed=0, rank=0, accum=1, world=1)
        training.train_step(training.build_step(cfg, model, batches, torch.device("cpu"), torch.float32, 0), 1, 1e-3)
    torch._dynamo.reset()
    assert len(inputs) == 2  # one graph per batch size
    symbolic = [x for graph in inputs for x in graph if isinstance(x, torch.SymInt)
                or isinstance(x, torch.Tensor) and not all(isinstance(s, int) for s in x.shape)]
    assert not symbolic, symbolic


def test_step_time_is_read_after_the_step_has_finished(tmp_path, monkeypatch):
    """On a GPU train_step returns once its kernels are queued. The logged tokens/s must time the work: the
    clock that closes a step is read after the step's results were waited for (tolist / item), never between."""
    events = []

    def recorded(name, fn):
        def call(*args, **kwargs):
            events.append(name)
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(trainer, "train_step", recorded("step", trainer.train_step))
    monkeypatch.setattr(torch.Tensor, "tolist", recorded("wait", torch.Tensor.tolist))
    monkeypatch.setattr(torch.Tensor, "item", recorded("wait", torch.Tensor.item))
    monkeypatch.setattr(trainer.time, "perf_counter", recorded("clock", trainer.time.perf_counter))
    run_training(tiny(tmp_path, max_steps=3, eval_interval=100))
    steps = [i for i, e in enumerate(events) if e == "step"]
    assert len(steps) == 3
    for i in steps:
        next_clock = events.index("clock", i)
        assert "wait" in events[i:next_clock], events[i:next_clock + 1]


def test_compiled_ddp_wraps_then_compiles(tmp_path):
    """PyTorch's order for compiled DDP: DDP(model) first, then torch.compile, so that the compiler splits the
    graph at DDP's buckets and the all-reduce overlaps the backward (compile(model) inside DDP makes the
    backward one opaque node). One process with gloo stands in for torchrun."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.FileStore(str(tmp_path / "store"), 1))
    try:
        cfg = tiny(tmp_path, compile=True)
        model = trainer.build_model(cfg, torch.device("cpu"))
        batches = micro_batch_streams(cfg.data_dir, 4, 16, seed=0, rank=0, accum=1, world=1)
        parts = training.build_step(cfg, model, batches, torch.device("cpu"), torch.float32, 0)
        assert isinstance(parts.model, torch._dynamo.eval_frame.OptimizedModule)
        assert isinstance(parts.model._orig_mod, DDP) and parts.model._orig_mod.module is model
    finally:
        dist.destroy_process_group()
