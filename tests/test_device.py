"""The one rule for device and precision that every script uses."""

import pytest
import torch

from conftest import fp32_precision, set_fp32_precision
from gpt2.device import configure, resolve_device_and_dtype


def test_cpu_defaults_to_fp32_and_honours_an_explicit_dtype():
    assert resolve_device_and_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device_and_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_and_dtype("cpu", "fp16")[1] == torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of device=auto")
def test_auto_falls_back_to_cpu_without_cuda():
    assert resolve_device_and_dtype("auto", "auto", local_rank=3) == (torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("computes_in_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_bf16_only_on_gpus_that_compute_in_it(monkeypatch, computes_in_bf16, expected):
    """A V100 or T4 can hold bf16 tensors (is_bf16_supported() is True there by default) but emulates the
    arithmetic: the rule asks for native bf16 only, and those GPUs take fp16 with loss scaling."""
    calls = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return computes_in_bf16 or including_emulation  # an emulating GPU: True unless emulation is ruled out

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_device_and_dtype("auto", "auto", local_rank=1) == (torch.device("cuda", 1), expected)
    assert calls == [False]


def test_cuda_setup_turns_on_tf32_and_the_tests_take_it_back():
    """configure() sets process-wide TF32 switches; conftest's set_fp32_precision (which every test's
    fixture runs) must put back exactly what was there. (The flags can be set without a GPU.)"""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    before = fp32_precision()
    configure(torch.device("cuda", 0))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert fp32_precision() != before
    set_fp32_precision(before)
    assert fp32_precision() == before and not torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.fp32_precision = "tf32"  # the newer per-operation switch, the other API
    set_fp32_precision(before)
    assert fp32_precision() == before and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bare_cuda_means_this_ranks_gpu_in_reduced_precision():
    device, dtype = resolve_device_and_dtype("cuda", "auto", local_rank=0)
    assert device == torch.device("cuda", 0) and dtype in (torch.bfloat16, torch.float16)
