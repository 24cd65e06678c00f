"""The sweep (python -m studies sweep) end to end at toy scale: every step writes its result, the report has every arm with an
interval over seeds, and a second run skips everything it finds finished."""

from __future__ import annotations

import builtins
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.loader import SplitTokens
from data.shards import write_shard
from gpt2 import trainer
from gpt2.checkpoint import load_model
from gpt2.training import TrainingStopped
from studies import evaluations as study_eval
from studies import ngram
from studies import sweep as study
from studies import sweep_report as study_report


def toy_data(root: Path, test_start: int = 5000) -> Path:
    """Shards of a repetitive toy corpus over 300 ids, with noise (a teacher learns it in a few steps): train
    its first 4,000 tokens, val the rest up to `test_start`, test from there to 6,000."""
    rng = np.random.default_rng(0)
    sentence = rng.integers(0, 300, size=40)
    stream = np.tile(sentence, 150)
    noise = rng.random(stream.size) < 0.1
    stream[noise] = rng.integers(0, 300, size=int(noise.sum()))
    data = root / "data"
    data.mkdir(parents=True)
    write_shard(data / "train_000000.bin", stream[:4000])
    write_shard(data / "val_000000.bin", stream[4000:test_start])
    write_shard(data / "test_000000.bin", stream[test_start:6000])
    return data


def toy_config(root: Path) -> study.StudyConfig:
    return study.StudyConfig(
        data_dir=str(toy_data(root)), work_dir=str(root / "work"), results_dir=str(root / "results"), seeds=[0, 1],
        alphas=[1.0, -1.0], extra_seeds=[2], brackets=["alpha=1,min_p=0"], set_tokens=600, prompt_tokens=8,
        gen_tokens=24, dev_test_tokens=400, heldout_tokens=500, teacher_layers=2,
        teacher_heads=2, teacher_width=16, teacher_steps=16, teacher_lr=1e-2, arm_layers=1, arm_heads=2, arm_width=16, arm_epochs=0.5,
        seq_len=32, batch_tokens=128, gen_passages=2, gen_prompt_tokens=8, gen_new_tokens=4, kd=True,
        device="cpu")


class HeldoutGuard:
    """While a choosing function runs (`wrap`), reading test tokens at or past the dev-test boundary, or any file
    under a heldout/ folder, raises: the held-out slice must never inform a choice."""

    def __init__(self, monkeypatch, boundary: int):
        self.boundary, self.active, self.calls = boundary, False, {}
        get, path_open, open_ = SplitTokens.__getitem__, Path.open, builtins.open

        def guarded_get(tokens, index):
            if self.active and tokens.split == "test":
                stop = index.indices(len(tokens))[1] if isinstance(index, slice) else index % len(tokens) + 1
                assert stop <= self.boundary, f"a choosing function read test tokens up to {stop} (dev-test ends at {self.boundary})"
            return get(tokens, index)

        def check(path) -> None:
            assert not (self.active and "heldout" in Path(path).parts), f"a choosing function read {path}"

        def guarded_path_open(path, *args, **kwargs):  # Path.read_text goes through here
            check(path)
            return path_open(path, *args, **kwargs)

        def guarded_open(file, *args, **kwargs):
            if isinstance(file, (str, Path)):
                check(file)
            return open_(file, *args, **kwargs)

        monkeypatch.setattr(SplitTokens, "__getitem__", guarded_get)
        monkeypatch.setattr(Path, "open", guarded_path_open)
        monkeypatch.setattr(builtins, "open", guarded_open)

    def wrap(self, module, name: str) -> None:
        """Run module.name under the guard from now on (and count its calls)."""
        inner = getattr(module, name)

        @functools.wraps(inner)
        def guarded(*args, **kwargs):
            self.active, self.calls[name] = True, self.calls.get(name, 0) + 1
            try:
                return inner(*args, **kwargs)
            finally:
                self.active = False
        setattr(module, name, guarded)


