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
