"""A from-scratch GPT-2 toolkit: model, weights, tokenizer, sampler and metrics in plain PyTorch."""

from gpt2.config import PUBLISHED, GPTConfig
from gpt2.model import GPT, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "PUBLISHED"]
