"""Knowledge distillation: the chunked loss (gpt2/losses.py) against torch's own KL divergence and the
analytic gradient; make_student against the teacher it is cut from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from data.loader import TrainBatches
from gpt2.config import GPTConfig
from gpt2.kd import every_other, make_student, student_layers
from gpt2.losses import linear_kd_loss
from gpt2.model import GPT

V = 50
EYE = torch.eye(V)  # an output weight that makes the hidden states the logits themselves


def kd_loss(student, teacher, targets, **kw):
    """The chunked loss with the identity as both heads: logits = hidden, so the reference formulas apply as they are."""
    return linear_kd_loss(student, EYE, teacher, EYE, targets, chunk_size=5, **kw)


def batch(seed: int = 0, masked: int = 3):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 7, V, generator=g) * 3
    teacher = torch.randn(2, 7, V, generator=g) * 3
    targets = torch.randint(0, V, (2, 7), generator=g)
    targets.view(-1)[torch.randperm(14, generator=g)[:masked]] = -100  # context-only positions
    return student, teacher, targets


@pytest.mark.parametrize("temperature, kd_weight", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (2.0, 0.0), (2.0, 1.0)])
def test_kd_loss_matches_torch_kl_div(temperature, kd_weight):
    student, teacher, targets = batch()
    loss, parts = kd_loss(student, teacher, targets, temperature=temperature, kd_weight=kd_weight)
    valid = targets.view(-1) != -100
    s, t = student.view(-1, V)[valid], teacher.view(-1, V)[valid]
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")  # sum over the vocabulary, mean over the valid positions
    ce = F.cross_entropy(s, targets.view(-1)[valid])
    torch.testing.assert_close(parts["kl"], kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["ce"], ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, kd_weight * temperature**2 * kl + (1 - kd_weight) * ce, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature, kd_weight", [(1.0, 0.5), (2.0, 0.3), (3.0, 1.0)])
def test_kd_gradient_is_the_analytic_one(temperature, kd_weight):
    """d loss / d student logits = [kd_weight * T * (q_T - p_T) + (1 - kd_weight) * (softmax(s) - onehot(y))] / n_valid
    at valid positions (q_T, p_T: student and teacher softened), and 0 at positions with target -100."""
    student, teacher, targets = batch(seed=1)
    student.requires_grad_(True)
    loss, _ = kd_loss(student, teacher, targets, temperature=temperature, kd_weight=kd_weight)
    loss.backward()
    valid = (targets != -100).unsqueeze(-1).float()  # (B, T, 1)
    q, p = F.softmax(student.detach() / temperature, -1), F.softmax(teacher / temperature, -1)
    onehot = F.one_hot(targets.clamp(min=0), V).float()
    expected = (kd_weight * temperature * (q - p) + (1 - kd_weight) * (F.softmax(student.detach(), -1) - onehot)) * valid
    torch.testing.assert_close(student.grad, expected / valid.sum(), rtol=1e-4, atol=1e-7)


def test_kd_loss_of_a_perfect_student_is_its_cross_entropy():
    _, teacher, targets = batch()
    loss, parts = kd_loss(teacher.clone(), teacher, targets, temperature=2.0, kd_weight=0.5)
    assert parts["kl"].abs() < 1e-6
    torch.testing.assert_close(loss, 0.5 * parts["ce"], rtol=1e-5, atol=1e-6)


def test_kd_loss_rejects_bad_settings():
    student, teacher, targets = batch()
    with pytest.raises(ValueError, match="kd_temperature"):
        kd_loss(student, teacher, targets, temperature=0.0, kd_weight=0.5)
    with pytest.raises(ValueError, match="kd_weight"):
        kd_loss(student, teacher, targets, temperature=1.0, kd_weight=1.5)
    with pytest.raises(ValueError, match="vocabulary"):
        linear_kd_loss(student, EYE, teacher[..., :-1], EYE[:-1, :-1], targets, temperature=1.0, kd_weight=0.5)


@pytest.fixture
def teacher() -> GPT:
    return GPT(GPTConfig(vocab_size=97, n_positions=32, n_layer=4, n_head=2, n_embd=16), seed=3).eval()


def test_a_student_with_every_layer_is_the_teacher(teacher):
    student = make_student(teacher, [0, 1, 2, 3]).eval()
    idx = torch.randint(0, 97, (2, 20))
    assert torch.equal(student(idx), teacher(idx))


def test_distilgpt2_layers_by_default():
    assert student_layers(12) == [0, 2, 4, 7, 9, 11]  # DistilGPT2's choice, from transformers' extract.py
    assert student_layers(4) == [0, 3] and student_layers(6) == [0, 2, 5]
    assert every_other(12) == [0, 2, 4, 6, 8, 10] and every_other(5) == [0, 2, 4]


def test_student_from_teacher_layers(teacher):
    student = make_student(teacher, every_other(4))
    assert student.config.n_layer == 2 and student.config.n_embd == teacher.config.n_embd
    t, s = teacher.state_dict(), student.state_dict()
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"):
        assert torch.equal(s[name], t[name])
    for j, i in enumerate([0, 2]):
        for rest in ("attn.c_attn.weight", "mlp.c_proj.bias", "ln_1.weight"):
            assert torch.equal(s[f"transformer.h.{j}.{rest}"], t[f"transformer.h.{i}.{rest}"])
    assert student.lm_head.weight is student.transformer.wte.weight  # still tied
    assert not student.training and student.num_params() < teacher.num_params()
    wte = teacher.transformer.wte.weight.clone()
    with torch.no_grad():  # a new module: training the student leaves the teacher alone
        student.transformer.wte.weight.add_(1.0)
        student.transformer.h[0].attn.c_attn.weight.add_(1.0)
    assert torch.equal(teacher.transformer.wte.weight, wte)
    assert not torch.equal(teacher.transformer.h[0].attn.c_attn.weight, student.transformer.h[0].attn.c_attn.weight)
    student(torch.randint(0, 97, (1, 8)))[0].sum().backward()  # it trains: every parameter gets a gradient
    assert all(p.grad is not None for p in student.parameters())


def test_student_layers_must_exist(teacher):
    for layers in ([], [4], [-1]):
        with pytest.raises(ValueError, match="init_layers"):
            make_student(teacher, layers)


# ------------------------------------------------------------------------------------------------
# train.py with --teacher / --init_layers / --val_data_dir, on a tiny model and a toy corpus.

TRAIN_VOCAB = 256


@pytest.fixture
def tiny_train(monkeypatch):
    """The run's scratch models get a 256-token vocabulary, and torch one thread (as in test_train.py); yields
    what runs train.py's training (`.train(cfg)`)."""
    import functools
    import types

    from gpt2 import trainer
    from test_train import run_training

    monkeypatch.setattr(trainer, "GPTConfig", functools.partial(GPTConfig, vocab_size=TRAIN_VOCAB))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield types.SimpleNamespace(train=run_training)
    torch.set_num_threads(threads)


