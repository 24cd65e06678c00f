"""Train GPT-2 on token shards: fine-tune a published checkpoint, or train a small model from scratch.

    python train.py --data_dir shards/wikitext2 --out_dir runs/finetune            # fine-tune gpt2
    python train.py --init scratch --n_layer 4 --n_head 4 --n_embd 128 ...         # a tiny model
    torchrun --nproc_per_node 8 train.py ...                                       # data parallel
    torchrun --nproc_per_node 8 train.py --fsdp --activation_checkpointing ...     # sharded (gpt2/distributed.py)
    python train.py ... --resume                                                   # continue out_dir

The command line over `gpt2.trainer.train` (the run: its loop, files and checkpoints), fed the shards of
--data_dir by `data.loader.training_data`; the settings are `gpt2.train_config.TrainConfig`'s fields.
The run directory gets run.json, log.jsonl, latest.pt (everything to resume) and best.pt.
"""

from __future__ import annotations

import sys

import torch

from data.loader import training_data
from gpt2.checkpoint import CheckpointError
from gpt2.cli import parse_config
from gpt2.train_config import TrainConfig
from gpt2.trainer import train
from gpt2.training import TrainingStopped


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainConfig, argv)
    try:
        train(cfg, training_data(cfg))
    except torch.cuda.OutOfMemoryError:
        sys.exit(f"error: out of GPU memory at --micro_batch_size {cfg.micro_batch_size} x --seq_len {cfg.seq_len}. "
                 f"Try --micro_batch_size {max(1, cfg.micro_batch_size // 2)}: --total_batch_tokens "
                 f"{cfg.total_batch_tokens} stays, so gradient accumulation doubles and the run is the same.")
    except (TrainingStopped, CheckpointError, FileNotFoundError, ValueError) as e:
        # ValueError covers ShardError (data), WeightsError (--init) and invalid shapes: user mistakes
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
