"""The retrain study's plan: its settings (`RetrainConfig`), the names of its sets, arms and KD students,
what the report is told of them (plan.json), and the check that a resumed study is the same study."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpt2.cli import config_to_dict, require_positive


@dataclass
class RetrainConfig:
    """The seed's regime at CPU scale; every piece skipped when its file exists."""

    data_dir: str = "shards/wikitext2"  # the real data: train, val and test splits (make study-retrain: offline)
    work_dir: str = "study-retrain"  # runs, sets, parts A/B and per-token NLL (large, not committed)
    results_dir: str = "results/study-retrain"  # one JSON per piece, the report (small, committed)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seed: its prompts, draws, subsets, data order
    base_init: str = "scratch"  # "scratch": the base is pretrained here on part A; else the base is this model
                                # as it is (gpt2: make study-gpt2), part A its own pretraining text (not read),
                                # part B the whole train split, and no part-A arm
    part_a_share: float = 0.5  # scratch base: part A = this share of the train split, from its start; B = the rest
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.0, -1.0])  # synthetic sets: weights p^alpha
    min_ps: list[float] = field(default_factory=lambda: [0.1, 0.002])  # every alpha at each plausible set
                                                                       # {p >= min_p p_max}: 0.1 is the recipe's
                                                                       # (make distill), 0.002 the first study's
    set_tokens: int = 18_000  # tokens of every set (separators included); 3 x 71 chunks fit a half of part B
    prompt_tokens: int = 32  # real part-B tokens that start each synthetic sequence
    gen_tokens: int = 224  # tokens the teacher adds; prompt + gen is also the real sets' chunk length
    challenge_share: float = 0.5  # each seed picks hardest / middle / easiest from this random share of the chunks
    dev_test_tokens: int = 60_000  # the test split's first tokens: the dev-test, never reported here
    heldout_tokens: int = 120_000  # the held-out slice: this many tokens after the dev-test (0: all the rest of
                                   # the test split, 226K on Wikitext-2)
    article_cut: bool = False  # move both ends of the held-out slice to the nearest article start (data/articles.py)
    n_layer: int = 4  # scratch base (and so teacher and arms): transformer blocks
    n_head: int = 6  # scratch base: attention heads
    n_embd: int = 192  # scratch base: model width
    base_steps: int = 160  # base: optimizer steps on part A (batch_tokens each); best.pt by val loss
    base_lr: float = 3e-3  # base: peak learning rate (cosine to 1/20 of it)
    teacher_steps: int = 80  # teacher: steps of fine-tuning the base on the whole train split; best.pt by val
    teacher_lr: float = 1e-3  # teacher: peak learning rate
    arm_steps: int = 20  # every arm (base continued, KD student): the same optimizer steps (4.6 passes over a set)
    arm_lr: float = 1e-3  # every arm's peak learning rate (a continued model: the teacher's fine-tuning rate)
    dropout: float = 0.1  # dropout in every training run
    kd_alphas: list[float] = field(default_factory=lambda: [1.0, -1.0])  # KD students: the synthetic sets they
                                                                         # train on (at kd_min_p), and the real subset
    kd_min_p: float = 0.1  # KD students: the plausible set of their synthetic sets (the pipeline's)
    kd_weights: list[float] = field(default_factory=lambda: [1.0, 0.5])  # KD loss weight w: w T^2 KL + (1-w) CE;
                                                                         # 1 is soft targets only (a sampled token
                                                                         # is then an input, not a target), 0.5
                                                                         # the pipeline's mix
    challenge: bool = True  # the hardest / middle / easiest real chunks by the base (the second edition's arms)
    # The third edition's arms (issue 28), each off when its list is empty; their synthetic part is drawn at
    # extra_min_p (the wider plausible set), and each arm has the real arm's size and steps:
    extra_min_p: float = 0.002  # the plausible set of the mixtures, edits, deduplicated sets and second recipe
    mix_shares: list[float] = field(default_factory=list)  # mixtures: this share of real text (part B's, the real
                                                            # arm's own sequences), the rest drawn at each mix_alpha
    mix_alphas: list[float] = field(default_factory=lambda: [1.0, -1.0])  # the synthetic part of every mixture
    less_data_shares: list[float] = field(default_factory=list)  # real text alone at this share of set_tokens, the
                                                                  # same steps: "similar performance, less data"
    edit_alphas: list[float] = field(default_factory=list)  # token-edit sets: real chunks with edit_share of their
    edit_share: float = 0.15                                 # positions redrawn by the teacher with p^alpha
    dedup_alphas: list[float] = field(default_factory=list)  # synthetic sets deduplicated across sequences: a
    dedup_max_shared: float = 0.5                             # continuation sharing more than this of its 8-grams
                                                              # with earlier sequences is dropped
    prompt_loss_alphas: list[float] = field(default_factory=list)  # these sets again, the prompt out of the loss
    recipe_alphas: list[float] = field(default_factory=list)  # real text and these sets under a second recipe:
    recipe_lr: float = 3e-4                                    # this peak lr, the same steps
    side_seeds: int = 0  # the side arms (deduplicated sets, the prompt out of the loss, the second recipe) on
                         # the first this many seeds only; 0: on every seed
    curve_interval: int = 0  # every arm's val loss every this many steps (time to gain); 0: at its end only. The
                             # arm's evaluated weights are its last step's either way
    curve_tokens: int = 8192  # the curves score the val split's first this many tokens (a fixed slice)
    seq_len: int = 256  # training rows, evaluation windows (disjoint: stride = seq_len) and scored chunks
    batch_tokens: int = 4096  # tokens per optimizer step
    micro_batch_size: int | None = None  # rows per forward pass (lower it if memory runs out); None: the whole step
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"

    @property
    def pretrains_base(self) -> bool:
        return self.base_init == "scratch"

    def __post_init__(self) -> None:
        if not self.seeds or not self.alphas or not self.min_ps:
            raise ValueError("--seeds, --alphas and --min_ps must each list at least one value")
        require_positive(self, "curve_tokens", "set_tokens", "base_steps", "teacher_steps", "arm_steps", "seq_len",
                         "batch_tokens", "micro_batch_size", "prompt_tokens", "gen_tokens")
        if (self.pretrains_base and not 0 < self.part_a_share < 1) or not 0 < self.challenge_share <= 1:
            raise ValueError("need 0 < --part_a_share < 1 and 0 < --challenge_share <= 1")
        if any(a not in self.alphas for a in self.kd_alphas) or self.kd_min_p not in self.min_ps:
            raise ValueError("--kd_alphas must be among --alphas and --kd_min_p among --min_ps (their sets are made)")
        extra = [*(self.mix_alphas if self.mix_shares else []), *self.prompt_loss_alphas, *self.recipe_alphas]
        if extra and (self.extra_min_p not in self.min_ps or any(a not in self.alphas for a in extra)):
            raise ValueError("--mix_alphas, --prompt_loss_alphas and --recipe_alphas must be among --alphas, and "
                             "--extra_min_p among --min_ps (they train on those sets)")
        if any(not 0 < s < 1 for s in [*self.mix_shares, *self.less_data_shares, self.edit_share,
                                        self.dedup_max_shared]):
            raise ValueError("--mix_shares, --less_data_shares, --edit_share and --dedup_max_shared must lie in (0, 1)")
        if self.side_seeds < 0 or self.curve_interval < 0:
            raise ValueError("--side_seeds and --curve_interval must be >= 0 (0: every seed; no curve)")
        if self.prompt_tokens + self.gen_tokens > self.seq_len:
            raise ValueError(f"--prompt_tokens + --gen_tokens = {self.prompt_tokens + self.gen_tokens} must fit the "
                             f"models' context, --seq_len {self.seq_len}")
        if self.dev_test_tokens < 0 or self.heldout_tokens < 0:
            raise ValueError("--dev_test_tokens and --heldout_tokens must be >= 0 (0 heldout: to the end of the split)")