def guard_the_choices(monkeypatch, boundary: int) -> HeldoutGuard:
    """Every function that makes a choice: which alpha feeds a student, the bigrams' lambda (on val), and the
    training runs (best.pt is chosen by validation loss)."""
    guard = HeldoutGuard(monkeypatch, boundary)
    for module, name in ((study, "best_alpha"), (ngram, "tune_lambda"), (trainer, "train")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
        guard.wrap(module, name)
    return guard


def test_the_guard_catches_a_choice_that_reads_heldout(tmp_path, monkeypatch):
    """best_alpha picks on dev/ (where alpha=-1 wins) though heldout/ says alpha=1; pointed at heldout/, or
    reading test tokens past the boundary, the guard stops it."""
    for piece, losses in (("dev", {1: 5.0, -1: 4.0}), ("heldout", {1: 3.0, -1: 6.0})):
        (tmp_path / piece).mkdir()
        for alpha, loss in losses.items():
            for seed in (0, 1):
                (tmp_path / piece / f"alpha={alpha}-s{seed}.json").write_text(json.dumps({"perplexity": {"loss": loss + seed}}))
    data = toy_data(tmp_path)
    guard = HeldoutGuard(monkeypatch, boundary=400)
    monkeypatch.setattr(study, "best_alpha", study.best_alpha)  # restored after the test
    guard.wrap(study, "best_alpha")
    assert study.best_alpha(tmp_path / "dev", [1.0, -1.0], [0, 1]) == -1.0
    with pytest.raises(AssertionError, match="heldout"):
        study.best_alpha(tmp_path / "heldout", [1.0, -1.0], [0, 1])
    guard.active = True
    SplitTokens(data, "test")[:400]
    SplitTokens(data, "val")[:]
    with pytest.raises(AssertionError, match="up to 401"):
        SplitTokens(data, "test")[399:401]


@pytest.mark.slow
def test_study_runs_reports_and_resumes(tmp_path, encoding, one_thread, monkeypatch, capsys):
    cfg = toy_config(tmp_path)
    guard = guard_the_choices(monkeypatch, cfg.dev_test_tokens)
    study.Study(cfg).run()
    out = capsys.readouterr().out  # 2 seeds x (3 sets, subset, full-train) + 1 extra seed x 2 arms; 6 students
    assert "[sweep " in out and "alpha=1-s0 done (6% of the work done, about " in out  # 1 of 18 runs
    assert " done (100% of the work done, about 0 min left)\n" in out
    assert guard.calls["best_alpha"] == 1 and guard.calls["tune_lambda"] >= 2 and guard.calls["train"] >= 10
    results = Path(cfg.results_dir)
    sets = {"alpha=1-s0", "alpha=1-s1", "alpha=1-s2", "alpha=-1-s0", "alpha=-1-s1", "alpha=1,min_p=0-s0",
            "alpha=1,min_p=0-s1", "subset-s0", "subset-s1", "subset-s2"}  # the extra seed 2: alpha=1 and subset only
    expected = {"ngram", "teacher", "teacher-as-trained", "base-s0", "base-s1", "full-train-s0", "full-train-s1"} | sets
    for piece in ("dev", "heldout"):  # every evaluation on both slices, side by side
        assert expected <= {p.stem for p in (results / piece).glob("*.json")}, piece
        assert {p.stem for p in (results / piece / "set-ngrams").glob("*.json")} == sets
        assert len(list((results / piece).glob("kd-*.json"))) == 6  # 2 seeds x (subset, best set, the layer ablation)
    assert {p.stem for p in (results / "sets").glob("*.json")} == sets
    dev, held = (json.loads((results / p / "alpha=1-s0.json").read_text())["data"] for p in ("dev", "heldout"))
    assert (dev["first_token"], dev["n_tokens_evaluated"], held["first_token"], held["n_tokens_evaluated"]) == (0, 400, 400, 500)
    check_teacher(cfg)
    inverted = json.loads((results / "sets" / "alpha=-1-s0.json").read_text())
    ordinary = json.loads((results / "sets" / "alpha=1-s0.json").read_text())
    assert inverted["teacher_nll"] > ordinary["teacher_nll"]  # the inverted set is less likely under the teacher

    text = study_report.report(results)
    main_table = text.split("### ")[0]
    rows = {line.split("|")[1].strip(): line for line in main_table.splitlines() if line.startswith("| ")}
    for arm in ("alpha=1", "alpha=-1", "subset", "kd-distilgpt2-subset", "teacher", "teacher-as-trained", "bigram (counts of the train split)"):
        assert arm in rows, arm
    assert "[" in rows["alpha=1"] and "| 3 |" in rows["alpha=1"]  # a 95% interval over three seeds (one extra)
    summary = json.loads((results / "study.json").read_text())
    values = summary["arms"]["alpha=-1"]["loss"]["values"]
    assert values == [json.loads((results / "heldout" / f"alpha=-1-s{s}.json").read_text())["perplexity"]["loss"]
                      for s in (0, 1)]

    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    study.Study(cfg).run()  # everything is there: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == before

    # An interruption that lost pieces: a whole arm (its run and both evaluations), one slice of a student's
    # evaluation and one set's n-grams. They are redone, and the tables come out the same.
    shutil.rmtree(Path(cfg.work_dir) / "runs" / "alpha=-1-s1")
    for lost in ("dev/alpha=-1-s1.json", "heldout/alpha=-1-s1.json", "heldout/kd-distilgpt2-subset-s1.json",
                 "dev/set-ngrams/subset-s0.json"):
        (results / lost).unlink()
    study.Study(cfg).run()
    assert study_report.report(results) == text

    # A fresh clone holds the committed results but no work dir: losing one arm's evaluations redoes that arm
    # alone, with the teacher and its set made again on the way, and the same figures.
    shutil.rmtree(cfg.work_dir)
    for lost in ("dev/alpha=-1-s1.json", "heldout/alpha=-1-s1.json"):
        (results / lost).unlink()
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    study.Study(cfg).run()
    assert study_report.report(results) == text
    assert not (Path(cfg.work_dir) / "runs" / "subset-s0").exists()  # nothing else trained
    changed = {p.relative_to(results) for p, t in before.items() if p.stat().st_mtime_ns != t}
    assert changed <= {Path("study.json")}


@pytest.mark.slow
def test_kd_ablation_can_be_left_out(tmp_path, encoding, one_thread):
    cfg = toy_config(tmp_path)
    cfg.seeds, cfg.alphas, cfg.kd_ablation = [0], [1.0], False
    cfg.extra_seeds, cfg.brackets, cfg.full_train = [], [], False
    study.Study(cfg).run()
    assert {p.stem for p in (Path(cfg.results_dir) / "heldout").glob("kd-*.json")} == {"kd-distilgpt2-subset-s0",
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
    for flag in ("--alphas", "--seeds", "--extra_seeds", "--brackets", "--full_train", "--teacher_init", "--arm_init",
                 "--set_tokens", "--dev_test_tokens", "--heldout_tokens", "--kd"):
        assert flag in text
    with pytest.raises(SystemExit):
        study.main(["--alphas"])  # a list needs values


def test_brackets_name_their_sets_and_bad_ones_are_refused():
    cfg = study.StudyConfig()
    assert cfg.samplings() == {"alpha=1": (1.0, 0.002), "alpha=0.5": (0.5, 0.002), "alpha=-1": (-1.0, 0.002),
                               "alpha=2": (2.0, 0.002),
                               "alpha=1,min_p=0": (1.0, 0.0), "alpha=1,min_p=0.1": (1.0, 0.1),
                               "alpha=-1,min_p=0.1": (-1.0, 0.1)}
    for bad, says in ((dict(brackets=["alpha=1,min_p=0.002"]), "repeats the arm alpha=1"),
                      (dict(brackets=["beta=1"]), "alpha=A or alpha=A,min_p=M"),
                      (dict(brackets=["alpha=-1,min_p=0"]), "above 0 when alpha <= 0"),
                      (dict(extra_seeds=[2]), "repeat some of --seeds"), (dict(heldout_tokens=-1), "heldout_tokens")):
        with pytest.raises(ValueError, match=says):
            study.StudyConfig(**bad)


def test_the_test_split_is_cut_at_the_dev_test_boundary():
    dev, held = study_eval.cut_test_split(286_221, 60_000, 0)
    assert (dev.first, dev.n_tokens, held.first, held.n_tokens) == (0, 60_000, 60_000, 226_221)
    assert study_eval.cut_test_split(286_221, 60_000, 100_000)[1].n_tokens == 100_000
    assert study_eval.cut_test_split(1000, 400, 5000)[1].n_tokens == 600  # a cap past the end: to the end
    with pytest.raises(ValueError, match="dev_test_tokens"):
        study_eval.cut_test_split(1000, 999, 0)


def test_a_run_stopped_by_a_signal_is_not_recorded_as_finished(tmp_path, monkeypatch):
    """gpt2.trainer.train returns normally after SIGINT / SIGTERM (it saved latest.pt and stopped early): the study
    must stop too, without the summary.json that would make the next run skip the unfinished one."""
    cfg = toy_config(tmp_path)
    monkeypatch.setattr(trainer, "train", lambda config, data: {"stopped_early": True, "steps": 3})
    monkeypatch.setattr(study_eval, "training_data", lambda config: None)  # no shards read: the run is faked
    with pytest.raises(TrainingStopped, match="teacher stopped at step 3"):
        study.Study(cfg).train_run("teacher", max_steps=16)
    assert not (tmp_path / "work" / "runs" / "teacher" / "summary.json").exists()


def test_train_run_skips_a_finished_run_resumes_a_cut_one_and_keeps_only_best(tmp_path, monkeypatch):
    """study_eval.train_run, shared by both studies: a run cut before its first checkpoint starts afresh, one
    cut after it resumes from latest.pt, a finished one (summary.json) is not trained again, and latest.pt
    (weights + AdamW moments, only for resuming) goes once the run ends."""
    calls = []

    def fake_train(config, data):
        calls.append(config)
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "best.pt").write_bytes(b"weights")
        (out / "latest.pt").write_bytes(b"weights and moments")
        return {"stopped_early": False, "steps": config.max_steps}

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(study_eval, "training_data", lambda config: None)  # no shards read: the run is faked
    cfg = toy_config(tmp_path)
    run = tmp_path / "runs" / "cut-early"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text("a run killed before its first checkpoint\n")
    best = study_eval.train_run(cfg, run, max_steps=4, lr=1e-3)
    assert best == run / "best.pt" and best.exists()
    assert not (run / "log.jsonl").exists() and not (run / "latest.pt").exists()
    first = calls[0]
    assert (first.resume, first.out_dir, first.eval_interval, first.seq_len) == (False, str(run), 10**9, cfg.seq_len)
    assert first.micro_batch_size == cfg.batch_tokens // cfg.seq_len and first.val_data_dir == cfg.data_dir
    assert study_eval.train_run(cfg, run, max_steps=4, lr=1e-3) == best and len(calls) == 1  # finished: skipped
    cut = tmp_path / "runs" / "cut-late"
    cut.mkdir()
    (cut / "latest.pt").write_bytes(b"a checkpoint")
    study_eval.train_run(cfg, cut, max_steps=4, lr=1e-3)
    assert calls[1].resume is True and (cut / "summary.json").exists()
