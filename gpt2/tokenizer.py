"""The GPT-2 byte-pair encoding, through tiktoken (the same 50,257-token vocabulary OpenAI published).

Encoding treats every string as text: "<|endoftext|>" typed in a document is encoded as ordinary
characters, so encode/decode is lossless on any input. The end-of-text token (id 50256) is added
explicitly by the caller where documents are joined.
"""

from __future__ import annotations

import functools
import os

import tiktoken

EOT_ID = 50256  # <|endoftext|>
VOCAB_SIZE = 50257


@functools.lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken raises requests/OSError/ValueError depending on what failed
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "(unset)")
        raise RuntimeError(
            "could not load the GPT-2 BPE files (vocab.bpe, encoder.json): they are neither in "
            f"tiktoken's cache (TIKTOKEN_CACHE_DIR={cache}) nor downloadable ({type(e).__name__}: {e}). "
            "Run once with internet access to fill the cache, or point TIKTOKEN_CACHE_DIR at a folder "
            "that already holds them."
        ) from e


def encode(text: str) -> list[int]:
    """Text -> token ids, every character treated as text (lossless)."""
    return get_encoding().encode_ordinary(text)


def decode(ids) -> str:
    """Token ids -> text. A sequence cut inside a multi-byte character decodes with U+FFFD there."""
    return get_encoding().decode(list(ids))


def decode_bytes(ids) -> bytes:
    """Token ids -> the exact bytes they stand for (lossless even when cut inside a character)."""
    return get_encoding().decode_bytes(list(ids))
