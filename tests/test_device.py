"""The one rule for device and precision that every script uses."""

import pytest
import torch

from conftest import fp32_precision, set_fp32_precision
from gpt2.device import configure, cpu_bf16_units, device_name, resolve_device_and_dtype

REAL_CPU_BF16_UNITS = cpu_bf16_units  # bound at import, before conftest's fixture replaces the module's


def test_a_cpu_without_bf16_units_defaults_to_fp32_and_honours_an_explicit_dtype():
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


@pytest.mark.parametrize("amx, avx512_bf16, units", [(True, True, "AMX"), (False, True, "AVX512-BF16"),
                                                     (False, False, None)])
def test_the_cpus_bf16_units_are_asked_of_torch(monkeypatch, amx, avx512_bf16, units):
    """AMX first, then AVX512-BF16 (conftest fakes cpu_bf16_units for every other test: the real one here)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert REAL_CPU_BF16_UNITS() == units


@pytest.mark.parametrize("units, expected", [("AMX", torch.bfloat16), ("AVX512-BF16", torch.bfloat16),
                                             (None, torch.float32)])
def test_auto_on_a_cpu_takes_bf16_where_it_has_bf16_units(monkeypatch, units, expected):
    monkeypatch.setattr("gpt2.device.cpu_bf16_units", lambda: units)
    assert resolve_device_and_dtype("cpu", "auto") == (torch.device("cpu"), expected)
    assert resolve_device_and_dtype("cpu", "fp32") == (torch.device("cpu"), torch.float32)  # asked by name: kept
    assert device_name(torch.device("cpu")).endswith(f"bf16 units: {units or 'none'})")  # printed with the device
