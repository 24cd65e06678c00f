"""Dataset distillation: turn a fine-tuned teacher into a synthetic training set of its own text.

    python distill.py --teacher runs/finetune --out_dir shards/distilled-a-1            # alpha -1 (the default)
    python distill.py --teacher runs/finetune --alpha 1 --out_dir shards/distilled-a1   # ordinary sampling

The command line over `data.distill.distill`, which says how a set is made (prompts from the real train
split, the teacher's continuations drawn with weight p^alpha inside the plausible set, a quality filter)
and what manifest.json and samples.txt record. The settings are `data.distill.DistillConfig`'s fields.
"""

from __future__ import annotations

import sys

from data.distill import DistillConfig, DistillError, distill
from data.shards import ShardError
from gpt2.cli import config_to_dict, parse_config


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(DistillConfig, argv)
    print(config_to_dict(cfg))
    try:
        manifest = distill(cfg, argv)
    except (DistillError, FileNotFoundError, ShardError, ValueError) as e:
        sys.exit(f"error: {e}")
    c, q, f = manifest["counts"], manifest["quality"], manifest["filter"]
    print(f"{cfg.out_dir}: {c['tokens']:,} tokens in {c['sequences']:,} sequences ({c['prompt_tokens']:,} prompt, "
          f"{c['generated_tokens']:,} generated, {c['separator_tokens']:,} separators); dropped {f['dropped']}; "
          f"mean surprisal {q['mean_surprisal_nats']:.3f} nats, distinct-1/2/3 {q['distinct_1']:.3f}/"
          f"{q['distinct_2']:.3f}/{q['distinct_3']:.3f}, repeated 4-grams {q['repeated_4gram_fraction']:.3f}; "
          f"{manifest['timing']['generated_tokens_per_s']:,.0f} generated tok/s")
    return manifest


if __name__ == "__main__":
    main()
