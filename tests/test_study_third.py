"""The retrain study's third edition (issue 28) at toy scale: the arms the seed's claims need (less real data,
mixtures, token edits, deduplicated sets, the prompt out of the loss, a second recipe) with their val curves, the
report's time-to-gain and robust-statistics parts, and the held-out cut between articles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest

from data.loader import SplitTokens
from data.sequences import write_sequences
from gpt2.tokenizer import EOT_ID
from studies import retrain as study_retrain
from studies import retrain_report, teachers_report
from studies.retrain_sets import read_sequences, write_less_data, write_mixture
from test_study_retrain import results_of, run_study, toy_config, toy_data


def third_config(root: Path) -> study_retrain.RetrainConfig:
    base = study_retrain.config_to_dict(toy_config(root, toy_data(root)))
    return study_retrain.RetrainConfig(**{
        **base, "kd_weights": [], "kd_alphas": [], "challenge": False, "less_data_shares": [0.5], "mix_shares": [0.5],
        "mix_alphas": [1.0], "extra_min_p": 0.1, "edit_alphas": [1.0], "dedup_alphas": [1.0], "dedup_max_shared": 0.9,
        "prompt_loss_alphas": [1.0], "recipe_alphas": [1.0], "recipe_lr": 3e-4, "curve_interval": 1,
        "curve_tokens": 256})


@pytest.mark.slow
def test_the_third_editions_arms_run_with_curves_and_a_cut_arm_redoes_identically(tmp_path, encoding, one_thread):
    cfg = third_config(tmp_path)
    text = run_study(cfg)
    results, work = Path(cfg.results_dir), Path(cfg.work_dir)
    names = study_retrain.arm_names(cfg)
    assert not (results / "student-cut.json").exists()  # no KD students, no untrained one to compare them with
    assert names == ["alpha=1,min_p=0.1", "alpha=-1,min_p=0.1", "real", "part-b", "part-a", "real0.5",
                     "real0.5+alpha=1,min_p=0.1", "edit0.15,alpha=1,min_p=0.1", "alpha=1,min_p=0.1,dedup",
                     "alpha=1,min_p=0.1,no-prompt-loss", "real@lr=0.0003", "alpha=1,min_p=0.1@lr=0.0003"]
    for name in names:
        for seed in cfg.seeds:
            record = json.loads((results / f"{name}-s{seed}.json").read_text())
            assert [p["step"] for p in record["curve"]] == list(range(cfg.arm_steps + 1)), name
    # The flags each arm adds reach its run; every arm's evaluated weights are its last step's.
    run = lambda name: json.loads((work / "runs" / f"{name}-s0" / "run.json").read_text())["config"]  # noqa: E731
    assert run("alpha=1,min_p=0.1,no-prompt-loss")["ignore_first_tokens"] == cfg.prompt_tokens
    assert run("alpha=1,min_p=0.1")["ignore_first_tokens"] == 0
    assert run("real@lr=0.0003")["lr"] == 3e-4 and run("real")["lr"] == cfg.arm_lr
    assert run("real")["eval_tokens"] == 256 and run("real")["eval_interval"] == 1
    evals = [json.loads(line) for line in (work / "runs" / "real-s0" / "log.jsonl").read_text().splitlines()]
    assert {e["val_tokens"] for e in evals if e["kind"] == "eval"} == {255}  # the curve's slice: 256 tokens
    teacher = json.loads((results / "teacher.json").read_text())
    base_curve = json.loads((results / "real-s0.json").read_text())["curve"][0]["val_loss"]
    assert teacher["curve_val_loss"] < base_curve  # the same slice: the teacher ahead of the base
    assert (work / "runs" / "real-s0" / "last.pt").exists() and not (work / "runs" / "real-s0" / "latest.pt").exists()
    # The sets: the mixture holds the less-data set's real sequences, then synthetic ones; all the same size but
    # the less-data set.
    assert len(SplitTokens(work / "sets" / "real0.5-s0", "train")) == cfg.set_tokens // 2
    for name in ("real0.5+alpha=1,min_p=0.1", "edit0.15,alpha=1,min_p=0.1", "alpha=1,min_p=0.1,dedup"):
        assert len(SplitTokens(work / "sets" / f"{name}-s0", "train")) == cfg.set_tokens, name
    mixture = json.loads((work / "sets" / "real0.5+alpha=1,min_p=0.1-s0" / "manifest.json").read_text())
    assert mixture["real_tokens"] == cfg.set_tokens // 2 and mixture["generation_seconds"] > 0
    # The report: robust tests beside every t-test, Holm over the report, time to gain.
    assert "sign-flip" in text and "Holm" in text and "### Time to gain" in text
    assert "| real0.5+alpha=1,min_p=0.1 | real0.5 |" in text and "| real@lr=0.0003 | real |" in text
    assert "vs alpha=1,min_p=0.1: " in text  # the deduplicated and prompt-loss arms are read against their set

    # The teachers' report, here with the same study on both sides: every arm's ratio to real text unmoved.
    teachers = teachers_report.report(results, results, tmp_path / "teachers")
    assert "## The teachers" in teachers and "| weak | bigram |" in teachers and "| strong | teacher |" in teachers
    moved = json.loads((tmp_path / "teachers" / "teachers.json").read_text())["arms"]["alpha=1,min_p=0.1"]["moved"]
    assert moved["mean"] == 0 and moved["p"] == 1.0

    finished = results_of(cfg)
    for name in ("real0.5+alpha=1,min_p=0.1-s1", "edit0.15,alpha=1,min_p=0.1-s1"):
        (results / f"{name}.json").unlink()
        shutil.rmtree(work / "runs" / name)
        shutil.rmtree(work / "sets" / name)
    run_study(cfg)
    assert results_of(cfg) == finished


def sequences_set(path: Path, lengths: list[int], first_id: int) -> Path:
    ids = iter(range(first_id, first_id + sum(lengths)))
    write_sequences(path, [np.array([next(ids) for _ in range(n)]) for n in lengths], {"timing": {"seconds": 10.0}},
                    shard_tokens=10_000, argv=[], prog=["test"])
    return path


def test_less_data_and_mixture_sets_hold_the_asked_tokens_from_their_sources(tmp_path):
    real = sequences_set(tmp_path / "real", [9] * 10, 1000)  # 100 tokens with the separators
    synthetic = sequences_set(tmp_path / "synthetic", [19] * 5, 2000)
    write_less_data(tmp_path / "less", real, 0.35, 100)
    less = SplitTokens(tmp_path / "less", "train")[:]
    assert len(less) == 35 and (less == SplitTokens(real, "train")[:35]).all()  # the real set's first tokens
    write_mixture(tmp_path / "mix", real, synthetic, 0.35, 100, seed=3)
    mix = read_sequences(tmp_path / "mix")
    tokens = SplitTokens(tmp_path / "mix", "train")[:]
    assert len(tokens) == 100 and (tokens == EOT_ID).sum() == len(mix)
    real_part = [s for s in mix if s[0] < 2000]
    assert sum(len(s) + 1 for s in real_part) == 35 and sorted(np.concatenate(real_part).tolist()) == \
        [t for t in less.tolist() if t != EOT_ID]
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert manifest["real_tokens"] == 35 and manifest["synthetic_tokens"] == 65
    assert manifest["generation_seconds"] == pytest.approx(10.0 * 65 / 100)  # the share of the set it took
    write_mixture(tmp_path / "mix2", real, synthetic, 0.35, 100, seed=4)
    assert [s.tolist() for s in read_sequences(tmp_path / "mix2")] != [s.tolist() for s in mix]  # another order
    with pytest.raises(ValueError, match="fewer than the 150"):
        write_less_data(tmp_path / "too-much", real, 1.5, 100)


def test_the_article_cut_moves_the_heldout_slice_to_article_starts(tmp_path, monkeypatch):
    cfg = toy_config(tmp_path, toy_data(tmp_path))
    cfg = study_retrain.RetrainConfig(**{**study_retrain.config_to_dict(cfg), "heldout_tokens": 500})
    assert study_retrain.RetrainStudy(cfg).heldout_range == (600, 1100)
    monkeypatch.setattr(study_retrain, "article_starts", lambda tokens: np.array([0, 550, 700, 1150, 1300]))
    cut = study_retrain.RetrainStudy(study_retrain.RetrainConfig(**{**study_retrain.config_to_dict(cfg),
                                                                    "article_cut": True}))
    assert cut.heldout_range == (550, 1150)  # 600 -> the start at 550; 550 + 500 -> the start at 1,150


def test_holm_adjusts_over_the_reports_tests_counting_one_shown_twice_once():
    arms = {"x": {"vs_real": {"against": "real", "p": 0.01}}, "y": {"vs_real": {"against": "real", "p": 0.04}},
            "real": {}}
    contrasts = [{"a": "x", "b": "real", "p": 0.01}, {"a": "y", "b": "x", "p": 0.03}, {"a": "z", "b": "x"}]
    assert retrain_report.adjust_for_multiplicity(arms, contrasts) == 3
    assert arms["x"]["vs_real"]["holm"] == contrasts[0]["holm"] == pytest.approx(0.03)  # 0.01 x 3
    assert contrasts[1]["holm"] == pytest.approx(0.06) and arms["y"]["vs_real"]["holm"] == pytest.approx(0.06)
    assert "holm" not in contrasts[2]  # no test, no adjustment


def test_a_bf16_base_is_evaluated_with_float32_weights(tmp_path, monkeypatch):
    """The strong base is committed in bf16 (make base-export); the study scores every model with float32 weights
    (the bf16 values), as the runs continued from it hold them."""
    from gpt2.config import GPTConfig
    from gpt2.model import GPT

    scored, real = [], study_retrain.evaluate_perplexity
    monkeypatch.setattr(study_retrain, "evaluate_perplexity",
                        lambda model, *a, **k: scored.append(next(model.parameters()).dtype) or real(model, *a, **k))
    cfg = toy_config(tmp_path, toy_data(tmp_path))
    study = study_retrain.RetrainStudy(cfg)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32), seed=0).to(torch.bfloat16)
    rounded = model.transformer.wte.weight.detach().clone()
    study.evaluate("bf16-base", lambda: model)
    assert scored == [torch.float32] and torch.equal(model.transformer.wte.weight.to(torch.bfloat16), rounded)
    assert (Path(cfg.results_dir) / "bf16-base.json").exists()


def test_side_arms_run_on_the_first_side_seeds_only(tmp_path):
    from studies.retrain_plan import seed_arms

    cfg = study_retrain.RetrainConfig(**{**study_retrain.config_to_dict(third_config(tmp_path)), "side_seeds": 1})
    first, second = ([a.name for a in seed_arms(cfg, s)] for s in cfg.seeds)
    side = {"alpha=1,min_p=0.1,dedup", "alpha=1,min_p=0.1,no-prompt-loss", "real@lr=0.0003",
            "alpha=1,min_p=0.1@lr=0.0003"}
    assert set(first) - set(second) == side and set(second) < set(first)
    study = study_retrain.RetrainStudy(cfg)
    assert "alpha=1,min_p=0.1,dedup" in study.set_names(0) and "alpha=1,min_p=0.1,dedup" not in study.set_names(1)


def makefile_variable(name: str) -> list[str]:
    """A Makefile variable's value (continued lines joined), split into words."""
    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.split("=")[0].strip(" ?") == name)
    return line.split("=", 1)[1].split()


@pytest.mark.parametrize("variable, n_arms", [("THIRD_ARMS", 17), ("THIRD_ARMS_GPT2", 17)])  # part-a: no --base_init
def test_the_make_targets_flags_are_a_valid_third_edition(variable, n_arms):
    """make study-weak / study-strong / study-gpt2-third pass these flags: they parse, and name every arm."""
    from gpt2.cli import parse_config
    from studies.retrain_plan import RetrainConfig, arms

    cfg = parse_config(RetrainConfig, makefile_variable(variable))
    names = [a.name for a in arms(cfg)]
    assert len(names) == n_arms and not cfg.kd_weights and not cfg.challenge and cfg.article_cut, names
    recipe = "real@lr=0.0003" if variable == "THIRD_ARMS" else "real@lr=3e-05"
    assert {"real0.67+alpha=1,min_p=0.002", "real0.33+alpha=-1,min_p=0.002", "edit0.15,alpha=-1,min_p=0.002",
            "alpha=-1,min_p=0.002,dedup", recipe} <= set(names)
