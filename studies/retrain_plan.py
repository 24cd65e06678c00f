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
    seq_len: int = 256  # training rows, evaluation windows (disjoint: stride = seq_len) and scored chunks
    batch_tokens: int = 4096  # tokens per optimizer step
    micro_batch_size: int | None = None  # rows per forward pass (lower it if memory runs out); None: the whole step
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"

    @property
    def pretrains_base(self) -> bool:
        return self.base_init == "scratch"

    def __post_init__(self) -> None:
        if not self.seeds or not self.alphas or not self.min_ps or not self.kd_weights:
            raise ValueError("--seeds, --alphas, --min_ps and --kd_weights must each list at least one value")
        require_positive(self, "set_tokens", "base_steps", "teacher_steps", "arm_steps", "seq_len", "batch_tokens",
                         "micro_batch_size", "prompt_tokens", "gen_tokens")
        if (self.pretrains_base and not 0 < self.part_a_share < 1) or not 0 < self.challenge_share <= 1:
            raise ValueError("need 0 < --part_a_share < 1 and 0 < --challenge_share <= 1")
        if any(a not in self.alphas for a in self.kd_alphas) or self.kd_min_p not in self.min_ps:
            raise ValueError("--kd_alphas must be among --alphas and --kd_min_p among --min_ps (their sets are made)")
        if self.prompt_tokens + self.gen_tokens > self.seq_len:
            raise ValueError(f"--prompt_tokens + --gen_tokens = {self.prompt_tokens + self.gen_tokens} must fit the "
                             f"models' context, --seq_len {self.seq_len}")
        if self.dev_test_tokens < 0 or self.heldout_tokens < 0:
            raise ValueError("--dev_test_tokens and --heldout_tokens must be >= 0 (0 heldout: to the end of the split)")


def set_name(alpha: float, min_p: float) -> str:
    return f"alpha={alpha:g},min_p={min_p:g}"  # the sweep's spelling of a set at a named min_p


REAL, CHALLENGE, PART_B, PART_A = "real", ("hardest", "middle", "easiest"), "part-b", "part-a"


def arm_names(cfg: RetrainConfig) -> list[str]:
    """The base continued: on each synthetic set, real text of the same size, the challenging chunks,
    the whole of part B (the ceiling) and part A (no new data; only where the base was pretrained here)."""
    brackets = [PART_B, PART_A] if cfg.pretrains_base else [PART_B]
    return [set_name(a, m) for m in cfg.min_ps for a in cfg.alphas] + [REAL, *CHALLENGE, *brackets]


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
    arms = [{"name": n, "what": WHAT.get(n) or "teacher's continuations, p^{} in p ≥ {} p_max".format(
        *n.removeprefix("alpha=").split(",min_p=")), "reference": REAL} for n in arm_names(cfg)]
    arms += [{"name": k, "what": f"student cut from the teacher, KD weight {w:g}, on {s}",
              "reference": f"kd{w:g}-{REAL}"} for k, s, w in kd_names(cfg)]
    return {"seeds": cfg.seeds, "heldout": list(heldout), "arms": arms}


def same_settings(results: Path, cfg: RetrainConfig) -> None:
    """A resumed study must be the same study: refuse when results_dir holds one run with other settings (a
    setting it does not name, added since, had its default value then)."""
    path, now, default = results / "config.json", config_to_dict(cfg), config_to_dict(RetrainConfig())
    before = {**default, **json.loads(path.read_text())} if path.exists() else now
    diffs = [f"{k}={before.get(k)!r} there, {v!r} now" for k, v in now.items() if k != "device" and before.get(k) != v]
    if diffs:
        sys.exit(f"error: {path} holds a study with other settings ({'; '.join(diffs)}): resume it with its own "
                 "settings, or give another --results_dir and --work_dir (or delete those folders)")
