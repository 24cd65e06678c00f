"""python -m data.token_edit on a tiny random teacher and tiny shards: the set is the real chunks with exactly the
configured share of positions 1 .. L-1 resampled (position 0 never), the rest untouched; min_p = 1 gives the
teacher's argmax given the real prefix; it holds exactly n_tokens; it is deterministic for a seed; bad settings
stop with a message."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from data import token_edit
from data.distill import DistillError
from data.loader import SplitTokens
from data.shards import write_shard
from data.token_edit import TokenEditConfig, TokenEditError, chunk_streams, edit_positions, n_edits
from gpt2 import tokenizer
from gpt2.checkpoint import load_model
from gpt2.cli import parse_config
from test_distill import spread_out_teacher

VOCAB = 256  # ids < 256 are GPT-2's byte tokens; the real text uses ids < 200, so 250 is never real
L = 32  # tokens per chunk
SENTINEL = 250

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A teacher with spread-out logits (several plausible tokens, as in test_distill.py) and a train split."""
    root = tmp_path_factory.mktemp("token_edit")
    spread_out_teacher(root / "teacher.pt")
    data = root / "data"
    data.mkdir()
    write_shard(data / "train_000000.bin", np.random.default_rng(0).integers(0, 200, size=3000))
    return {"root": root, "teacher": str(root / "teacher.pt"), "data": str(data)}


def config(world, out: str, **overrides) -> TokenEditConfig:
    settings = dict(teacher=world["teacher"], data_dir=world["data"], out_dir=str(world["root"] / out), n_tokens=700,
                    chunk_tokens=L, edit_share=0.25, batch_size=8, seed=0, device="cpu", dtype="fp32")
    return TokenEditConfig(**{**settings, **overrides})


def chunks_of(out_dir) -> list[np.ndarray]:
    """The sequences of a written set (each starts after a separator)."""
    stream = SplitTokens(out_dir, "train")[:].astype(np.int64)
    assert stream[0] == tokenizer.EOT_ID
    cuts = np.flatnonzero(stream == tokenizer.EOT_ID)
    return [stream[a + 1 : b] for a, b in zip(cuts, list(cuts[1:]) + [len(stream)])]


def real_chunks(world, manifest, written) -> list[np.ndarray]:
    train = SplitTokens(world["data"], "train")[:].astype(np.int64)
    return [train[s : s + len(c)] for s, c in zip(manifest["chunk_offsets"], written)]


def test_exactly_the_share_is_edited_position_0_never_and_the_rest_is_real(world, monkeypatch):
    """Every draw replaced by a token the real text never holds: the edits show where they are."""
    monkeypatch.setattr(token_edit, "draw", lambda weights, noise: torch.full(weights.shape[:1], SENTINEL))
    manifest = token_edit.token_edit(config(world, "sentinel"))
    written = chunks_of(world["root"] / "sentinel")
    real = real_chunks(world, manifest, written)
    assert all(len(c) == L for c in written[:-1]) and 0 < len(written[-1]) <= L
    chosen = 0
    for j, (new, old) in enumerate(zip(written, real)):
        edited = np.flatnonzero(new == SENTINEL)
        assert len(edited) == n_edits(len(new), 0.25) == int(np.floor(0.25 * (len(new) - 1) + 0.5))
        assert 0 not in edited  # position 0 has no context in the chunk
        kept = np.ones(len(new), dtype=bool)
        kept[edited] = False
        np.testing.assert_array_equal(new[kept], old[kept])  # every other position is the real text
        assert edited.tolist() == edit_positions(len(new), 0.25, chunk_streams(0, j)[0]).tolist()
        chosen += len(edited)
    assert n_edits(L, 0.25) == 8  # 0.25 * 31 = 7.75 -> 8
    assert manifest["counts"]["positions_chosen"] == manifest["counts"]["positions_changed"] == chosen
    everywhere = np.concatenate([np.flatnonzero(c == SENTINEL) for c in written])
    assert set(everywhere.tolist()) == set(range(1, L))  # over the chunks, every position 1 .. L-1 gets edits


def test_a_set_of_exactly_n_tokens_with_a_consistent_manifest(world):
    manifest = token_edit.token_edit(config(world, "sized", n_tokens=701), argv=["--n_tokens", "701"])
    c = manifest["counts"]
    assert SplitTokens(world["root"] / "sized", "train").n_tokens == c["tokens"] == c["requested_tokens"] == 701
    written = chunks_of(world["root"] / "sized")
    assert len(written) == c["sequences"] == len(manifest["chunk_offsets"]) == 22  # ceil(701 / 33)
    real = real_chunks(world, manifest, written)
    changed = sum(int((new != old).sum()) for new, old in zip(written, real))
    assert c["positions_changed"] == changed and 0 < changed <= c["positions_chosen"]
    assert manifest["kind"] == "token-edit" and manifest["edit"]["alpha"] == -1.0 and manifest["edit"]["min_p"] == 0.1
    assert 0 < manifest["quality"]["mean_surprisal_nats"] and 0 < manifest["quality"]["real_mean_surprisal_nats"]
    assert manifest["command"] == "python -m data.token_edit --n_tokens 701"


def test_deterministic_for_a_seed(world):
    def shard_bytes(out):
        return (world["root"] / out / "train_000000.bin").read_bytes()

    token_edit.token_edit(config(world, "a"))
    token_edit.token_edit(config(world, "b"))
    token_edit.token_edit(config(world, "c", seed=1))
    assert shard_bytes("a") == shard_bytes("b")
    assert shard_bytes("a") != shard_bytes("c")


def test_min_p_1_edits_to_the_teachers_argmax_given_the_real_prefix(world):
    manifest = token_edit.token_edit(config(world, "argmax", min_p=1.0))
    written = chunks_of(world["root"] / "argmax")
    real = real_chunks(world, manifest, written)
    teacher = load_model(world["teacher"])
    checked = 0
    for j, (new, old) in enumerate(zip(written, real)):
        with torch.no_grad():
            predicted = teacher(torch.from_numpy(old)[None]).argmax(-1)[0].numpy()  # (len,): the token after each
        positions = edit_positions(len(new), 0.25, chunk_streams(0, j)[0])
        np.testing.assert_array_equal(new[positions], predicted[positions - 1])
        checked += len(positions)
    assert checked == manifest["counts"]["positions_chosen"] > 100


def test_bad_settings_stop_with_a_message(world, capsys):
    for share in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="--edit_share must lie in"):
            config(world, "x", edit_share=share)
    with pytest.raises(SystemExit):
        parse_config(TokenEditConfig, ["--n_tokens", "100", "--edit_share", "0"])
    assert "--edit_share must lie in (0, 1)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--n_tokens N is required"):
        TokenEditConfig()
    with pytest.raises(DistillError, match=r"65 tokens at once \(--chunk_tokens\) exceed the teacher's context of 64"):
        token_edit.token_edit(config(world, "x", chunk_tokens=65))
    with pytest.raises(TokenEditError, match="holds only .* ask for fewer tokens"):
        token_edit.token_edit(config(world, "x", n_tokens=10_000))
    with pytest.raises(SystemExit, match="holds only"):
        token_edit.main(["--teacher", world["teacher"], "--data_dir", world["data"], "--out_dir",
                         str(world["root"] / "x"), "--n_tokens", "10000", "--device", "cpu"])
