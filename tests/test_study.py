"""study.py end to end at toy scale: every step writes its result, the report has every arm with an
interval over seeds, and a second run skips everything it finds finished."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import study
import study_report
from data.loader import SplitTokens
from data.shards import write_shard
from gpt2.checkpoint import load_model


def toy_data(root: Path) -> Path:
    """Shards of a repetitive toy corpus over 300 ids (a teacher learns it in a few steps)."""
    rng = np.random.default_rng(0)
    sentence = rng.integers(0, 300, size=40)
    stream = np.tile(sentence, 150)
    noise = rng.random(stream.size) < 0.1
    stream[noise] = rng.integers(0, 300, size=int(noise.sum()))
    data = root / "data"
    data.mkdir(parents=True)
    write_shard(data / "train_000000.bin", stream[:4000])
    write_shard(data / "val_000000.bin", stream[4000:5000])
    write_shard(data / "test_000000.bin", stream[5000:6000])
    return data


def toy_config(root: Path) -> study.StudyConfig:
    return study.StudyConfig(
        data_dir=str(toy_data(root)), work_dir=str(root / "work"), results_dir=str(root / "results"), seeds=[0, 1],
        alphas=[1.0, -1.0], set_tokens=600, prompt_tokens=8, gen_tokens=24, eval_tokens=400, teacher_layers=2,
        teacher_heads=2, teacher_width=16, teacher_steps=16, teacher_lr=1e-2, arm_layers=1, arm_heads=2, arm_width=16, arm_epochs=0.5,
        seq_len=32, batch_tokens=128, gen_passages=2, gen_prompt_tokens=8, gen_new_tokens=4, device="cpu")


@pytest.mark.slow
def test_study_runs_reports_and_resumes(tmp_path, encoding, one_thread):
    cfg = toy_config(tmp_path)
    study.Study(cfg).run()
    results = Path(cfg.results_dir)
    expected = {"ngram", "teacher", "teacher-as-trained", "base-s0", "base-s1", "alpha=1-s0", "alpha=1-s1", "alpha=-1-s0", "alpha=-1-s1",
                "subset-s0", "subset-s1"}
    assert expected <= {p.stem for p in results.glob("*.json")}
    assert {p.stem for p in (results / "sets").glob("*.json")} == {"alpha=1-s0", "alpha=1-s1", "alpha=-1-s0",
                                                                    "alpha=-1-s1", "subset-s0", "subset-s1"}
    assert len(list(results.glob("kd-*.json"))) == 6  # 2 seeds x (subset, best set, the layer ablation)
    check_teacher(cfg)
    inverted = json.loads((results / "sets" / "alpha=-1-s0.json").read_text())
    ordinary = json.loads((results / "sets" / "alpha=1-s0.json").read_text())
    assert inverted["teacher_nll"] > ordinary["teacher_nll"]  # the inverted set is less likely under the teacher

    text = study_report.report(results)
    main_table = text.split("### ")[0]
    rows = {line.split("|")[1].strip(): line for line in main_table.splitlines() if line.startswith("| ")}
    for arm in ("alpha=1", "alpha=-1", "subset", "kd-distilgpt2-subset", "teacher", "teacher-as-trained", "bigram (counts of the train split)"):
        assert arm in rows, arm
    assert "[" in rows["alpha=1"] and "| 2 |" in rows["alpha=1"]  # a 95% interval over two seeds
    summary = json.loads((results / "study.json").read_text())
    values = summary["arms"]["alpha=-1"]["loss"]["values"]
    assert values == [json.loads((results / f"alpha=-1-s{s}.json").read_text())["perplexity"]["loss"] for s in (0, 1)]

    before = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    study.Study(cfg).run()  # everything is there: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == before


@pytest.mark.slow
def test_kd_ablation_can_be_left_out(tmp_path, encoding, one_thread):
    cfg = toy_config(tmp_path)
    cfg.seeds, cfg.alphas, cfg.kd_ablation = [0], [1.0], False
    study.Study(cfg).run()
    assert {p.stem for p in Path(cfg.results_dir).glob("kd-*.json")} == {"kd-distilgpt2-subset-s0",
                                                                        "kd-distilgpt2-alpha=1-s0"}


def check_teacher(cfg: study.StudyConfig) -> None:
    """The teacher the study uses is the trained one with the unseen types' rows shared, nothing else changed."""
    trained = load_model(Path(cfg.work_dir) / "runs" / "teacher" / "best.pt").state_dict()
    used = load_model(Path(cfg.work_dir) / "runs" / "teacher" / "teacher.pt").state_dict()
    counts = np.bincount(SplitTokens(cfg.data_dir, "train")[:].astype(np.int64), minlength=50257)
    rows = used["transformer.wte.weight"]
    assert torch.equal(rows[counts == 0], rows[counts == 1].mean(0).expand(int((counts == 0).sum()), -1))
    assert torch.equal(rows[counts > 0], trained["transformer.wte.weight"][counts > 0])
    assert all(torch.equal(used[k], trained[k]) for k in used if "wte" not in k and "lm_head" not in k)


def test_command_line_lists_every_setting(capsys):
    from gpt2.cli import build_parser

    text = build_parser(study.StudyConfig).format_help()
    for flag in ("--alphas", "--seeds", "--teacher_init", "--arm_init", "--set_tokens", "--eval_tokens", "--kd"):
        assert flag in text
    with pytest.raises(SystemExit):
        study.main(["--alphas"])  # a list needs values
