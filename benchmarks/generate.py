"""Generation speed: our cached decoding, our uncached decoding (the whole sequence recomputed for
every token) and transformers' `GPT2LMHeadModel.generate`, all greedy, on the same random weights.

    python benchmarks/generate.py                     # gpt2 shape, batch 8, prompt 16, 512 new tokens
    python benchmarks/generate.py --new_tokens 64     # quicker, while iterating

Every path generates exactly `new_tokens` per row (transformers with min_new_tokens = max_new_tokens,
ours with no stop token), prefill included in the time. Each path is warmed up once on a short run,
the cached paths are timed alternately (so that load from other processes hits both alike), and the
median of the runs is reported. The table goes to stdout, everything else to the JSON file.
transformers is a test-only reference: only this script and the tests import it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from gpt2 import GPT, GPTConfig
from gpt2.cli import config_to_dict, parse_config
from gpt2.sampler import SamplingConfig, generate
from gpt2.weights import CONV1D


@dataclass
class BenchConfig:
    """Time greedy generation with and without the KV cache, and against transformers."""

    model: str = "gpt2"  # published shape to build with random weights (nothing is downloaded)
    batch_size: int = 8  # rows generated together
    prompt_len: int = 16  # prompt tokens per row (random ids)
    new_tokens: int = 512  # tokens generated per row, on every path
    runs: int = 3  # timed runs of each cached path (ours, transformers); the median is reported
    uncached_runs: int = 1  # timed runs of our uncached path: it recomputes the whole sequence per token
    uncached: bool = True  # time the uncached path at all (--no-uncached leaves it out)
    transformers: bool = True  # time transformers' generate (--no-transformers leaves it out)
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default
    seed: int = 0  # seeds the weights and the prompt
    out: str = "bench_generate.json"  # where the JSON results go


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def hf_twin(model: GPT):
    """transformers' GPT2LMHeadModel holding exactly our weights (Conv1D weights transposed back)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(**model.config.to_hf_dict())).eval()
    state = {k: v.t() if k.endswith(CONV1D) else v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing), (missing, unexpected)
    return hf


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BenchConfig, argv)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    print(config_to_dict(cfg))
    model = GPT(GPTConfig.from_name(cfg.model), seed=cfg.seed).eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    prompt = torch.randint(0, model.config.vocab_size, (cfg.batch_size, cfg.prompt_len), generator=gen)
    greedy = SamplingConfig("greedy")

    paths = {"ours_cached": lambda n: generate(model, prompt, n, strategy=greedy).tokens}
    if cfg.transformers:
        hf = hf_twin(model)
        mask = torch.ones_like(prompt)

        def hf_generate(n):
            with torch.inference_mode():
                return hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                   min_new_tokens=n, pad_token_id=0)

        paths["transformers"] = hf_generate
    if cfg.uncached:
        paths["ours_uncached"] = lambda n: generate(model, prompt, n, strategy=greedy, use_cache=False).tokens

    for fn in paths.values():  # warm-up: allocator, thread pool, first-call overheads
        fn(8)
    seconds = {name: [] for name in paths}
    tokens = {}
    for _ in range(cfg.runs):  # alternate the cached paths so that background load hits them alike
        for name in ("ours_cached", "transformers"):
            if name in paths:
                s, tokens[name] = timed(lambda: paths[name](cfg.new_tokens))
                seconds[name].append(s)
                print(f"  {name}: {s:.2f} s")
    for _ in range(cfg.uncached_runs if cfg.uncached else 0):
        s, tokens["ours_uncached"] = timed(lambda: paths["ours_uncached"](cfg.new_tokens))
        seconds["ours_uncached"].append(s)
        print(f"  ours_uncached: {s:.2f} s")

    generated = cfg.batch_size * cfg.new_tokens
    results = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        results[name] = {"seconds": times, "median_s": median, "tokens_per_s": generated / median,
                         "ms_per_step": 1e3 * median / cfg.new_tokens}
    ratios = {}
    if "ours_uncached" in results:
        ratios["cached_over_uncached"] = results["ours_cached"]["tokens_per_s"] / results["ours_uncached"]["tokens_per_s"]
    if "transformers" in results:
        ratios["cached_over_transformers"] = results["ours_cached"]["tokens_per_s"] / results["transformers"]["tokens_per_s"]
    agree = {name: (t == tokens["ours_cached"]).float().mean().item() for name, t in tokens.items() if name != "ours_cached"}

    try:
        from transformers import __version__ as transformers_version
    except ImportError:
        transformers_version = None
    report = {
        "config": config_to_dict(cfg), "results": results, "ratios": ratios,
        "token_agreement_with_ours_cached": agree,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_end": os.getloadavg(), "torch": torch.__version__,
                    "transformers": transformers_version},
    }
    print(f"\n{'path':<15} {'median s':>9} {'tokens/s':>9} {'ms/step':>8}")
    for name, r in results.items():
        print(f"{name:<15} {r['median_s']:>9.2f} {r['tokens_per_s']:>9.1f} {r['ms_per_step']:>8.1f}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(f"greedy tokens equal to ours_cached: {agree}")
    with open(cfg.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {cfg.out}")
    return report


if __name__ == "__main__":
    main()
