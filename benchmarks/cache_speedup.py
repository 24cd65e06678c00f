"""KV-cached against uncached generation, one timed run each (the uncached path is too slow on CPU for
bench.py's repeated runs at these lengths): gpt2 shape, random weights, batch 8, 16-token prompts,
greedy, N new tokens. Both paths must give the same tokens.

    python benchmarks/cache_speedup.py --new_tokens 256
"""

import argparse
import time

import torch

from gpt2 import GPT, GPTConfig
from gpt2.sampler import SamplingConfig, generate

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--new_tokens", type=int, default=256, help="tokens generated per row")
parser.add_argument("--batch_size", type=int, default=8, help="rows generated together")
args = parser.parse_args()

torch.manual_seed(0)
model = GPT(GPTConfig.from_name("gpt2")).eval()
prompt = torch.randint(0, model.config.vocab_size, (args.batch_size, 16))  # (B, 16)
greedy = SamplingConfig("greedy")
for use_cache in (True, False):  # warm-up: allocations, first calls
    generate(model, prompt, 2, strategy=greedy, use_cache=use_cache)
runs = {}
for use_cache in (True, False):
    t0 = time.perf_counter()
    out = generate(model, prompt, args.new_tokens, strategy=greedy, use_cache=use_cache)
    runs[use_cache] = (out.tokens, time.perf_counter() - t0)
    n = args.batch_size * args.new_tokens
    print(f"{'cached' if use_cache else 'uncached':>8}: {runs[use_cache][1]:7.1f} s  {n / runs[use_cache][1]:8.1f} tok/s")
assert torch.equal(runs[True][0], runs[False][0]), "cached and uncached generation gave different tokens"
print(f"same tokens; the KV cache is {runs[False][1] / runs[True][1]:.1f}x faster")
