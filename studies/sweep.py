"""The study: does a set drawn from the teacher's lower-probability plausible tokens retrain a model as well
as ordinary samples, hotter samples or real text of the same size? A dose-response sweep over alpha.

    python -m studies sweep                       # everything, resumable: finished steps are skipped
    make study                            # the same after `make data-offline` (offline splits, 2 CPU cores)

Design (every choice is a StudyConfig field):
0. The protocol (studies/evaluations.py): the test split is cut in two. The dev-test slice (its first `dev_test_tokens`)
   is where choices are made (which alpha feeds a student; recipes); the held-out slice (the rest, or
   `heldout_tokens` of it) gives every headline figure and is read by no choosing code. Every evaluation
   below runs on both slices and is stored side by side: results_dir/dev/<name>.json, results_dir/heldout/<name>.json.
1. Baselines: add-one unigram and interpolated bigram of the train split (lambda tuned on val).
2. The teacher: a small GPT trained from scratch on the train split (train.py). The types the split never
   holds then get the mean embedding row of its once-seen types (studies/unseen.py, Good-Turing's estimate);
   the teacher is evaluated like every arm, before ("teacher-as-trained") and after.
3. For each seed and each alpha: a synthetic set of `set_tokens` tokens (distill.py: prompts from the real
   train split, continuations drawn with weight p^alpha inside the plausible set {p >= min_p p_max};
   the seed picks prompts and draws), and a random real subset of the same size and sequence length
   (data/subset.py, same seed). Brackets: more sets at other (alpha, min_p) (`brackets`: colder alpha = 2,
   pure sampling at min-p 0, the recipe's min-p 0.1), and `extra_seeds` for ordinary sampling and the subset.
   Every set gets its statistics: distinct-n, unigram entropy, how many of the train split's types (and rare
   types) it holds, the teacher's mean NLL of it, and a unigram and bigram fitted on it (the set's frequencies alone).
4. Each arm: the same small architecture trained from scratch on its set for the same steps (train.py,
   the seed also seeds init, data order and dropout), then evaluated on both test slices: perplexity, bits per
   byte, word perplexity, perplexity by the target's frequency in the train split, BLEU and ROUGE of greedy
   continuations. References: the teacher, the arms' architecture before any training ("base"), and the
   ceiling: the same model trained on the whole train split for the same steps ("full-train").
5. Knowledge distillation (`--kd`, off by default: the KD students with soft labels are the
   retrain study's): a student cut from the teacher's layers (DistilGPT2's evenly spaced choice, and every
   other layer as an ablation) trained with the KD loss on the real subset and on the best synthetic set (best
   on dev-test: `best_alpha`).
6. The report (studies/sweep_report.py): held-out figures with dev-test beside them, mean +- 95% CI over seeds
   (Student's t), paired contrasts and a trend test over alpha, the frequency-bucket table, the set
   statistics, and (with matplotlib) the dose-response plot: held-out perplexity against alpha.

Results land in `results_dir` (dev/ and heldout/: JSON per evaluation; sets/; study.md, study.json, plots);
runs and sets in `work_dir`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.distill import DistillConfig, DistillError, distill
from data.loader import SplitTokens
from data.subset import SubsetConfig, make_subset
from gpt2.checkpoint import load_checkpoint, load_model, model_from_state, save_checkpoint
from gpt2.cli import config_to_dict, parse_config, require_positive
from gpt2.config import GPTConfig
from gpt2.device import resolve_device_and_dtype
from gpt2.evaluation import EvalError
from gpt2.kd import every_other, student_layers
from gpt2.metrics.perplexity import evaluate_perplexity
from gpt2.model import GPT
from gpt2.training import TrainingStopped
from studies import sweep_report
from studies.evaluations import DEV, Evaluations, train_run, write_json
from studies.progress import Progress
from studies.sets import set_statistics
from studies.unseen import share_unseen_rows


@dataclass
class StudyConfig:
    """Sweep alpha (and the controls) over seeds; every step skipped when its result exists."""

    data_dir: str = "shards/wikitext2"  # the real data (offline: train/val from wiki.valid, test = wiki.test)
    work_dir: str = "study"  # runs and synthetic sets (large, not committed)
    results_dir: str = "results/study"  # evaluations, tables and plots (small, committed)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seed: its own prompts, draws, init, data order
    extra_seeds: list[int] = field(default_factory=lambda: [3, 4, 5])  # more seeds for the first alpha (ordinary
    # sampling) and the real subset only: their gap was unresolved at 3 seeds
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.5, -1.0])  # the sweep: weights p^alpha (ordinary,
    # hotter, inverted; the earlier sweep's 0, -0.5 and -2 sat on the same monotone curve, -2 within 1% of -1)
    min_p: float = 0.002  # the plausible set of the sweep: p >= min_p * p_max (the small teacher's alpha=1
    # samples keep real text's distinct-2 only with a wide set; GPT-2's recipe uses 0.1)
    brackets: list[str] = field(default_factory=lambda: ["alpha=2", "alpha=1,min_p=0", "alpha=1,min_p=0.1",
                                                         "alpha=-1,min_p=0.1"])  # more synthetic arms around the
    # sweep, each "alpha=A" (at --min_p) or "alpha=A,min_p=M": colder, pure sampling, the recipe's plausible set
    full_train: bool = True  # the ceiling arm: the arms' model trained on the whole train split for the same steps
    dev_test_tokens: int = 60_000  # the test split's first tokens: the dev-test slice, where choices are made;
    # the held-out slice (every headline figure) starts here
    heldout_tokens: int = 120_000  # the held-out slice's length, test tokens 60K-180K as in the retrain study (0: to
    # the end of the test split, 226K tokens: about 10 more minutes on 2 CPU cores)
    set_tokens: int = 50_000  # the token budget of every arm's training set
    prompt_tokens: int = 32  # real tokens that start each synthetic sequence
    gen_tokens: int = 224  # tokens the teacher adds to each prompt
    # the teacher, trained on the train split: from scratch (the sizes below) or fine-tuned from a model
    teacher_init: str = "scratch"  # "scratch", or any train.py --init source (gpt2, on a GPU)
    teacher_layers: int = 4  # teacher_init scratch: transformer blocks
    teacher_heads: int = 6  # teacher_init scratch: attention heads
    teacher_width: int = 192  # teacher_init scratch: model width
    teacher_steps: int = 320  # optimizer steps of the teacher (batch_tokens each); best.pt by validation loss
    teacher_lr: float = 3e-3  # peak learning rate of the teacher (cosine decay to 1/20 of it)
    teacher_dropout: float = 0.1  # dropout while the teacher trains
    share_unseen: bool = True  # teacher_init scratch: types absent from the train split get the mean row of its
    # once-seen types after training (studies/unseen.py); the study evaluates the teacher both ways
    # the arms: the same model trained on every set, from scratch (the sizes below) or from a model (e.g. gpt2)
    arm_init: str = "scratch"  # "scratch", or any train.py --init source
    arm_layers: int = 2  # arm_init scratch: transformer blocks
    arm_heads: int = 4  # arm_init scratch: attention heads
    arm_width: int = 128  # arm_init scratch: model width
    arm_epochs: float = 4.0  # passes over a set (the same steps for every arm: the sets have one size); the earlier
    # sweep's 6 cost 154 s of an arm's 271 s on 2 CPU cores, and 33 arms did not fit 150 min
    arm_lr: float = 3e-3  # peak learning rate of every arm (the KD students take a third of it)
    arm_dropout: float = 0.1  # dropout while an arm trains
    seq_len: int = 256  # training rows and evaluation windows
    batch_tokens: int = 4096  # tokens per optimizer step
    micro_batch_size: int | None = None  # rows per forward pass (lower it if memory runs out); None: the whole step
    kd: bool = False  # also train the sweep's KD students (step 5; about 35 min on 2 CPU cores); the
    # students with soft labels, in the seed's regime, are the retrain study's
    kd_ablation: bool = True  # and the every-other-layer student on the best set (a third of step 5's time)
    gen_passages: int = 40  # continuation task: passages of the test tokens, for BLEU / ROUGE
    gen_prompt_tokens: int = 64  # continuation task: the prompt of each passage
    gen_new_tokens: int = 32  # continuation task: tokens continued greedily and scored against the passage
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"

    def __post_init__(self) -> None:
        if not self.seeds or not self.alphas:
            raise ValueError("--seeds and --alphas must each list at least one value")
        if set(self.seeds) & set(self.extra_seeds):
            raise ValueError(f"--extra_seeds {self.extra_seeds} repeat some of --seeds {self.seeds}: list new seeds")
        require_positive(self, "set_tokens", "teacher_steps", "seq_len", "batch_tokens", "gen_passages",
                         "micro_batch_size", "dev_test_tokens")
        if self.heldout_tokens < 0:
            raise ValueError(f"--heldout_tokens must be >= 0 (0: to the end of the test split), got {self.heldout_tokens}")
        self.samplings()  # a bracket that repeats an arm is an error

    def samplings(self) -> dict[str, tuple[float, float]]:
        """Every synthetic arm: its name -> (alpha, min_p); the sweep first (at --min_p), then the brackets."""
        arms = {sampling_name(a, self.min_p, self.min_p): (a, self.min_p) for a in self.alphas}
        for spec in self.brackets:
            alpha, min_p = parse_bracket(spec, self.min_p)
            name = sampling_name(alpha, min_p, self.min_p)
            if name in arms:
                raise ValueError(f"--brackets {spec!r} repeats the arm {name} (of --alphas, at --min_p {self.min_p:g}, "
                                 "or another bracket): drop it, or give it another min_p")
            arms[name] = (alpha, min_p)
        return arms


def sampling_name(alpha: float, min_p: float, study_min_p: float) -> str:
    """The name of a synthetic set and its arm: alpha=-1 at the study's min_p, alpha=-1,min_p=0.1 at another."""
    return f"alpha={alpha:g}" if min_p == study_min_p else f"alpha={alpha:g},min_p={min_p:g}"


