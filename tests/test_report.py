"""report.py on what the real scripts write: two tiny train.py runs (one on a distilled-style set, one a
KD student), evaluate.py on each, then the table, the training-set table and (with matplotlib) the plots."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import report
from data.loader import SplitTokens
from data.sequences import write_sequences
from data.shards import write_shard
from gpt2.evaluation import EvalConfig, evaluate, save_results
from gpt2.train_config import TrainConfig
from test_train import run_training


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, encoding):
    root = tmp_path_factory.mktemp("experiment")  # full GPT-2 vocabulary: the sets hold <|endoftext|> (50256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    (root / "real").mkdir()
    write_shard(root / "real" / "train_000000.bin", rng.integers(0, 200, size=1500))
    write_shard(root / "real" / "val_000000.bin", rng.integers(0, 200, size=600))
    write_sequences(root / "distilled-hard", [rng.integers(0, 200, size=40) for _ in range(20)],
                    {"kind": "distilled", "sampling": {"strategy": "sample", "alpha": -1.0, "min_p": 0.1},
                     "quality": {"mean_surprisal_nats": 4.25, "distinct_1": 0.5, "distinct_2": 0.9, "distinct_3": 1.0,
                                 "repeated_4gram_fraction": 0.0}, "filter": {"dropped_total": 3}},
                    shard_tokens=10_000, argv=[], prog=["python", "distill.py"])
    common = dict(n_layer=2, n_head=2, n_embd=32, dropout=0.0, seq_len=16, micro_batch_size=4, total_batch_tokens=64,
                  lr=3e-3, min_lr=3e-4, warmup_steps=1, eval_interval=2, device="cpu", dtype="fp32", compile=False)
    runs = root / "runs"
    run_training(TrainConfig(init="scratch", data_dir=str(root / "distilled-hard"), val_data_dir=str(root / "real"),
                             out_dir=str(runs / "retrain-hard"), max_steps=4, **common))
    run_training(TrainConfig(init=str(runs / "retrain-hard"), init_layers=[0], teacher=str(runs / "retrain-hard"),
                             data_dir=str(root / "distilled-hard"), val_data_dir=str(root / "real"),
                             out_dir=str(runs / "student"), max_steps=2, **common))
    for run in ("retrain-hard", "student"):
        cfg = EvalConfig(model=str(runs / run), data_dir=str(root / "real"), split="val", gen_passages=2,
                         gen_prompt_tokens=4, gen_new_tokens=4, device="cpu", out_json=str(root / "results" / f"{run}.val.json"),
                         table=str(root / "results" / "results.md"), progress=False)
        save_results(cfg, evaluate(cfg, SplitTokens(cfg.data_dir, "val"), SplitTokens(cfg.data_dir, "train")))
    torch.set_num_threads(threads)
    return root


def config(root, **overrides) -> report.ReportConfig:
    return report.ReportConfig(**{**dict(results_dir=str(root / "results"), runs_dir=str(root / "runs"), split="val",
                                         out=str(root / "results" / "experiment.md")), **overrides})


def test_the_table_describes_every_run(experiment, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    text = report.report(config(experiment))
    assert text == (experiment / "results" / "experiment.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| retrain-hard") or line.startswith("| student")]
    assert [r.split("|")[1].strip() for r in rows] == ["retrain-hard", "student"]  # in training order
    hard, student = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    assert hard[2] == "scratch 2x32" and hard[3] == "distilled-hard" and hard[4] == "256"  # 4 steps x 64 tokens
    assert student[2].endswith("retrain-hard layers 0") and "KD from retrain-hard (T=2.0, kd_weight=0.5)" in student[3]
    assert student[4] == "128"
    ppl = float(hard[6])
    assert ppl == pytest.approx(evaluate_json(experiment, "retrain-hard")["perplexity"]["ppl"], abs=0.006)
    assert "| distilled-hard | distilled | p^-1, min_p 0.1 | 820 | 20 | 4.250 | 0.500 | 0.900 | 1.000 | 0.000 | 3 |" in text
    assert "matplotlib is not installed" in text


def evaluate_json(root, run):
    import json

    return json.loads((root / "results" / f"{run}.val.json").read_text())


def test_plots_when_matplotlib_is_there(experiment):
    pytest.importorskip("matplotlib")
    text = report.report(config(experiment))
    for name in ("loss_curves.png", "ppl_vs_budget.png"):
        assert (experiment / "results" / name).stat().st_size > 1000 and f"({name})" in text


def test_no_results_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="make eval"):
        report.main(["--results_dir", str(tmp_path)])

