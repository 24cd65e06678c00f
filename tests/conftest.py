"""Shared test fixtures. Tests never touch the network: data and BPE files come from ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Offline BPE files for the tokenizer, when this machine has them (CI and developers do; users need not).
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")

# One test process builds dozens of model shapes and dtypes, where a run builds one: the loss chunks' static
# graphs (gpt2/losses.py) would pass torch's limit of 8 per function and the later ones run eagerly, with
# numbers that differ from the compiled ones in the last digits. The limit is raised for the test session.
from gpt2.compat import recompile_limit_field  # noqa: E402

setattr(torch._dynamo.config, recompile_limit_field(), 256)


@pytest.fixture
def shared_dir() -> Path:
    """../shared, or skip: it exists for developers and CI, never for a user."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (it holds the Wikitext-2 validation/test splits on developer machines)")
    return SHARED


@pytest.fixture
def wikitext_raw(shared_dir) -> Path:
    path = shared_dir / "wikitext-2-raw"
    if not (path / "wiki.valid.raw").is_file():
        pytest.skip(f"{path}/wiki.valid.raw is absent")
    return path


@pytest.fixture(scope="session")
def encoding():
    """The GPT-2 BPE, or skip when its files are neither cached nor downloadable."""
    from gpt2 import tokenizer

    try:
        return tokenizer.get_encoding()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: ops this small only lose time synchronising threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# TF32: gpt2.device.configure turns it on for CUDA (every script's device setup), for the whole process.
# A test that set it up would leave float32 matrix multiplies with a 10-bit mantissa for every later test,
# and a CUDA test comparing float32 logits at 1e-4 would fail for a reason that is not its own. So every
# test starts from, and leaves, the precision the session started with. torch keeps it in two APIs that
# refuse to be read once they disagree: the old switches (allow_tf32, set_float32_matmul_precision) and a
# precision per backend and operation; both are saved, and the old ones restored first.
FP32_PRECISION_KEYS = [("generic", "all"), ("cuda", "all"), ("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn"),
                       ("mkldnn", "all"), ("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn")]  # general first


def fp32_precision() -> tuple:
    """Everything that decides how float32 matrix multiplies and convolutions round (CUDA and CPU)."""
    return (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
            tuple(torch._C._get_fp32_precision_getter(*key) for key in FP32_PRECISION_KEYS))


def set_fp32_precision(state: tuple) -> None:
    matmul, cudnn, per_op = state
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn
    for key, value in zip(FP32_PRECISION_KEYS, per_op):
        torch._C._set_fp32_precision_setter(*key, value)


@pytest.fixture(scope="session")
def _session_fp32_precision():
    """The precision the session started with; checked again when it ends (a module fixture's leak)."""
    state = fp32_precision()
    yield state
    assert fp32_precision() == state, "a fixture left float32 matrix multiplies in another precision (TF32?)"


@pytest.fixture(autouse=True)
def _fp32_precision(_session_fp32_precision):
    set_fp32_precision(_session_fp32_precision)  # also undoes what a module-scoped fixture set up
    yield
    set_fp32_precision(_session_fp32_precision)


@pytest.fixture(autouse=True)
def _cpu_dtype_auto_is_fp32():
    """--dtype auto picks bf16 autocast on a CPU with bf16 units (gpt2/device.py): the tests pin the other
    answer, so that they compute the same numbers on every CPU. test_device.py fakes the units both ways,
    and the bf16 tests ask for bf16 by name. A MonkeyPatch of its own: a test's `monkeypatch.undo()` must
    not lift it halfway through the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gpt2.device.cpu_bf16_units", lambda: None)
        yield