def alpha_name(alpha: float) -> str:
    return f"alpha={alpha:g}"


def parse_bracket(spec: str, default_min_p: float) -> tuple[float, float]:
    """'alpha=A' -> (A, default_min_p); 'alpha=A,min_p=M' -> (A, M)."""
    try:
        fields = dict(part.split("=", 1) for part in spec.split(","))
        if set(fields) - {"alpha", "min_p"} or "alpha" not in fields:
            raise ValueError
        alpha, min_p = float(fields["alpha"]), float(fields.get("min_p", default_min_p))
    except ValueError:
        raise ValueError(f"--brackets {spec!r}: write each as alpha=A or alpha=A,min_p=M (e.g. alpha=1,min_p=0.1)") from None
    if not 0 <= min_p < 1 or (alpha <= 0 and min_p == 0):
        raise ValueError(f"--brackets {spec!r}: min_p must lie in [0, 1), and above 0 when alpha <= 0 (the inverted "
                         "and uniform draws need a plausible set)")
    return alpha, min_p


def best_alpha(dev_results: Path, alphas: list[float], seeds: list[int]) -> float:
    """The alpha whose arms have the lowest mean dev-test log-perplexity over seeds: the set a student is
    distilled on. It reads dev/ results only: a choice never looks at the held-out slice."""
    def mean_loss(alpha: float) -> float:
        return float(np.mean([json.loads((dev_results / f"{alpha_name(alpha)}-s{s}.json").read_text())["perplexity"]["loss"]
                              for s in seeds]))
    return min(alphas, key=mean_loss)


