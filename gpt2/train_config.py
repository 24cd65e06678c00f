"""The settings of one training run: train.py's command line, and what `gpt2/training.py` builds a step from.

It lives in the package, not in train.py, because more than one caller trains: benchmarks/bench.py times the
step a run takes, and the studies run many trainings; each builds a `TrainConfig` and hands it to the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpt2.cli import require_positive


@dataclass
class TrainConfig:
    """Train or fine-tune GPT-2 on token shards written by `python -m data.prepare`."""

    # model
    init: str = "gpt2"  # starting weights: a published name (gpt2, gpt2-medium, ...), a train.py checkpoint or
                        # run dir, a Hugging Face folder or .safetensors/.bin file, or "scratch" (random init)
    n_layer: int = 4  # init=scratch only: transformer blocks
    n_head: int = 4  # init=scratch only: attention heads per block
    n_embd: int = 128  # init=scratch only: model width (a multiple of n_head)
    dropout: float = 0.1  # dropout rate while training (embeddings, attention, residuals)
    init_layers: list[int] | None = None  # a smaller student: keep only these blocks of --init (e.g. 0 2 4 7 9 11,
                                          # DistilGPT2's choice for 12 layers); None: all of them
    # data
    data_dir: str = "shards/wikitext2"  # folder of train_*.bin / val_*.bin shards
    val_data_dir: str | None = None  # folder whose val split is evaluated; None: data_dir. Set it to the real
                                     # data when data_dir is a distilled set (which has no val split)
    out_dir: str = "runs/finetune"  # run directory: run.json, log.jsonl, latest.pt, best.pt
    seq_len: int = 1024  # tokens per training row; also the context of a scratch model
    micro_batch_size: int = 16  # rows per forward/backward pass; lower it if memory runs out
    total_batch_tokens: int = 32768  # tokens per optimizer step, over all micro-batches and processes
    ignore_first_tokens: int = 0  # targets among the first N tokens after each <|endoftext|> separator are left
                                  # out of the loss (a distilled set's real prompt: 32); a split without any
                                  # separator: every target counts. 0: every target counts
    # optimisation
    lr: float = 1e-4  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-5  # learning rate at the end of the cosine decay
    warmup_steps: int = 20  # linear warmup from lr / warmup_steps to lr
    max_steps: int | None = None  # optimizer steps in total; None: derived from epochs
    epochs: float = 3.0  # passes over the train split, used when max_steps is None
    weight_decay: float = 0.1  # AdamW decoupled decay, on matrices and embeddings only (not biases, LayerNorm)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    # knowledge distillation (gpt2/kd.py)
    teacher: str | None = None  # a frozen model whose softened distribution the loss also matches (any --init
                                # source but scratch); None: plain next-token cross-entropy
    kd_temperature: float = 2.0  # with --teacher: softmax temperature T of both distributions
    kd_weight: float = 0.5  # with --teacher: loss = w * T^2 * KL(teacher || model) + (1 - w) * cross-entropy, w = kd_weight
    # hardware and precision
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # autocast precision; auto: bf16 on CUDA that has it,
                                                              # fp16 with loss scaling on older CUDA; on a CPU,
                                                              # bf16 with bf16 units (AMX, AVX512-BF16), else fp32
    compile: bool | None = None  # torch.compile the model; None: on for CUDA, off for CPU
    fsdp: bool = False  # under torchrun: shard weights, gradients and AdamW moments over the processes (FSDP2)
                        # instead of a whole copy on each (DDP); for models whose training state outgrows one GPU
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass: far less
                                            # activation memory, for a second forward pass (~1/3 more FLOPs)
    seed: int = 1337  # seeds data order and dropout
    # evaluation, logging, checkpoints
    eval_interval: int = 50  # evaluate the whole val split (and write latest.pt) every this many steps
    eval_tokens: int | None = None  # evaluate only the val split's first this many tokens (a fixed slice, for
                                    # frequent evaluations); None: all of it
    eval_stride: int | None = None  # evaluation window stride; None: seq_len (disjoint windows)
    eval_batch_size: int = 8  # rows per evaluation forward pass
    log_interval: int = 1  # refresh the progress bar every this many steps (log.jsonl records every step)
    checkpoint_interval: int | None = None  # also write latest.pt every this many steps; None: only at evaluations
    resume: bool = False  # continue the run in out_dir from its latest.pt

    def __post_init__(self) -> None:
        require_positive(self, "n_layer", "n_head", "n_embd", "seq_len", "micro_batch_size", "total_batch_tokens",
                         "eval_interval", "eval_batch_size", "log_interval", "max_steps", "eval_stride",
                         "checkpoint_interval", "eval_tokens")
        if self.ignore_first_tokens < 0:
            raise ValueError(f"--ignore_first_tokens must be >= 0 (0 scores every target), got {self.ignore_first_tokens}")
        if self.epochs <= 0 and self.max_steps is None:
            raise ValueError(f"--epochs must be positive, got {self.epochs}")
        if self.init == "scratch" and self.n_embd % self.n_head:
            raise ValueError(f"--n_embd {self.n_embd} is not a multiple of --n_head {self.n_head}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= --min_lr <= --lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.init_layers is not None and self.init == "scratch":
            raise ValueError("--init_layers picks blocks of a trained model; it cannot be used with --init scratch")
        if not self.kd_temperature > 0 or not 0 <= self.kd_weight <= 1:
            raise ValueError(f"need --kd_temperature > 0 and 0 <= --kd_weight <= 1, got {self.kd_temperature}, {self.kd_weight}")
