"""gpt2/compat.py: each feature check takes the new API where torch has it, and falls back where a torch
older than this one (2.6 .. 2.12) lacks it. The older behaviour is faked here by replacing the API with
one of the old signature; on the GPU machines' torch these tests run as they are (gpu_check.sh)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from gpt2 import compat

REPO = Path(__file__).resolve().parents[1]


def test_takes_argument_reads_signatures_and_survives_builtins():
    assert compat.takes_argument(lambda t, guard=True: None, "guard")
    assert not compat.takes_argument(lambda t: None, "guard")
    assert compat.takes_argument(print, "guard") is False  # a builtin, whether or not its signature can be read


def test_mark_static_address_without_a_guard_where_it_takes_one():
    t = torch.zeros(3)
    compat.mark_static_address(t)  # this torch: guard=False (from torch 2.10 also the default)
    assert t._dynamo_static_input_type == "unguarded"


def test_mark_static_address_on_a_torch_whose_guard_default_is_true(monkeypatch):
    calls = []
    monkeypatch.setattr(torch._dynamo, "mark_static_address", lambda t, guard=True: calls.append(guard))
    compat.mark_static_address(torch.zeros(1))
    assert calls == [False]  # the old default (True: recompile on a new address) is overridden


def test_mark_static_address_on_a_torch_without_the_argument(monkeypatch):
    calls = []
    monkeypatch.setattr(torch._dynamo, "mark_static_address", lambda t: calls.append(t))
    compat.mark_static_address(t := torch.zeros(1))
    assert calls == [t]


def test_recompile_limit_names_new_and_old(monkeypatch):
    assert compat.recompile_limit_hit() is torch._dynamo.exc.FailOnRecompileLimitHit
    assert compat.recompile_limit_field() == "recompile_limit"

    class FailOnCacheLimitHit(Exception):
        pass

    monkeypatch.setattr(torch._dynamo, "exc", SimpleNamespace(FailOnCacheLimitHit=FailOnCacheLimitHit))  # 2.6
    monkeypatch.setattr(torch._dynamo, "config", SimpleNamespace(cache_size_limit=8))
    assert compat.recompile_limit_hit() is FailOnCacheLimitHit
    assert compat.recompile_limit_field() == "cache_size_limit"


@pytest.mark.parametrize("capability,old_signature,expected", [
    ((9, 0), False, True), ((7, 0), False, False), ((9, 0), True, True), ((7, 0), True, False)])
def test_cuda_computes_bf16_new_and_old(monkeypatch, capability, old_signature, expected):
    """An emulating GPU (compute capability 7.x) says True to is_bf16_supported() by default: bf16 only
    when it computes in it, asked of the new argument or, on a torch without it, of the capability."""
    computes = capability >= (8, 0)
    if old_signature:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    else:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: computes or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert compat.cuda_computes_bf16() is expected


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("old_signature", [False, True])
def test_distribute_local_cuts_the_whole_tensor_like_the_shard(one_process_group, monkeypatch, old_signature):
    import torch.distributed.tensor as dt

    mesh = dt.DeviceMesh("cpu", [0])
    like = dt.distribute_tensor(torch.zeros(4, 3), mesh, [dt.Shard(0)])
    calls = []
    if old_signature:  # torch 2.6: no src_data_rank (rank 0's copy is scattered)
        real = dt.distribute_tensor
        monkeypatch.setattr(dt, "distribute_tensor", lambda t, mesh=None, placements=None:
                            calls.append("old") or real(t, mesh, placements))
    value = torch.arange(12.0).reshape(4, 3)
    out = compat.distribute_local(value, like=like)
    assert isinstance(out, dt.DTensor) and out.placements == like.placements and torch.equal(out.full_tensor(), value)
    assert calls == (["old"] if old_signature else [])


def test_the_changed_apis_are_called_through_compat_only():
    """The product code reaches the APIs that changed since torch 2.6 only through gpt2/compat.py."""
    changed = re.compile(r"_dynamo\.mark_static_address|FailOn\w*LimitHit|src_data_rank|including_emulation|"
                         r"cache_size_limit|torch\.distributed\._composable|torch\.distributed\._tensor")
    files = [p for p in [*REPO.glob("*.py"), *REPO.glob("gpt2/**/*.py"), *REPO.glob("data/**/*.py"),
                         *REPO.glob("benchmarks/**/*.py"), *REPO.glob("studies/**/*.py")] if p.name != "compat.py"]
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
                 if changed.search(line) and not line.lstrip().startswith("#")]
    assert not offenders, offenders
