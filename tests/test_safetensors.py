"""gpt2.safetensors against the reference `safetensors` package: files written by either are read
by both, and every malformed file is refused by ours with a message naming the file and the rule."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch

from gpt2 import safetensors as st


def tensors_of_every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, dtype in st.DTYPES.items():
        if dtype.is_floating_point:
            t = torch.randn(3, 5, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.rand(3, 5, generator=g) > 0.5
        else:
            t = torch.randint(0, 100, (3, 5), generator=g).to(dtype)
        out[f"t.{name}"] = t
    out["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    out["empty"] = torch.zeros(0, 7, dtype=torch.float16)
    out["transposed"] = torch.arange(12, dtype=torch.float32).view(3, 4).t()  # non-contiguous input
    out["big"] = torch.randn(300, 1000, generator=g)  # 1.2 MB: memory-mapped rather than read
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and bytes (bitwise: float8 and bool included)."""
    assert a.keys() == b.keys()
    as_bytes = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(as_bytes(a[k]), as_bytes(b[k])), k


def test_round_trip_through_both_implementations(tmp_path):
    tensors = tensors_of_every_dtype()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    st.save_file(tensors, ours, metadata={"format": "pt", "note": "héllo"})
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, theirs, metadata={"format": "pt"})

    assert_same(tensors, st.load_file(ours))
    assert_same(tensors, safetensors.torch.load_file(ours))  # the reference reads what we write
    assert_same(tensors, st.load_file(theirs))  # and we read what it writes
    with safetensors.safe_open(ours, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "héllo"}
    assert st.read_header(ours).metadata == {"format": "pt", "note": "héllo"}
    assert st.read_header(theirs).metadata == {"format": "pt"}


