"""Print continuations of a prompt: look at what a model learned (nanoGPT's sample.py).

    python sample.py --model gpt2 --prompt "The meaning of life" --alpha -1 --min_p 0.1
    python sample.py --model runs/finetune --strategy greedy --max_new_tokens 100

--model takes what train.py's --init takes: a published name, a Hugging Face GPT-2 folder, or a
train.py run or checkpoint. The sampling flags are gpt2.sampler.SamplingConfig's.

Made for a short look: the weights are stored in the device's precision (--dtype auto: bf16 on a GPU
that computes in it, the rule of every script, gpt2/device.py) and the decode step runs eagerly. One
call decodes at most the context (1,024 tokens for gpt2), too few steps to win back what torch.compile
spends before the first token (tens of seconds on a GPU); --compile is for a job that calls generate()
many times in one process (distill.py, evaluate.py: there it is the CUDA default).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Literal

import torch

from gpt2 import tokenizer
from gpt2.checkpoint import CheckpointError, load_model
from gpt2.cli import config_to_dict, parse_config
from gpt2.device import resolve_device_and_dtype
from gpt2.sampler import ContextPolicy, SamplingConfig, generate
from gpt2.weights import DownloadError, WeightsError


@dataclass
class SampleConfig(SamplingConfig):
    """Print continuations of a prompt, e.g.
    python sample.py --model gpt2 --prompt "The meaning of life" --alpha -1 --min_p 0.1"""

    model: str = "gpt2"  # a published name, a Hugging Face GPT-2 directory or a train.py checkpoint
    prompt: str = ""  # text to continue; empty starts from <|endoftext|>
    max_new_tokens: int = 64  # tokens generated per continuation (fewer if <|endoftext|> comes first)
    num_samples: int = 3  # continuations of the prompt, generated together as one batch
    seed: int = 0  # seeds the sampling generator: the same seed prints the same continuations
    stop_at_eot: bool = True  # end a continuation at <|endoftext|>
    on_context_full: ContextPolicy = "stop"  # at the context length: stop, or keep the last half
    device: str = "auto"  # cpu, cuda, cuda:1, ...; auto picks cuda when available
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # the weights for generation; auto: the device's rule
                                                              # (gpt2/device.py: bf16 on a GPU that computes in it)
    compile: bool = False  # torch.compile the decode step (CUDA graphs on CUDA): pays only past thousands of
                           # decode steps in one process, more than one call makes (see the top of this file)


def main(argv: list[str] | None = None) -> None:
    args = parse_config(SampleConfig, argv)
    print(config_to_dict(args))
    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    print(f"{device}, weights in {str(dtype).removeprefix('torch.')}, {'compiled' if args.compile else 'eager'} decoding")
    sampling = SamplingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)})
    try:
        ids = tokenizer.encode(args.prompt) or [tokenizer.EOT_ID]
        model = load_model(args.model, device=device, dtype=dtype)  # stored in the precision: no per-step casts
        prompt = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)  # (num_samples, T0)
        out = generate(model, prompt, args.max_new_tokens, sampling=sampling, seed=args.seed,
                       stop_token=tokenizer.EOT_ID if args.stop_at_eot else None, on_context_full=args.on_context_full,
                       compile=args.compile)
    except (RuntimeError, CheckpointError, WeightsError, DownloadError, ValueError) as e:
        sys.exit(f"error: {e}")  # RuntimeError: the BPE files are neither cached nor downloadable
    for i in range(args.num_samples):
        n = int(out.lengths[i])
        mean = out.logprobs[i, :n].mean().item() if n else float("nan")
        print(f"\n=== sample {i}: {n} tokens, mean log p {mean:.3f} (model distribution) ===")
        print(args.prompt + tokenizer.decode(out.new_tokens[i, :n].tolist()))


if __name__ == "__main__":
    main()
