"""FSDP under bf16 computes what autocast computes (gpt2/distributed.py's shard): in one process (a gloo
group of one, on the CPU) the sharded model's loss and every gradient equal plain autocast's bit for bit,
with and without activation checkpointing, and its residual stream stays float32 as autocast's does.
(Two processes against one, where only the order of the gradient sums differs: tests/test_fsdp.py.)"""

from __future__ import annotations

import pytest
import torch

from gpt2.config import GPTConfig
from gpt2.distributed import checkpoint_blocks, shard
from gpt2.losses import linear_cross_entropy
from gpt2.model import GPT

CONFIG = GPTConfig(vocab_size=64, n_positions=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


@pytest.fixture
def group_of_one():
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def step(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict, set]:
    """(loss, name -> whole float32 gradient, the (input, output) dtypes of every block) of one bf16 step."""
    dtypes = set()
    for block in model.transformer.h:  # registered after FSDP's hooks: sees what the block itself sees
        block.register_forward_hook(lambda module, args, out: dtypes.add((args[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(idx, return_hidden=True)  # the loss as the training step takes it
        loss = linear_cross_entropy(hidden, model.lm_head.weight, targets)
    loss.backward()
    grads = {name: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
             for name, p in model.named_parameters()}
    return loss.detach(), grads, dtypes


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sharded_bf16_is_autocast_bit_for_bit(group_of_one, one_thread, checkpointing):
    idx, targets = torch.randint(0, CONFIG.vocab_size, (2, 4, 16))
    plain, sharded = GPT(CONFIG, seed=1), GPT(CONFIG, seed=1)
    if checkpointing:
        checkpoint_blocks(sharded)
    shard(sharded, torch.bfloat16)
    loss, grads, dtypes = step(sharded, idx, targets)
    ref_loss, ref_grads, ref_dtypes = step(plain, idx, targets)

    assert dtypes == ref_dtypes == {(torch.float32, torch.float32)}  # the residual stream, in and out of blocks
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.equal(grad, ref_grads[name]), name