def test_writer_pads_the_header_with_spaces_and_aligns_every_tensor(tmp_path):
    path = tmp_path / "a.safetensors"
    st.save_file({"x": torch.ones(3, dtype=torch.int8), "y": torch.ones(2, dtype=torch.float64),
                  "z": torch.ones(5, dtype=torch.float16)}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8:8 + n].rstrip(b" ").endswith(b"}")
    header = st.read_header(path)
    assert header.data_start == 8 + n and list(header.tensors) == ["y", "z", "x"]  # widest dtype first
    for info in header.tensors.values():
        assert (header.data_start + info.begin) % info.dtype.itemsize == 0


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the mappings")
def test_large_tensors_are_mapped_copy_on_write(tmp_path):
    path = tmp_path / "big.safetensors"
    st.save_file({"big": torch.arange(1 << 19, dtype=torch.float32), "small": torch.ones(4)}, path)
    before = path.read_bytes()
    loaded = st.load_file(path)
    assert str(path) in Path("/proc/self/maps").read_text()  # mapped, not read into fresh memory
    loaded["big"][:10] = -1.0  # writing a mapped tensor changes only this process's copy
    assert loaded["big"][0] == -1 and path.read_bytes() == before
    del loaded
    assert str(path) not in Path("/proc/self/maps").read_text()  # freeing the tensor unmaps it


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    st.save_file({"a": torch.ones(3)}, path)
    before = path.read_bytes()
    calls = []

    def fail_on_second(f, t):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        f.write(t.contiguous().numpy().tobytes())

    monkeypatch.setattr(st, "_write_tensor", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        st.save_file({"a": torch.zeros(3), "b": torch.zeros(4)}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("tensors, metadata, message", [
    ({"__metadata__": torch.ones(1)}, None, "names must be strings other than '__metadata__'"),
    ({1: torch.ones(1)}, None, "names must be strings"),
    ({"c": torch.ones(2, dtype=torch.complex64)}, None, "cannot write 'c'"),
    ({"m": torch.empty(2, device="meta")}, None, "cannot write 'm'"),
    ({"l": [1.0]}, None, "cannot write 'l', a list"),
    ({"a": torch.ones(1)}, {"step": 3}, "metadata must map strings to strings"),
])
def test_writer_refuses_what_the_format_cannot_hold(tmp_path, tensors, metadata, message):
    with pytest.raises(st.SafetensorsError, match=message):
        st.save_file(tensors, tmp_path / "x.safetensors", metadata=metadata)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- malformed files

def header_file(header, data: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def entry(begin, end, shape=(1,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


MALFORMED = {  # name: (file bytes, what the message must say); the reference library refuses all but one
    "shorter than 8 bytes": (b"\x01\x00\x00", "shorter than the 8-byte header length"),
    "header past the end": (header_file({"a": entry(0, 4)}, b"\0" * 4, length=1000), "1,000 runs past the end"),
    "header length 2**64-1": (struct.pack("<Q", 2**64 - 1) + b"{}", "over the 100,000,000-byte limit"),
    "not UTF-8": (header_file(b'{"\xff": 1}'), "not valid UTF-8"),
    "not JSON": (header_file(b'{"a": '), "not valid JSON"),
    "NUL padding": (header_file(b'{}\0\0\0\0\0\0'), "not valid JSON"),
    "not an object": (header_file(b"[1, 2]"), "a JSON list, not an object"),
    "nested too deeply": (header_file(b"[" * 100_000), "nested too deeply|not valid JSON"),
    "entry not an object": (header_file({"a": [0, 4]}, b"\0" * 4), "entry of tensor 'a' is not an object"),
    "no dtype": (header_file({"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "has no 'dtype'"),
    "no shape": (header_file({"a": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4), "has no 'shape'"),
    "no offsets": (header_file({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "has no 'data_offsets'"),
    "unknown dtype": (header_file({"a": entry(0, 4, dtype="F128")}, b"\0" * 4), "unknown or unsupported dtype 'F128'"),
    "dtype not a string": (header_file({"a": entry(0, 4, dtype=["F32"])}, b"\0" * 4), "unknown or unsupported dtype"),
    "negative dim": (header_file({"a": entry(0, 4, shape=(-1,))}, b"\0" * 4), "list of non-negative integers"),
    "float dim": (header_file({"a": entry(0, 4, shape=(1.0,))}, b"\0" * 4), "list of non-negative integers"),
    "bool dim": (header_file({"a": entry(0, 4, shape=(True,))}, b"\0" * 4), "list of non-negative integers"),
    "shape not a list": (header_file({"a": {**entry(0, 4), "shape": 1}}, b"\0" * 4), "list of non-negative"),
    "too many elements": (header_file({"a": entry(0, 0, shape=(0, 2**62, 2**62))}), "more than 2\\*\\*63"),
    "three offsets": (header_file({"a": {**entry(0, 4), "data_offsets": [0, 4, 4]}}, b"\0" * 4), "\\[begin, end\\]"),
    "end before begin": (header_file({"a": entry(4, 0)}, b"\0" * 4), "0 <= begin <= end"),
    "string offset": (header_file({"a": {**entry(0, 4), "data_offsets": ["0", 4]}}, b"\0" * 4), "\\[begin, end\\]"),
    "wrong byte count": (header_file({"a": entry(0, 8, shape=(3,))}, b"\0" * 8), "needs 12 bytes but"),
    "past the data": (header_file({"a": entry(0, 16, shape=(4,))}, b"\0" * 8), "past the end of the 8-byte data"),
    "overlap": (header_file({"a": entry(0, 8, (2,)), "b": entry(4, 8)}, b"\0" * 8), "'b' .* overlaps tensor 'a'"),
    "hole": (header_file({"a": entry(0, 4), "b": entry(8, 12)}, b"\0" * 12), "bytes \\[4, 8\\) .* belong to no"),
    "hole at the start": (header_file({"a": entry(4, 8)}, b"\0" * 8), "bytes \\[0, 4\\) .* belong to no tensor"),
    "trailing bytes": (header_file({"a": entry(0, 4)}, b"\0" * 12), "8 bytes after the last tensor"),
    "metadata not an object": (header_file({"__metadata__": "x"}), "'__metadata__' must be an object"),
    "metadata not strings": (header_file({"__metadata__": {"step": 1}}), "'__metadata__' must be an object"),
    "repeated key": (header_file(b'{"a":' + json.dumps(entry(0, 4)).encode() + b',"a":'
                                 + json.dumps(entry(0, 4)).encode() + b"}", b"\0" * 4), "'a' appears twice"),
}
# Where we are stricter than the reference: it keeps the last of two entries of one name, and it
# builds a (0, 2**62, 2**62) tensor with a zero stride that torch.empty itself refuses to create.
REFERENCE_ACCEPTS = {"repeated key", "too many elements"}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_is_refused_with_file_and_rule_named(tmp_path, case):
    raw, message = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(st.SafetensorsError, match=message) as excinfo:
        st.load_file(path)
    assert str(path) in str(excinfo.value) and isinstance(excinfo.value, ValueError)
    if case not in REFERENCE_ACCEPTS:
        with pytest.raises(Exception):  # the reference agrees the file is broken
            safetensors.torch.load_file(path)
    else:
        safetensors.torch.load_file(path)


def test_header_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:  # a sparse 200 MB file: no disk used, nothing allocated
        f.write(struct.pack("<Q", 150_000_000))
        f.truncate(200_000_000)
    with pytest.raises(st.SafetensorsError, match="150,000,000 is over the 100,000,000-byte limit"):
        st.read_header(path)


def test_random_corruption_never_escapes_as_anything_but_safetensors_error(tmp_path):
    path = tmp_path / "a.safetensors"
    st.save_file({"w": torch.randn(4, 6), "b": torch.zeros(6, dtype=torch.bfloat16), "i": torch.arange(3)}, path)
    good = path.read_bytes()
    rng = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(300):
        raw = bytearray(good)
        kind = rng.randrange(3)
        if kind == 0:  # flip a few bytes, mostly in the header
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(min(len(raw), 8 + 200))] = rng.randrange(256)
        elif kind == 1:  # truncate
            raw = raw[:rng.randrange(len(raw))]
        else:  # grow
            raw += bytes(rng.randrange(1, 16))
        path.write_bytes(bytes(raw))
        try:
            st.load_file(path)
            outcomes["loaded"] += 1
        except st.SafetensorsError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 200 and sum(outcomes.values()) == 300


def test_file_that_is_not_there_raises_the_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.load_file(tmp_path / "missing.safetensors")