class Study:
    """The steps, each writing its result under work_dir / results_dir and skipped when it is there."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.work, self.results = cfg, Path(cfg.work_dir), Path(cfg.results_dir)
        self.results.mkdir(parents=True, exist_ok=True)
        self.train_tokens = SplitTokens(cfg.data_dir, "train")[:].astype(np.int64)
        # Every step on the device the runs train on (a GPU teacher: the GPU), in the precision they train in.
        self.device, self.amp_dtype = resolve_device_and_dtype(cfg.device)
        per_seed = len(cfg.samplings()) + 1 + int(cfg.full_train)  # the synthetic sets, the subset, full-train
        runs = len(cfg.seeds) * per_seed + 2 * len(cfg.extra_seeds)  # the arms
        runs += len(cfg.seeds) * (2 + int(cfg.kd_ablation)) if cfg.kd else 0  # the students
        self.progress = Progress("sweep", total=runs)  # one unit per training run
        self.evals = Evaluations(cfg, self.results, self.train_tokens, self.say, self.device, self.amp_dtype)
        self.train_counts, self.buckets = self.evals.train_counts, self.evals.buckets  # counted once, there

    def say(self, text: str) -> None:
        self.progress.say(text)

    def finished(self, name: str, fresh: bool) -> None:
        """A training run (an arm or a student) is done: say so, with the work left."""
        self.progress.finished(name, 1.0, fresh)
        self.say(f"{name} done ({self.progress.status()})")

    # ---- training
    def train_run(self, name: str, **overrides) -> Path:
        """evaluations.train_run into work_dir/runs/<name>: its best.pt (a finished run is skipped, a cut one resumed)."""
        run_dir = self.work / "runs" / name
        if not (run_dir / "summary.json").exists():
            self.say(f"training {name}")
        return train_run(self.cfg, run_dir, warmup_steps=10, **overrides)

    # ---- 2. the teacher (trained when a step needs it and its run is absent)
    def teacher_run(self) -> Path:
        cfg = self.cfg
        shape = dict(n_layer=cfg.teacher_layers, n_head=cfg.teacher_heads, n_embd=cfg.teacher_width)
        return self.train_run("teacher", init=cfg.teacher_init, **(shape if cfg.teacher_init == "scratch" else {}),
                              max_steps=cfg.teacher_steps, lr=cfg.teacher_lr, min_lr=cfg.teacher_lr / 20,
                              dropout=cfg.teacher_dropout, data_dir=cfg.data_dir, seed=1337,
                              eval_interval=max(1, cfg.teacher_steps // 8))

    @functools.cached_property
    def teacher(self) -> Path:
        """The teacher's checkpoint: its best val checkpoint, with the unseen types' rows shared (teacher.pt)
        when it was trained from scratch."""
        cfg, best = self.cfg, self.teacher_run()
        if cfg.teacher_init != "scratch" or not cfg.share_unseen:
            return best
        path = best.parent / "teacher.pt"
        if not path.exists():
            state = load_checkpoint(best)
            model = model_from_state(state)
            n = share_unseen_rows(model, self.train_counts)
            save_checkpoint(path, dataclasses.replace(state, model=model.state_dict(), unseen_rows_shared=n))
            self.say(f"teacher: the {n:,} types absent from the train split share the mean row of its once-seen types")
        return path

    def evaluate_teacher(self) -> None:
        """The teacher on both slices; from scratch, also as trained (before its unseen rows are shared)."""
        cfg = self.cfg
        if cfg.teacher_init == "scratch" and cfg.share_unseen and self.evals.todo("teacher-as-trained.json"):
            self.evals.model("teacher-as-trained", self.teacher_run())
        if self.evals.todo("teacher.json"):
            self.evals.model("teacher", self.teacher)

    def base(self) -> None:
        """The arms' model before any training on a set (one random init per seed from scratch): where every arm starts."""
        cfg = self.cfg
        if cfg.arm_init != "scratch":
            self.evals.model("base", Path(cfg.arm_init))
            return
        for seed in cfg.seeds:
            if self.evals.todo(f"base-s{seed}.json"):
                self.evals.untrained(f"base-s{seed}", GPT(self.arm_config(), seed=seed).to(self.device))

    def arm_config(self) -> GPTConfig:
        cfg = self.cfg
        return GPTConfig(n_layer=cfg.arm_layers, n_head=cfg.arm_heads, n_embd=cfg.arm_width, n_positions=cfg.seq_len)

    # ---- 3. the sets (made when a step needs one and it is absent)
    def set_data(self, name: str, seed: int) -> Path:
        """The training data of an arm: a synthetic set, the real subset (at the first synthetic set's size and
        sequence lengths), or the whole train split (full-train)."""
        cfg, out = self.cfg, self.work / "sets" / f"{name}-s{seed}"
        if name == "full-train":
            return Path(cfg.data_dir)
        if (out / "manifest.json").exists():
            return out
        if name == "subset":
            like = self.set_data(next(iter(cfg.samplings())), seed)
            make_subset(SubsetConfig(data_dir=cfg.data_dir, like=str(like), out_dir=str(out), seed=seed))
            return out
        alpha, min_p = cfg.samplings()[name]
        self.say(f"distilling {out.name}")
        distill(DistillConfig(
            teacher=str(self.teacher), data_dir=cfg.data_dir, out_dir=str(out), alpha=alpha, min_p=min_p,
            n_tokens=cfg.set_tokens, prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, seed=seed,
            device=cfg.device, preview=5))
        return out

    def set_statistics(self, name: str, seed: int) -> None:
        """distinct-n, entropy, coverage of the train split's types by bucket, and the teacher's mean NLL of the
        set's first 20,000 tokens (all of them: prompts, continuations and separators, for every kind of set);
        then the set's own unigram and bigram on both test slices (evaluations.Evaluations.set_ngrams)."""
        path = self.results / "sets" / f"{name}-s{seed}.json"
        if path.exists() and not self.evals.todo(f"set-ngrams/{name}-s{seed}.json"):
            return
        set_dir = self.set_data(name, seed)
        self.evals.set_ngrams(set_dir)
        if path.exists():
            return
        tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
        stats = set_statistics(tokens, self.train_counts, self.buckets)
        model = load_model(str(self.teacher), device=self.device)
        nll = evaluate_perplexity(model, tokens[:20_000], seq_len=self.cfg.seq_len, stride=self.cfg.seq_len,
                                  progress=False, device=self.device, autocast_dtype=self.amp_dtype)
        manifest = json.loads((set_dir / "manifest.json").read_text())
        record = {"set": set_dir.name, "kind": manifest.get("kind"), "sampling": manifest.get("sampling"),
                  "teacher_nll": nll.loss, "teacher_nll_tokens": nll.n_tokens, **stats,
                  "generated_surprisal": manifest.get("quality", {}).get("mean_surprisal_nats"),
                  "dropped_by_filter": manifest.get("filter", {}).get("dropped_total")}
        write_json(path, record)

    # ---- 4. the arms
    def arm_steps(self) -> int:
        """Optimizer steps of every arm and student: arm_epochs passes over a set of set_tokens."""
        return max(1, round(self.cfg.arm_epochs * self.cfg.set_tokens / self.cfg.batch_tokens))

    def arm(self, name: str, seed: int) -> None:
        """The arms' model trained on a set, evaluated on both slices; trained only while an evaluation is due."""
        cfg, fresh = self.cfg, bool(self.evals.todo(f"{name}-s{seed}.json"))
        if fresh:
            shape = dict(n_layer=cfg.arm_layers, n_head=cfg.arm_heads, n_embd=cfg.arm_width)
            run = self.train_run(f"{name}-s{seed}", init=cfg.arm_init, **(shape if cfg.arm_init == "scratch" else {}),
                                 max_steps=self.arm_steps(), lr=cfg.arm_lr, min_lr=cfg.arm_lr / 20,
                                 dropout=cfg.arm_dropout, data_dir=str(self.set_data(name, seed)), seed=seed)
            self.evals.model(f"{name}-s{seed}", run)
        self.finished(f"{name}-s{seed}", fresh)

    def seed_arms(self, seed: int, *, extra: bool) -> None:
        """One seed's sets and arms: every synthetic set (an extra seed: the first alpha's only), the real subset
        at the first set's size and sequence length, and the full-train ceiling (not for an extra seed)."""
        names = list(self.cfg.samplings())
        for name in [*(names[:1] if extra else names), "subset"]:
            self.set_statistics(name, seed)
            self.arm(name, seed)
        if self.cfg.full_train and not extra:
            self.arm("full-train", seed)

    # ---- 5. knowledge distillation
    def student(self, name: str, data: str, layers: str, seed: int) -> None:
        """A student cut from the teacher (`layers`: distilgpt2 or every-other), trained with the KD loss on a set;
        trained only while an evaluation is due."""
        cfg, fresh = self.cfg, bool(self.evals.todo(f"{name}.json"))
        if fresh:
            teacher, n_layer = str(self.teacher), load_model(str(self.teacher)).config.n_layer
            blocks = {"distilgpt2": student_layers, "every-other": every_other}[layers](n_layer)
            run = self.train_run(name, init=teacher, init_layers=blocks, teacher=teacher, max_steps=self.arm_steps(),
                                 lr=cfg.arm_lr / 3, min_lr=cfg.arm_lr / 60, dropout=cfg.arm_dropout,
                                 data_dir=str(self.set_data(data, seed)), seed=seed)
            self.evals.model(name, run)
        self.finished(name, fresh)

    def students(self) -> None:
        cfg = self.cfg
        best = best_alpha(self.results / DEV, cfg.alphas, cfg.seeds)
        students = [("subset", "distilgpt2"), (alpha_name(best), "distilgpt2")]
        students += [(alpha_name(best), "every-other")] if cfg.kd_ablation else []
        for seed in cfg.seeds:
            for data, layers in students:
                self.student(f"kd-{layers}-{data}-s{seed}", data, layers, seed)

    def run(self) -> None:
        """Every step in order; a step whose results are all written is skipped, and what a step needs from
        work_dir (the teacher, a set) is made again only when it is absent: a fresh clone holding the committed
        results redoes nothing but what is missing."""
        cfg = self.cfg
        self.evals.baselines()
        self.base()
        self.evaluate_teacher()
        self.progress.start()
        for seed in cfg.seeds:  # seed by seed: a cut study has whole seeds to report
            self.seed_arms(seed, extra=False)
        for seed in cfg.extra_seeds:
            self.seed_arms(seed, extra=True)
        if cfg.kd:
            self.students()
        self.say("done")


def main(argv: list[str] | None = None) -> None:
    """`python -m studies sweep`: the sweep as configured, then its report."""
    cfg = parse_config(StudyConfig, argv, description="python -m studies sweep: " + StudyConfig.__doc__)
    print(config_to_dict(cfg))
    results = Path(cfg.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    try:
        Study(cfg).run()
    except (TrainingStopped, DistillError, EvalError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    sweep_report.report(results)  # the tables and the plot, from what the steps wrote
