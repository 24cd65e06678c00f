"""The GPT-2 BPE through tiktoken: known ids and a lossless round trip."""

from __future__ import annotations

import random

import pytest

from gpt2 import tokenizer


def test_known_ids(encoding):
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert encoding.n_vocab == tokenizer.VOCAB_SIZE
    assert tokenizer.decode([tokenizer.EOT_ID]) == "<|endoftext|>"


@pytest.mark.parametrize("text", [
    "naïve café — déjà vu, Ångström, Øresund",
    "emoji 🤖🧠👩‍👩‍👧 and flags 🇫🇷",
    "whitespace   runs\t\tand\n\n\n  newlines \r\n end ",
    "日本語のテキストと中文",
    " <|endoftext|> typed as text",
    "",
])
def test_round_trip(encoding, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode_bytes(ids) == text.encode("utf-8")
    assert tokenizer.EOT_ID not in ids


def test_random_unicode_round_trip(encoding):
    rng = random.Random(0)
    alphabet = "abc XYZ \n\t 0123 é ß ü 中 😀 ’“”" + "".join(chr(c) for c in range(0x370, 0x3FF))
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(200)]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_missing_bpe_files_mention_tiktoken_cache_dir(monkeypatch):
    import tiktoken

    def offline(name):
        raise OSError("network is unreachable")

    tokenizer.get_encoding.cache_clear()
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    try:
        with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR"):
            tokenizer.get_encoding()
    finally:
        tokenizer.get_encoding.cache_clear()
