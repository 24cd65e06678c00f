"""Evaluate one model on one split: perplexity, and BLEU / ROUGE of greedy continuations.

    python evaluate.py --model gpt2                      # the published 124M model, shards/wikitext2 test
    python evaluate.py --model runs/finetune             # a train.py run (its best.pt)
    python evaluate.py --model runs/finetune --device cpu --max_eval_tokens 4096 --gen_passages 8   # quick

The command line over `gpt2.evaluation` (which says what is measured and how): the split's shards read
here, the results measured there, then kept: a row in the markdown table (--table; a rerun replaces its
row), printed at the end, and every figure in a JSON file (--out_json). The settings are
`gpt2.evaluation.EvalConfig`'s fields.
"""

from __future__ import annotations

import json
import sys

import torch

from data.loader import SplitTokens
from data.shards import ShardError
from gpt2.cli import config_to_dict, parse_config
from gpt2.evaluation import EvalConfig, EvalError, evaluate, save_results, table_rows


def train_split(data_dir: str) -> SplitTokens | None:
    """The train split beside the evaluated one (its token frequencies), or None when the folder has none."""
    try:
        return SplitTokens(data_dir, "train")
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(EvalConfig, argv)
    print(json.dumps(config_to_dict(cfg)))
    try:
        table_rows(cfg.table)  # a table we may not rewrite: say so now, not after the work
        split = SplitTokens(cfg.data_dir, cfg.split)  # fails first, and fast, when the data is missing
        results = evaluate(cfg, split, train_split(cfg.data_dir))
    except (EvalError, FileNotFoundError, ShardError) as e:  # FileNotFoundError: no such split (names `make data`)
        sys.exit(f"error: {e}")
    except torch.cuda.OutOfMemoryError:
        sys.exit(f"error: out of GPU memory; lower --batch_size ({cfg.batch_size}) or --gen_batch_size "
                 f"({cfg.gen_batch_size})")
    table = save_results(cfg, results)
    ppl, gen = results["perplexity"], results["generation"]
    print(f"{cfg.name}: ppl {ppl['ppl']:.2f}, word ppl {ppl['word_ppl']:.2f}, bits/byte {ppl['bits_per_byte']:.4f}, "
          f"BLEU {gen['bleu']:.2f}, ROUGE-1/2/L {gen['rouge1']:.4f}/{gen['rouge2']:.4f}/{gen['rougeL']:.4f}")
    print(f"\n{cfg.table}:\n{table}")
    return {**results, "table": table}


if __name__ == "__main__":
    main()