def set_name(alpha: float, min_p: float) -> str:
    return f"alpha={alpha:g},min_p={min_p:g}"  # the sweep's spelling of a set at a named min_p


REAL, CHALLENGE, PART_B, PART_A = "real", ("hardest", "middle", "easiest"), "part-b", "part-a"


@dataclass(frozen=True)
class Arm:
    """The base continued for arm_steps on one set: its name, the set it trains on, the train.py flags it adds to
    the arms' recipe, what it is, and the arm it is contrasted with, paired by seed."""

    name: str
    data: str
    what: str
    reference: str = REAL
    train: tuple[tuple[str, object], ...] = ()
    side: bool = False  # a side arm: run on the first side_seeds seeds only, where that is set


def mix_name(share: float, synthetic: str) -> str:
    return f"real{share:g}+{synthetic}"


def edit_name(share: float, alpha: float, min_p: float) -> str:
    return f"edit{share:g},{set_name(alpha, min_p)}"


def arms(cfg: RetrainConfig) -> list[Arm]:
    """Every arm, in the report's order: the synthetic sets, real text of the same size, the challenge sets, the
    brackets (the whole of part B; part A: no new data, only where the base was pretrained here), then the third
    edition's: less real data, mixtures, token edits, deduplicated sets, the prompt out of the loss, a second recipe."""
    m, out = cfg.extra_min_p, [Arm(set_name(a, p), set_name(a, p), "teacher's continuations, p^{:g} in p ≥ {:g} "
                                   "p_max".format(a, p)) for p in cfg.min_ps for a in cfg.alphas]
    out += [Arm(n, n, WHAT[n]) for n in [REAL, *(CHALLENGE if cfg.challenge else ()), PART_B]]
    out += [Arm(PART_A, PART_A, WHAT[PART_A])] if cfg.pretrains_base else []
    out += [Arm(f"real{s:g}", f"real{s:g}", f"real text alone, {s:g} of the size") for s in cfg.less_data_shares]
    out += [Arm(mix_name(s, set_name(a, m)), mix_name(s, set_name(a, m)),
                f"{s:g} real text, the rest p^{a:g} continuations") for s in cfg.mix_shares for a in cfg.mix_alphas]
    out += [Arm(edit_name(cfg.edit_share, a, m), edit_name(cfg.edit_share, a, m),
                f"real chunks, {cfg.edit_share:g} of positions redrawn with p^{a:g}") for a in cfg.edit_alphas]
    out += [Arm(f"{set_name(a, m)},dedup", f"{set_name(a, m)},dedup", f"p^{a:g} continuations deduplicated across "
                f"sequences", set_name(a, m), side=True) for a in cfg.dedup_alphas]
    out += [Arm(f"{set_name(a, m)},no-prompt-loss", set_name(a, m), f"p^{a:g} continuations, prompts out of the loss",
                set_name(a, m), (("ignore_first_tokens", cfg.prompt_tokens),), side=True)
            for a in cfg.prompt_loss_alphas]
    if cfg.recipe_alphas:
        lr = cfg.recipe_lr
        recipe = [(REAL, WHAT[REAL])] + [(set_name(a, m), f"p^{a:g} continuations") for a in cfg.recipe_alphas]
        out += [Arm(f"{n}@lr={lr:g}", n, f"{what}, peak lr {lr:g}", f"{REAL}@lr={lr:g}", (("lr", lr),), side=True)
                for n, what in recipe]
    return out


