"""The retrain study (python -m studies retrain) end to end at toy scale: every piece writes its file, the report has every arm, a run cut
anywhere and resumed gives the same tables and JSON as an uninterrupted one, and nothing that
makes a choice reads the test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.loader import SplitTokens
from gpt2.checkpoint import load_model
from gpt2 import trainer
from gpt2.metrics.perplexity import evaluate_perplexity
from studies import retrain as study_retrain
from studies import retrain_report
from studies.plots import gain_plot
from test_study import toy_data as study_toy_data


def toy_data(root: Path) -> Path:
    """test_study's toy corpus, with a longer test split: 1,400 tokens, to hold a dev-test and a held-out slice."""
    return study_toy_data(root, test_start=4600)


def toy_config(root: Path, data: Path) -> study_retrain.RetrainConfig:
    return study_retrain.RetrainConfig(
        data_dir=str(data), work_dir=str(root / "work"), results_dir=str(root / "results"), seeds=[0, 1],
        alphas=[1.0, -1.0], min_ps=[0.1], kd_alphas=[-1.0], set_tokens=300, prompt_tokens=8, gen_tokens=24,
        dev_test_tokens=600, n_layer=2, n_head=2, n_embd=16, base_steps=8, base_lr=1e-2, teacher_steps=4,
        arm_steps=2, seq_len=32, batch_tokens=128, device="cpu")


def run_study(cfg: study_retrain.RetrainConfig) -> str:
    Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
    study_retrain.write_json(Path(cfg.results_dir) / "config.json", study_retrain.config_to_dict(cfg))
    study_retrain.RetrainStudy(cfg).run()
    return retrain_report.report(Path(cfg.results_dir))


def results_of(cfg: study_retrain.RetrainConfig) -> dict[str, str]:
    """Every result file but those of seconds, which differ between runs: timings.json, and the third edition's
    curve_seconds.json and time_to_gain.md."""
    root = Path(cfg.results_dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("timings.json", "curve_seconds.json", "time_to_gain.md")}


class Cut(Exception):
    """Stands for a kill: raised from inside a piece."""


@pytest.mark.slow
def test_study_retrain_runs_and_resumes_to_identical_results(tmp_path, encoding, one_thread, monkeypatch, capsys):
    whole = toy_config(tmp_path, toy_data(tmp_path))
    text = run_study(whole)
    check_complete(whole, text, capsys.readouterr().out)
    check_chunk_scores(whole)
    results = Path(whole.results_dir)

    # A kill -9 keeps the finished pieces and leaves the one it hit half done: here seed 1 is lost but for its
    # first set's shards (their manifest, written last, is not there), a seed-0 run lost its summary.json and a
    # seed-1 run dir was cut before any checkpoint; then a kill inside a set, and one after a run's checkpoint.
    finished = results_of(whole)
    work = Path(whole.work_dir)
    for path in [*results.rglob("*-s1.json"), *work.glob("nll/*-s1.npy")]:
        path.unlink()
    for path in [*work.glob("runs/*-s1"), *work.glob("sets/*-s1")]:
        if path != work / "sets" / "alpha=1,min_p=0.1-s1":
            shutil.rmtree(path)
    (work / "sets" / "alpha=1,min_p=0.1-s1" / "manifest.json").unlink()
    (work / "runs" / "part-a-s0" / "summary.json").unlink()
    (work / "runs" / "real-s1").mkdir()
    (work / "runs" / "real-s1" / "run.json").write_text("{}")

    def killed(*args, **kwargs):
        raise Cut

    def killed_after(*args, **kwargs):  # the run is done and checkpointed, its summary.json not yet written
        real_train(*args, **kwargs)
        raise Cut

    monkeypatch.setattr(study_retrain, "distill", killed)
    with pytest.raises(Cut):
        run_study(whole)
    monkeypatch.undo()
    real_train = trainer.train
    monkeypatch.setattr(trainer, "train", killed_after)
    with pytest.raises(Cut):
        run_study(whole)
    monkeypatch.undo()
    killed_run = work / "runs" / "alpha=1,min_p=0.1-s1"  # the first run still to do: killed after its checkpoint
    assert (killed_run / "latest.pt").exists() and not (killed_run / "summary.json").exists()
    run_study(whole)
    assert results_of(whole) == finished

    before = {p: p.stat().st_mtime_ns for p in results.glob("*-s*.json")}
    study_retrain.RetrainStudy(whole).run()  # everything is there: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in results.glob("*-s*.json")} == before

    # A fresh clone holds the committed results but no work dir: deleting one arm's result redoes that arm alone,
    # with what it needs (part A, the base, the teacher, its set) made again, and the same result.
    shutil.rmtree(work)
    (results / "alpha=-1,min_p=0.1-s1.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json") if p.name != "timings.json"}
    run_study(whole)
    assert results_of(whole) == finished
    assert not (work / "sets" / "real-s1").exists() and not (work / "runs" / "real-s1").exists()
    changed = {p for p, t in before.items() if p.stat().st_mtime_ns != t}
    assert changed <= {results / "plan.json", results / "config.json", results / "study-retrain.md",
                       results / "study-retrain.json"}