@pytest.fixture
def toy(tmp_path, tiny_train):
    """A learnable corpus (one 48-token sentence repeated with noise) and a teacher trained on it."""
    import numpy as np

    from data.shards import write_shard

    rng = np.random.default_rng(0)
    stream = np.tile(rng.integers(0, 200, size=48), 60)
    noise = rng.random(stream.size) < 0.05
    stream[noise] = rng.integers(0, 200, size=int(noise.sum()))
    for name, part in (("real", None), ("train-only", None)):
        (tmp_path / name).mkdir()
    write_shard(tmp_path / "real" / "train_000000.bin", stream[:2400])
    write_shard(tmp_path / "real" / "val_000000.bin", stream[2400:])
    write_shard(tmp_path / "train-only" / "train_000000.bin", stream[:2400])  # like a distilled set: no val split
    tiny_train.train(settings(tmp_path, out_dir=str(tmp_path / "teacher"), max_steps=30, eval_interval=30, lr=1e-2))
    return tmp_path


def settings(tmp_path, **overrides):
    from gpt2.train_config import TrainConfig

    base = dict(init="scratch", n_layer=2, n_head=2, n_embd=32, dropout=0.0, data_dir=str(tmp_path / "real"),
                out_dir=str(tmp_path / "run"), seq_len=16, micro_batch_size=4, total_batch_tokens=64, lr=3e-3,
                min_lr=3e-4, warmup_steps=2, max_steps=6, eval_interval=3, device="cpu", dtype="fp32", compile=False,
                seed=0)
    return TrainConfig(**{**base, **overrides})


