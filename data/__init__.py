"""Token data: llm.c-format shards (data.shards), training and evaluation batches (data.loader), and the
command that writes the shards (`python -m data.prepare`)."""

from data.loader import EvalBatches, SplitTokens, TrainBatches, eval_windows
from data.shards import ShardError, open_shard, read_header, write_shard

__all__ = ["EvalBatches", "ShardError", "SplitTokens", "TrainBatches", "eval_windows", "open_shard", "read_header", "write_shard"]
