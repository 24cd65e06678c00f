"""The study: does a set drawn from the teacher's lower-probability plausible tokens retrain a model as well
as ordinary samples, hotter samples or real text of the same size? A dose-response sweep over alpha.

    python study.py                       # everything, resumable: finished steps are skipped
    make study                            # the same after `make data-offline` (offline splits, 2 CPU cores)

Design (every choice is a StudyConfig field):
1. Baselines on the evaluated test tokens: add-one unigram and interpolated bigram of the train split.
2. The teacher: a small GPT trained from scratch on the train split (train.py). The types the split never
   holds then get the mean embedding row of its once-seen types (gpt2/unseen.py, Good-Turing's estimate);
   the teacher is evaluated like every arm, before ("teacher-as-trained") and after.
3. For each seed and each alpha: a synthetic set of `set_tokens` tokens (distill.py: prompts from the real
   train split, continuations drawn with weight p^alpha inside the plausible set {p >= min_p p_max};
   the seed picks prompts and draws), and a random real subset of the same size and sequence length
   (data/subset.py, same seed). Every set gets its statistics: distinct-n, unigram entropy, how many of the
   train split's types (and rare types) it holds, and the teacher's mean NLL of it.
4. Each arm: the same small architecture trained from scratch on its set for the same steps (train.py,
   the seed also seeds init, data order and dropout), then evaluated on the test tokens: perplexity, bits per
   byte, word perplexity, perplexity by the target's frequency in the train split, BLEU and ROUGE of greedy
   continuations. References: the teacher, and the arms' architecture before any training ("base").
5. Knowledge distillation: a student cut from the teacher's layers (DistilGPT2's evenly spaced choice, and
   every other layer as an ablation) trained with the KD loss on the real subset and on the best synthetic set.
6. The report (study_report.py): mean +- 95% CI over seeds (Student's t), the frequency-bucket table, the set
   statistics, and (with matplotlib) the dose-response plot: test perplexity against alpha.

Results land in `results_dir` (JSON per evaluation, study.md, study.json, plots); runs and sets in `work_dir`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import distill
import evaluate
import study_report
import train
from gpt2.train_config import TrainConfig
from data.loader import SplitTokens
from data.subset import SubsetConfig, make_subset
from gpt2.atomic import atomic_open
from gpt2.checkpoint import load_checkpoint, load_model, model_from_state, save_checkpoint
from gpt2.cli import config_to_dict, parse_config, require_positive
from gpt2.config import GPTConfig
from gpt2.device import resolve_device_and_dtype
from gpt2.kd import every_other, student_layers
from gpt2.metrics import ngram, tail
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.model import GPT
from gpt2.unseen import share_unseen_rows


@dataclass
class StudyConfig:
    """Sweep alpha (and the controls) over seeds; every step skipped when its result exists."""

    data_dir: str = "shards/wikitext2"  # the real data (offline: train/val from wiki.valid, test = wiki.test)
    work_dir: str = "study"  # runs and synthetic sets (large, not committed)
    results_dir: str = "results/study"  # evaluations, tables and plots (small, committed)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seed: its own prompts, draws, init, data order
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.0, -0.5, -1.0, -2.0])  # weights p^alpha
    min_p: float = 0.002  # the plausible set of every synthetic arm: p >= min_p * p_max (the small teacher's
    # alpha=1 samples keep real text's distinct-2 only with a wide set; GPT-2's recipe uses 0.1)
    set_tokens: int = 50_000  # the token budget of every arm's training set
    prompt_tokens: int = 32  # real tokens that start each synthetic sequence
    gen_tokens: int = 224  # tokens the teacher adds to each prompt
    eval_tokens: int = 60_000  # evaluate on this prefix of the test split (the whole split: 0)
    # the teacher, trained on the train split: from scratch (the sizes below) or fine-tuned from a model
    teacher_init: str = "scratch"  # "scratch", or any train.py --init source (gpt2: the GPU recipe, `make study-gpt2`)
    teacher_layers: int = 4  # teacher_init scratch: transformer blocks
    teacher_heads: int = 6  # teacher_init scratch: attention heads
    teacher_width: int = 192  # teacher_init scratch: model width
    teacher_steps: int = 320  # optimizer steps of the teacher (batch_tokens each); best.pt by validation loss
    teacher_lr: float = 3e-3  # peak learning rate of the teacher (cosine decay to 1/20 of it)
    teacher_dropout: float = 0.1  # dropout while the teacher trains
    share_unseen: bool = True  # teacher_init scratch: types absent from the train split get the mean row of its
    # once-seen types after training (gpt2/unseen.py); the study evaluates the teacher both ways
    # the arms: the same model trained on every set, from scratch (the sizes below) or from a model (e.g. gpt2)
    arm_init: str = "scratch"  # "scratch", or any train.py --init source
    arm_layers: int = 2  # arm_init scratch: transformer blocks
    arm_heads: int = 4  # arm_init scratch: attention heads
    arm_width: int = 128  # arm_init scratch: model width
    arm_epochs: float = 6.0  # passes over a set (the same steps for every arm: the sets have one size)
    arm_lr: float = 3e-3  # peak learning rate of every arm (the KD students take a third of it)
    arm_dropout: float = 0.1  # dropout while an arm trains
    seq_len: int = 256  # training rows and evaluation windows
    batch_tokens: int = 4096  # tokens per optimizer step
    micro_batch_size: int | None = None  # rows per forward pass (lower it if memory runs out); None: the whole step
    kd: bool = True  # also train the KD students (step 5)
    kd_ablation: bool = True  # and the every-other-layer student on the best set (a third of step 5's time)
    gen_passages: int = 40  # continuation task: passages of the test tokens, for BLEU / ROUGE
    gen_prompt_tokens: int = 64  # continuation task: the prompt of each passage
    gen_new_tokens: int = 32  # continuation task: tokens continued greedily and scored against the passage
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"

    def __post_init__(self) -> None:
        if not self.seeds or not self.alphas:
            raise ValueError("--seeds and --alphas must each list at least one value")
        require_positive(self, "set_tokens", "teacher_steps", "seq_len", "batch_tokens", "gen_passages", "micro_batch_size")


def alpha_name(alpha: float) -> str:
    return f"alpha={alpha:g}"


class Study:
    """The steps, each writing its result under work_dir / results_dir and skipped when it is there."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.work, self.results = cfg, Path(cfg.work_dir), Path(cfg.results_dir)
        self.results.mkdir(parents=True, exist_ok=True)
        self.train_tokens = SplitTokens(cfg.data_dir, "train")[:].astype(np.int64)
        self.train_counts = ngram.type_counts(self.train_tokens)
        self.buckets = tail.frequency_buckets(self.train_counts)
        test = SplitTokens(cfg.data_dir, "test")
        self.eval_tokens = min(cfg.eval_tokens or len(test), len(test))
        # Every step on the device the runs train on (study-gpt2: the GPU), in the precision they train in.
        self.device, self.amp_dtype = resolve_device_and_dtype(cfg.device)
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[study {time.perf_counter() - self.t0:7.0f} s] {text}", flush=True)

    def write_json(self, path: Path, record: dict) -> None:
        with atomic_open(path) as f:
            f.write((json.dumps(record, indent=2) + "\n").encode())

    # ---- 1. baselines
    def baselines(self) -> None:
        path = self.results / "ngram.json"
        if path.exists():
            return
        test = SplitTokens(self.cfg.data_dir, "test")[: self.eval_tokens].astype(np.int64)
        counts = ngram.count_ngrams(self.train_tokens)
        lam = ngram.tune_lambda(counts, SplitTokens(self.cfg.data_dir, "val")[:].astype(np.int64))
        record = {"eval_tokens": self.eval_tokens, "bigram_lambda": lam}
        for name, nll in (("unigram", ngram.unigram_nll(counts, test)), ("bigram", ngram.bigram_nll(counts, test, lam))):
            record[name] = {"ppl": ngram.perplexity(nll)[1],
                            "by_frequency": tail.bucket_perplexity(test[1:], nll, self.buckets)}
        self.write_json(path, record)
        self.say(f"baselines: unigram ppl {record['unigram']['ppl']:.1f}, bigram {record['bigram']['ppl']:.1f}")

    # ---- training and evaluation
    def train_run(self, name: str, **overrides) -> Path:
        """train.py into work_dir/runs/<name>; a finished run (its summary written) is skipped, a cut one resumed."""
        run_dir = self.work / "runs" / name
        done = run_dir / "summary.json"
        if done.exists():
            return run_dir
        cfg = self.cfg
        settings = dict(seq_len=cfg.seq_len, micro_batch_size=cfg.micro_batch_size or cfg.batch_tokens // cfg.seq_len,
                        total_batch_tokens=cfg.batch_tokens, eval_interval=10**9, device=cfg.device, out_dir=str(run_dir),
                        resume=(run_dir / "latest.pt").exists(), val_data_dir=cfg.data_dir, warmup_steps=10)
        self.say(f"training {name}")
        summary = train.train(TrainConfig(**{**settings, **overrides}))
        self.write_json(done, summary)
        return run_dir

    def evaluate_run(self, name: str, source: Path) -> dict:
        path = self.results / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        cfg = self.cfg
        self.say(f"evaluating {name}")
        results = evaluate.evaluate(evaluate.EvalConfig(
            model=str(source), name=name, data_dir=cfg.data_dir, split="test", max_eval_tokens=self.eval_tokens,
            seq_len=cfg.seq_len, gen_passages=cfg.gen_passages, gen_prompt_tokens=cfg.gen_prompt_tokens,
            gen_new_tokens=cfg.gen_new_tokens,
            gen_batch_size=cfg.gen_passages, device=cfg.device, out_json=str(path),
            table=str(self.results / "evaluations.md"), progress=False))
        return results

    # ---- 2. the teacher
    def teacher(self) -> Path:
        cfg = self.cfg
        shape = dict(n_layer=cfg.teacher_layers, n_head=cfg.teacher_heads, n_embd=cfg.teacher_width)
        run = self.train_run("teacher", init=cfg.teacher_init, **(shape if cfg.teacher_init == "scratch" else {}),
                             max_steps=cfg.teacher_steps, lr=cfg.teacher_lr, min_lr=cfg.teacher_lr / 20,
                             dropout=cfg.teacher_dropout, data_dir=cfg.data_dir, seed=1337,
                             eval_interval=max(1, cfg.teacher_steps // 8))
        if cfg.teacher_init != "scratch" or not cfg.share_unseen:
            self.evaluate_run("teacher", run)
            return run / "best.pt"
        self.evaluate_run("teacher-as-trained", run)
        path = run / "teacher.pt"
        if not path.exists():
            state = load_checkpoint(run / "best.pt")
            model = model_from_state(state)
            n = share_unseen_rows(model, self.train_counts)
            save_checkpoint(path, {**state, "model": model.state_dict(), "unseen_rows_shared": n})
            self.say(f"teacher: the {n:,} types absent from the train split share the mean row of its once-seen types")
        self.evaluate_run("teacher", path)
        return path

    def base(self) -> None:
        """The arms' model before any training on a set (one random init per seed from scratch): where every arm starts."""
        cfg = self.cfg
        if cfg.arm_init != "scratch":
            self.evaluate_run("base", Path(cfg.arm_init))
            return
        for seed in cfg.seeds:
            path = self.results / f"base-s{seed}.json"
            if path.exists():
                continue
            model = GPT(self.arm_config(), seed=seed).to(self.device)
            test = SplitTokens(cfg.data_dir, "test")[: self.eval_tokens]
            ppl = evaluate_perplexity(model, test, seq_len=cfg.seq_len, stride=cfg.seq_len // 2, progress=False,
                                      per_token=True, device=self.device, autocast_dtype=self.amp_dtype)
            self.write_json(path, {"name": f"base-s{seed}", "perplexity": ppl.as_dict(),
                                   "perplexity_by_frequency": {"buckets": tail.bucket_perplexity(
                                       test[1:].astype(np.int64), ppl.token_nll, self.buckets)}})

    def arm_config(self) -> GPTConfig:
        cfg = self.cfg
        return GPTConfig(n_layer=cfg.arm_layers, n_head=cfg.arm_heads, n_embd=cfg.arm_width, n_positions=cfg.seq_len)

    # ---- 3. the sets
    def synthetic_set(self, teacher: Path, alpha: float, seed: int) -> Path:
        cfg, out = self.cfg, self.work / "sets" / f"{alpha_name(alpha)}-s{seed}"
        if not (out / "manifest.json").exists():
            self.say(f"distilling {out.name}")
            distill.distill(distill.DistillConfig(
                teacher=str(teacher), data_dir=cfg.data_dir, out_dir=str(out), alpha=alpha, min_p=cfg.min_p,
                n_tokens=cfg.set_tokens, prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, seed=seed,
                device=cfg.device, preview=5))
        self.set_statistics(out, teacher)
        return out

    def subset(self, like: Path, seed: int) -> Path:
        out = self.work / "sets" / f"subset-s{seed}"
        if not (out / "manifest.json").exists():
            make_subset(SubsetConfig(data_dir=self.cfg.data_dir, like=str(like), out_dir=str(out), seed=seed))
        return out

    def set_statistics(self, set_dir: Path, teacher: Path) -> dict:
        """distinct-n, entropy, coverage of the train split's types by bucket, and the teacher's mean NLL of the
        set's first 20,000 tokens (all of them: prompts, continuations and separators, for every kind of set)."""
        path = self.results / "sets" / f"{set_dir.name}.json"
        if path.exists():
            return json.loads(path.read_text())
        tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
        stats = tail.set_statistics(tokens, self.train_counts, self.buckets)
        model = load_model(str(teacher), device=self.device)
        nll = evaluate_perplexity(model, tokens[:20_000], seq_len=self.cfg.seq_len, stride=self.cfg.seq_len,
                                  progress=False, device=self.device, autocast_dtype=self.amp_dtype)
        manifest = json.loads((set_dir / "manifest.json").read_text())
        record = {"set": set_dir.name, "kind": manifest.get("kind"), "sampling": manifest.get("sampling"),
                  "teacher_nll": nll.loss, "teacher_nll_tokens": nll.n_tokens, **stats,
                  "generated_surprisal": manifest.get("quality", {}).get("mean_surprisal_nats"),
                  "dropped_by_filter": manifest.get("filter", {}).get("dropped_total")}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write_json(path, record)
        return record

    # ---- 4. the arms
    def arm(self, name: str, set_dir: Path, seed: int) -> dict:
        cfg = self.cfg
        steps = max(1, round(cfg.arm_epochs * cfg.set_tokens / cfg.batch_tokens))
        shape = dict(n_layer=cfg.arm_layers, n_head=cfg.arm_heads, n_embd=cfg.arm_width)
        run = self.train_run(f"{name}-s{seed}", init=cfg.arm_init, **(shape if cfg.arm_init == "scratch" else {}),
                             max_steps=steps, lr=cfg.arm_lr, min_lr=cfg.arm_lr / 20, dropout=cfg.arm_dropout,
                             data_dir=str(set_dir), seed=seed)
        return self.evaluate_run(f"{name}-s{seed}", run)

    # ---- 5. knowledge distillation
    def students(self, teacher: Path, sets: dict[str, dict[int, Path]]) -> None:
        cfg = self.cfg
        best = self.best_alpha()
        n_layer = load_model(str(teacher)).config.n_layer
        choices = {"distilgpt2": student_layers(n_layer), "every-other": every_other(n_layer)}
        steps = max(1, round(cfg.arm_epochs * cfg.set_tokens / cfg.batch_tokens))
        students = [("subset", "distilgpt2"), (alpha_name(best), "distilgpt2")]
        students += [(alpha_name(best), "every-other")] if cfg.kd_ablation else []
        for seed in cfg.seeds:
            for data, layers in students:
                name = f"kd-{layers}-{data}-s{seed}"
                run = self.train_run(name, init=str(teacher), init_layers=choices[layers], teacher=str(teacher),
                                     max_steps=steps, lr=cfg.arm_lr / 3, min_lr=cfg.arm_lr / 60, dropout=cfg.arm_dropout,
                                     data_dir=str(sets[data][seed]), seed=seed)
                self.evaluate_run(name, run)

    def best_alpha(self) -> float:
        """The alpha whose arms have the lowest mean test perplexity (log-perplexity averaged over seeds)."""
        def mean_loss(alpha):
            return np.mean([json.loads((self.results / f"{alpha_name(alpha)}-s{s}.json").read_text())["perplexity"]["loss"]
                            for s in self.cfg.seeds])
        return min(self.cfg.alphas, key=mean_loss)

    def run(self) -> None:
        cfg = self.cfg
        self.baselines()
        self.base()
        teacher = self.teacher()
        sets: dict[str, dict[int, Path]] = {}
        for seed in cfg.seeds:  # seed by seed: a cut study has whole seeds to report
            for alpha in cfg.alphas:
                sets.setdefault(alpha_name(alpha), {})[seed] = self.synthetic_set(teacher, alpha, seed)
                self.arm(alpha_name(alpha), sets[alpha_name(alpha)][seed], seed)
            sets.setdefault("subset", {})[seed] = self.subset(sets[alpha_name(cfg.alphas[0])][seed], seed)
            self.set_statistics(sets["subset"][seed], teacher)
            self.arm("subset", sets["subset"][seed], seed)
        if cfg.kd:
            self.students(teacher, sets)
        self.say("done")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(StudyConfig, argv)
    print(config_to_dict(cfg))
    results = Path(cfg.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    try:
        Study(cfg).run()
    except (train.TrainingStopped, distill.DistillError, evaluate.EvalError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    study_report.report(results)  # the tables and the plot, from what the steps wrote


if __name__ == "__main__":
    main()