def check_complete(whole: study_retrain.RetrainConfig, text: str, printed: str) -> None:
    """Every piece's result and every table row of a finished toy study, the progress lines it printed, and
    one evaluation's per-token NLL against its perplexity."""
    assert "[retrain" in printed and "arm alpha=-1,min_p=0.1-s1 (" in printed and " min left)" in printed
    results = Path(whole.results_dir)
    for name in ("base", "teacher", "student-cut"):
        assert (results / f"{name}.json").exists()
    arms = study_retrain.arm_names(whole) + [k for k, _, _ in study_retrain.kd_names(whole)]
    assert len(arms) == 8 + 4  # 2 synthetic sets, real, 3 challenging, parts B and A; KD: 2 sets x 2 weights
    for arm in arms:
        for seed in whole.seeds:
            assert (results / f"{arm}-s{seed}.json").exists(), arm
    headline = text.split("### ")[0]
    rows = {line.split("|")[1].strip(): line for line in headline.splitlines() if line.startswith("| ")}
    assert set(arms) | {"base", "teacher", "student-cut", "unigram", "bigram"} <= set(rows)
    assert "p = " in rows["alpha=-1,min_p=0.1"] and "p = " in rows["kd1-alpha=-1,min_p=0.1"]
    assert "p = " not in rows["real"]  # the reference itself
    check_gain_kept(results, json.loads((results / "study-retrain.json").read_text()))
    contrasts = text.split("### Paired contrasts")[1].split("###")[0]
    assert "| hardest | middle |" in contrasts and "| real | part-a |" in contrasts
    assert "| alpha=-1,min_p=0.1 | alpha=1,min_p=0.1 |" in contrasts and "alpha sweep at min_p=0.1" in contrasts
    record = json.loads((results / "alpha=1,min_p=0.1-s0.json").read_text())
    assert record["heldout"] == [600, 1400] and record["perplexity"]["n_tokens"] == 799
    nll = np.load(Path(whole.work_dir) / "nll" / "alpha=1,min_p=0.1-s0.npy")
    assert np.isclose(nll.astype(np.float64).mean(), record["perplexity"]["loss"], rtol=1e-5)
    assert "test tokens 600 to 1,400" in text


def check_gain_kept(results: Path, report: dict) -> None:
    """The share of fine-tuning's gain an arm kept, by hand: (base - arm) / (base - teacher) in held-out loss,
    averaged over seeds."""
    loss = lambda name: json.loads((results / f"{name}.json").read_text())["perplexity"]["loss"]  # noqa: E731
    base, teacher = loss("base"), loss("teacher")
    by_hand = np.mean([(base - loss(f"real-s{s}")) / (base - teacher) for s in (0, 1)])
    assert np.isclose(report["arms"]["real"]["gain_kept"]["mean"], by_hand, rtol=1e-12)