def arm_names(cfg: RetrainConfig) -> list[str]:
    return [a.name for a in arms(cfg)]


def seed_arms(cfg: RetrainConfig, seed: int) -> list[Arm]:
    """The arms a seed runs: every arm, but the side arms only on the first side_seeds seeds (where set)."""
    main = not cfg.side_seeds or cfg.seeds.index(seed) < cfg.side_seeds
    return [a for a in arms(cfg) if main or not a.side]


def kd_names(cfg: RetrainConfig) -> list[tuple[str, str, float]]:
    """(student name, set, kd weight) of every KD student."""
    sets = [set_name(a, cfg.kd_min_p) for a in cfg.kd_alphas] + [REAL]
    return [(f"kd{w:g}-{s}", s, w) for w in cfg.kd_weights for s in sets]


WHAT = {REAL: "real text of part B, same size", "hardest": "part B's hardest chunks by the base",
        "middle": "part B's middle chunks by the base", "easiest": "part B's easiest chunks by the base",
        PART_B: "the whole of part B (ceiling)", PART_A: "part A again (no new data)"}


def plan_record(cfg: RetrainConfig, heldout: tuple[int, int]) -> dict:
    """What the report needs to know of the plan (plan.json): the seeds, the held-out slice of the test split, and
    every arm in order with what it is and the arm it is contrasted with, paired by seed."""
    out = [{"name": a.name, "what": a.what, "reference": a.reference} for a in arms(cfg)]
    out += [{"name": k, "what": f"student cut from the teacher, KD weight {w:g}, on {s}",
             "reference": f"kd{w:g}-{REAL}"} for k, s, w in kd_names(cfg)]
    return {"seeds": cfg.seeds, "heldout": list(heldout), "arms": out}


def same_settings(results: Path, cfg: RetrainConfig) -> None:
    """A resumed study must be the same study: refuse when results_dir holds one run with other settings (a
    setting it does not name, added since, had its default value then)."""
    path, now, default = results / "config.json", config_to_dict(cfg), config_to_dict(RetrainConfig())
    before = {**default, **json.loads(path.read_text())} if path.exists() else now
    diffs = [f"{k}={before.get(k)!r} there, {v!r} now" for k, v in now.items() if k != "device" and before.get(k) != v]
    if diffs:
        sys.exit(f"error: {path} holds a study with other settings ({'; '.join(diffs)}): resume it with its own "
                 "settings, or give another --results_dir and --work_dir (or delete those folders)")