def log(out_dir, kind: str) -> list[dict]:
    import json
    from pathlib import Path

    records = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tok_per_s", "elapsed_s")} for r in records if r["kind"] == kind]


def test_kd_with_alpha_zero_is_plain_training_bit_for_bit(toy, tiny_train):
    """The teacher's forward pass must not disturb the run: same losses, same weights (dropout on)."""
    from gpt2.checkpoint import load_checkpoint

    plain = settings(toy, out_dir=str(toy / "plain"), dropout=0.1)
    kd = settings(toy, out_dir=str(toy / "kd0"), dropout=0.1, teacher=str(toy / "teacher"), kd_weight=0.0)
    tiny_train.train(plain)
    tiny_train.train(kd)
    for kind in ("train", "eval"):
        assert log(plain.out_dir, kind) == log(kd.out_dir, kind)
    a, b = (load_checkpoint(toy / d / "latest.pt").model for d in ("plain", "kd0"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kd_training_learns_and_the_teacher_stays_frozen(toy, tiny_train):
    from gpt2.checkpoint import load_checkpoint

    before = load_checkpoint(toy / "teacher" / "best.pt").model
    cfg = settings(toy, out_dir=str(toy / "kd"), teacher=str(toy / "teacher"), kd_weight=0.7, kd_temperature=2.0,
                   max_steps=20, eval_interval=10, lr=1e-2)
    tiny_train.train(cfg)
    losses, val = [r["loss"] for r in log(cfg.out_dir, "train")], [r["val_loss"] for r in log(cfg.out_dir, "eval")]
    assert max(losses[-3:]) < 0.6 * losses[0] and val[-1] < val[0] - 1.0  # 5.6 nats (uniform) at step 0
    after = load_checkpoint(toy / "teacher" / "best.pt").model
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_student_from_teacher_layers_resumes_exactly(toy, tiny_train, monkeypatch):
    """--init teacher --init_layers 1 --teacher teacher on a set without val (val from --val_data_dir):
    crash at step 5, resume from latest.pt (step 4), and finish exactly as the uninterrupted run."""
    from gpt2.checkpoint import load_checkpoint

    student = dict(init=str(toy / "teacher"), init_layers=[1], teacher=str(toy / "teacher"),
                   data_dir=str(toy / "train-only"), val_data_dir=str(toy / "real"), max_steps=6, eval_interval=3,
                   checkpoint_interval=2, dropout=0.1)
    whole = settings(toy, out_dir=str(toy / "whole"), **student)
    tiny_train.train(whole)
    state = load_checkpoint(toy / "whole" / "latest.pt")
    assert state.model_config["n_layer"] == 1 and state.derived["val_tokens"] == 480

    real_next, calls = TrainBatches.next, [0]

    def crashes_in_step_5(self):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("simulated crash")
        return real_next(self)

    monkeypatch.setattr(TrainBatches, "next", crashes_in_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_train.train(settings(toy, out_dir=str(toy / "cut"), **student))
    monkeypatch.setattr(TrainBatches, "next", real_next)
    tiny_train.train(settings(toy, out_dir=str(toy / "cut"), resume=True, **student))
    for kind in ("train", "eval"):
        assert log(toy / "cut", kind) == log(toy / "whole", kind)
    a, b = (load_checkpoint(toy / d / "latest.pt").model for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_config_rejects_bad_kd_settings(tmp_path, tiny_train):
    with pytest.raises(ValueError, match="init_layers"):
        settings(tmp_path, init_layers=[0])  # init scratch has no layers to pick
    with pytest.raises(ValueError, match="kd_weight"):
        settings(tmp_path, teacher="x", kd_weight=2.0)
