"""Token data: llm.c-format shards (data.shards), the splits and training batches (data.loader), and the
command that writes the shards (`python -m data.prepare`)."""

from data.loader import SplitTokens, TrainBatches
from data.shards import ShardError, open_shard, read_header, write_shard

__all__ = ["ShardError", "SplitTokens", "TrainBatches", "open_shard", "read_header", "write_shard"]