def check_chunk_scores(cfg: study_retrain.RetrainConfig) -> None:
    """Each chunk's score is the base's mean NLL of that chunk scored alone (its first token the only context of
    its second), as evaluate_perplexity gives it chunk by chunk."""
    work, L = Path(cfg.work_dir), cfg.prompt_tokens + cfg.gen_tokens
    scores = np.load(work / "chunk_scores.npy")
    part_b = SplitTokens(work / "data" / "part-b", "train")[:].astype(np.int64)
    assert len(scores) == len(part_b) // L
    base = load_model(work / "runs" / "base" / "best.pt")
    for c in (0, 1, len(scores) - 1):
        alone = evaluate_perplexity(base, part_b[c * L : (c + 1) * L], seq_len=L, progress=False)
        assert np.isclose(scores[c], alone.loss, rtol=1e-5), c


def test_challenging_sets_are_the_hardest_middle_and_easiest_of_the_seeds_pool(tmp_path, monkeypatch):
    """Brute force: each set holds the k chunks of the seed's pool at the top, middle and bottom of the scores,
    and no test token is read while choosing them."""
    data = toy_data(tmp_path)
    cfg = toy_config(tmp_path, data)
    study = study_retrain.RetrainStudy(cfg)
    L, part_b = cfg.prompt_tokens + cfg.gen_tokens, study.train_tokens[study.n_a :]
    scores = np.random.default_rng(5).normal(size=len(part_b) // L)
    Path(cfg.work_dir).mkdir(parents=True)
    np.save(Path(cfg.work_dir) / "chunk_scores.npy", scores)
    read = []
    real_getitem = SplitTokens.__getitem__
    monkeypatch.setattr(SplitTokens, "__getitem__", lambda self, i: read.append(self.split) or real_getitem(self, i))
    monkeypatch.setattr(SplitTokens, "__init__", tracing_init(SplitTokens.__init__, read))
    for which in study_retrain.CHALLENGE:
        study.challenge_set(which, seed=1)
    assert "test" not in read
    pool = np.sort(np.random.default_rng(1).permutation(len(scores))[: round(len(scores) * cfg.challenge_share)])
    k = -(-cfg.set_tokens // (L + 1))
    ranked = sorted(pool, key=lambda c: (scores[c], c))  # ascending score, ties by index
    expected = {"easiest": ranked[:k], "middle": ranked[(len(pool) - k) // 2 :][:k], "hardest": ranked[-k:]}
    for which, chunks in expected.items():
        manifest = json.loads((Path(cfg.work_dir) / "sets" / f"{which}-s1" / "manifest.json").read_text())
        assert manifest["chunk_indices"] == sorted(int(c) for c in chunks)
        tokens = SplitTokens(Path(cfg.work_dir) / "sets" / f"{which}-s1", "train")[:]
        assert len(tokens) == cfg.set_tokens
        first = sorted(chunks)[0]
        assert np.array_equal(tokens[1 : L + 1], part_b[first * L : (first + 1) * L])


def tracing_init(real_init, read: list):
    def init(self, data_dir, split, *args, **kwargs):
        read.append(split)
        real_init(self, data_dir, split, *args, **kwargs)
    return init


def test_a_study_resumes_only_with_its_own_settings(tmp_path):
    cfg = study_retrain.RetrainConfig(results_dir=str(tmp_path))
    study_retrain.same_settings(tmp_path, cfg)  # nothing there yet
    study_retrain.write_json(tmp_path / "config.json", study_retrain.config_to_dict(cfg))
    study_retrain.same_settings(tmp_path, cfg)
    with pytest.raises(SystemExit, match="arm_steps=20 there, 30 now"):
        study_retrain.same_settings(tmp_path, study_retrain.RetrainConfig(results_dir=str(tmp_path), arm_steps=30))


def test_command_line_lists_every_setting():
    from gpt2.cli import build_parser

    text = build_parser(study_retrain.RetrainConfig).format_help()
    for flag in ("--part_a_share", "--min_ps", "--kd_weights", "--dev_test_tokens", "--arm_steps", "--challenge_share"):
        assert flag in text
    with pytest.raises(ValueError, match="kd_alphas"):
        study_retrain.RetrainConfig(alphas=[1.0], kd_alphas=[-1.0])


@pytest.mark.slow
def test_a_published_base_is_continued_as_it_is(tmp_path, encoding, one_thread):
    """--base_init (make study-gpt2's gpt2): no base is trained, part B is the whole train split, there is no
    part-A arm, and the arms start from that model; the students are cut from its teacher's depth, not --n_layer."""
    from test_weights import random_hf_model

    hf_dir = tmp_path / "published"
    random_hf_model(n_layer=4, n_head=2, n_embd=16, n_positions=64, vocab_size=50257).save_pretrained(hf_dir)
    cfg = toy_config(tmp_path, toy_data(tmp_path))
    cfg = study_retrain.RetrainConfig(**{**study_retrain.config_to_dict(cfg), "base_init": str(hf_dir), "seeds": [0],
                                         "kd_weights": [1.0]})
    text = run_study(cfg)
    work, results = Path(cfg.work_dir), Path(cfg.results_dir)
    assert not (work / "runs" / "base").exists() and not (work / "data" / "part-a").exists()
    assert len(SplitTokens(work / "data" / "part-b", "train")) == len(SplitTokens(cfg.data_dir, "train"))
    assert "part-a" not in study_retrain.arm_names(cfg) and not list(results.glob("part-a*"))
    base = json.loads((results / "base.json").read_text())["perplexity"]["loss"]
    published = evaluate_perplexity(load_model(hf_dir), study_retrain.RetrainStudy(cfg).heldout(), seq_len=32,
                                     stride=32, progress=False)
    assert np.isclose(base, published.loss, rtol=1e-5)
    assert json.loads((work / "runs" / "real-s0" / "run.json").read_text())["config"]["init"] == str(hf_dir)
    assert load_model(work / "runs" / "kd1-real-s0" / "best.pt").config.n_layer == 2  # blocks 0 and 3 of 4
    assert "| part-b " in text and "| part-a " not in text


def test_a_setting_added_since_a_study_ran_takes_its_default(tmp_path):
    """A results folder written before --base_init existed resumes under the same settings."""
    cfg = study_retrain.RetrainConfig(results_dir=str(tmp_path))
    old = study_retrain.config_to_dict(cfg)
    del old["base_init"]
    study_retrain.write_json(tmp_path / "config.json", old)
    study_retrain.same_settings(tmp_path, cfg)
    with pytest.raises(SystemExit, match="base_init='scratch' there, 'gpt2' now"):
        study_retrain.same_settings(tmp_path, study_retrain.RetrainConfig(results_dir=str(tmp_path), base_init="gpt2"))


def test_contrast_pairs_of_the_default_study():
    """Neighbouring alphas at each min_p, each alpha's two plausible sets, the challenge sets against the middle,
    the ceiling against real text, real text against no new data."""
    names = study_retrain.arm_names(study_retrain.RetrainConfig())
    pairs = [(a, b) for a, b, _ in retrain_report.contrast_pairs(names)]
    assert pairs == [("alpha=0,min_p=0.1", "alpha=1,min_p=0.1"), ("alpha=-1,min_p=0.1", "alpha=0,min_p=0.1"),
                     ("alpha=0,min_p=0.002", "alpha=1,min_p=0.002"), ("alpha=-1,min_p=0.002", "alpha=0,min_p=0.002"),
                     ("alpha=1,min_p=0.002", "alpha=1,min_p=0.1"), ("alpha=0,min_p=0.002", "alpha=0,min_p=0.1"),
                     ("alpha=-1,min_p=0.002", "alpha=-1,min_p=0.1"), ("hardest", "middle"), ("easiest", "middle"),
                     ("part-b", "real"), ("real", "part-a")]


def test_the_gain_plot_has_a_row_per_arm_with_a_share(tmp_path):
    pytest.importorskip("matplotlib")
    arms = {"real": {"gain_kept": {"mean": 0.5, "half_width": 0.1}}, "part-a": {"gain_kept": {"mean": 0.2,
            "half_width": None}}, "no-teacher": {}}
    path = gain_plot(arms, tmp_path)
    assert path == tmp_path / "gain_kept.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert gain_plot({"no-teacher": {}}, tmp_path / "none") is None
