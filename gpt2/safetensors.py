"""The safetensors format, read and written by hand (the `safetensors` package is only a test reference).

A file is three parts:

    8 bytes    N, the length of the header: an unsigned 64-bit little-endian integer
    N bytes    the header: a UTF-8 JSON object {name: {"dtype": "F32", "shape": [768, 2304],
               "data_offsets": [begin, end]}, ...} with an optional "__metadata__": {str: str};
               writers pad it with spaces so that the data starts at a multiple of 8 bytes
    the rest   the data: each tensor's bytes, little-endian, C order, at [begin, end) counted from
               the start of this section. The tensors cover it exactly: no holes, no overlaps.

Reading trusts nothing in the file. Every rule the reference library enforces is checked before a
byte of data is touched, and a broken rule raises `SafetensorsError` naming the file and the rule,
so a truncated download or a hostile file never crashes, hangs or exhausts memory.

Tensors of 1 MiB or more are memory-mapped copy-on-write, each through its own mapping: no copy is
made, writing to a tensor never changes the file, and a tensor that a loader replaces (say by its
transpose) frees its pages instead of pinning the whole file. Smaller ones are simply read.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

import torch

from gpt2.atomic import atomic_open

# The safetensors dtype names this reader and writer handle: the ones torch has a dtype for.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the reference library's limit: a longer header is a broken file
_MMAP_MIN_BYTES = 1 << 20  # below this a read costs less than a mapping (and a file descriptor)
_INT64_MAX = 2**63 - 1


class SafetensorsError(ValueError):
    """A file that breaks the safetensors format, or tensors that cannot be written in it."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # byte offsets of the tensor in the data section, [begin, end)
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]  # in the order of their data
    metadata: dict[str, str]  # the "__metadata__" object, {} when absent
    data_start: int  # byte offset of the data section in the file: 8 + N


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header of `path` without reading any tensor data."""
    with open(path, "rb") as f:
        return _read_header(f, Path(path))


def load_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of `path` as CPU tensors {name: tensor}, in file order; large ones memory-mapped."""
    path = Path(path)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        return {name: _read_tensor(f, path, header.data_start + info.begin, info)
                for name, info in header.tensors.items()}


def save_file(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` atomically: the file is either the old one or the complete new one.

    Tensors may live on any device and be non-contiguous; they are copied to the CPU one at a time
    as they are written. The order is the reference library's: widest dtype first, then by name,
    which keeps every tensor aligned to its element size given the 8-byte-aligned data section.
    """
    path = Path(path)
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"{path}: tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_meta or t.dtype not in _NAMES:
            what = f"a {type(t).__name__}" if not isinstance(t, torch.Tensor) else \
                f"a {t.layout} {t.dtype} tensor on {t.device}"
            raise SafetensorsError(f"{path}: cannot write {name!r}, {what}; safetensors holds dense tensors "
                                   f"with data, of dtypes {', '.join(_NAMES.values())}")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: metadata must map strings to strings, got {dict(metadata)!r}")

    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad with spaces: the data section starts 8-byte aligned

    with atomic_open(path) as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            _write_tensor(f, tensors[name])



def _write_tensor(f: BinaryIO, t: torch.Tensor) -> None:
    if t.numel() == 0:
        return
    t = t.detach().to("cpu").contiguous().resolve_conj().resolve_neg()  # one tensor's copy at most
    f.write(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, in this (little-endian) host order


def _invalid(path: Path, rule: str) -> SafetensorsError:
    return SafetensorsError(f"{path}: not a valid safetensors file: {rule}")


def _read_header(f: BinaryIO, path: Path) -> Header:
    """The header of an open file, every rule of the format checked: its JSON, each tensor's entry, and that
    the tensors tile the data section exactly."""
    if sys.byteorder != "little":
        raise SafetensorsError(f"{path}: this reader maps the file's little-endian bytes directly, "
                               "so it needs a little-endian machine")
    size = os.fstat(f.fileno()).st_size
    obj, n = _header_json(f, path, size)
    metadata = obj.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata  # null is accepted, as the reference library does
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(path, f"'__metadata__' must be an object of strings, got {metadata!r:.200}")
    entries = sorted(((name, _tensor_info(name, entry, path)) for name, entry in obj.items()),
                     key=lambda e: (e[1].begin, e[1].end))
    _check_tiling(entries, size - 8 - n, path)
    return Header(dict(entries), metadata, 8 + n)


def _header_json(f: BinaryIO, path: Path, size: int) -> tuple[dict, int]:
    """The header's JSON object and its length n in bytes (the 8-byte length, then n bytes of UTF-8 JSON)."""
    if size < 8:
        raise _invalid(path, f"the file is {size} bytes, shorter than the 8-byte header length (a truncated download?)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise _invalid(path, f"the header length {n:,} is over the {MAX_HEADER_BYTES:,}-byte limit")
    if 8 + n > size:
        raise _invalid(path, f"the header length {n:,} runs past the end of the {size:,}-byte file")
    raw = f.read(n)
    if len(raw) != n:
        raise _invalid(path, f"the file ended while its {n:,}-byte header was being read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _invalid(path, f"the header is not valid UTF-8 ({e})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise _invalid(path, "the header JSON is nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, a repeated key, an integer too long to convert
        raise _invalid(path, f"the header is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _invalid(path, f"the header is a JSON {type(obj).__name__}, not an object")
    return obj, n


def _tensor_info(name: str, entry, path: Path) -> TensorInfo:
    """One tensor's entry {"dtype", "shape", "data_offsets"}, checked: known dtype, a shape of counts, offsets
    [begin, end] that span exactly the bytes the shape needs."""
    if not isinstance(entry, dict):
        raise _invalid(path, f"the entry of tensor {name!r} is not an object: {entry!r:.200}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _invalid(path, f"the entry of tensor {name!r} has no {key!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _invalid(path, f"tensor {name!r} has unknown or unsupported dtype {dtype!r:.50}; "
                             f"this reader handles {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _invalid(path, f"the shape of tensor {name!r} must be a list of non-negative integers, got {shape!r:.200}")
    numel = _numel(shape)
    if numel is None:
        raise _invalid(path, f"the shape of tensor {name!r} has more than 2**63 elements")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise _invalid(path, f"the data_offsets of tensor {name!r} must be [begin, end] with 0 <= begin <= end, "
                             f"got {offsets!r:.200}")
    info = TensorInfo(DTYPES[dtype], tuple(shape), offsets[0], offsets[1])
    nbytes = numel * info.dtype.itemsize
    if info.end - info.begin != nbytes:
        raise _invalid(path, f"tensor {name!r} ({dtype}, shape {shape}) needs {nbytes:,} bytes but its data_offsets "
                             f"{offsets} span {info.end - info.begin:,}")
    return info


def _check_tiling(entries: list[tuple[str, TensorInfo]], data_size: int, path: Path) -> None:
    """The tensors, sorted by offset, cover the data section exactly: no overlap, no hole, nothing past its end."""
    covered, previous = 0, None  # the data section up to `covered` belongs to the tensors seen so far
    for name, info in entries:
        if info.end > data_size:
            raise _invalid(path, f"tensor {name!r} ends at byte {info.end:,}, past the end of the {data_size:,}-byte "
                                 "data section (a truncated file?)")
        if info.begin < covered:
            raise _invalid(path, f"tensor {name!r} at bytes [{info.begin:,}, {info.end:,}) overlaps tensor "
                                 f"{previous!r}, which ends at {covered:,}")
        if info.begin > covered:
            raise _invalid(path, f"bytes [{covered:,}, {info.begin:,}) of the data section belong to no tensor "
                                 "(the tensors must cover it without holes)")
        covered, previous = info.end, name
    if covered != data_size:
        raise _invalid(path, f"{data_size - covered:,} bytes after the last tensor belong to no tensor "
                             "(the tensors must cover the data section exactly)")


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {repeated!r} appears twice")  # the reference keeps the last; ambiguous
    return d


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _INT64_MAX


def _numel(shape: list[int]) -> int | None:
    """prod(shape), or None when the non-zero dimensions multiply past int64 (torch's limit).
    Stops as soon as it overflows, so a header of a million huge dimensions cannot stall it."""
    product, empty = 1, False
    for d in shape:
        if d == 0:
            empty = True
        else:
            product *= d
            if product > _INT64_MAX:
                return None
    return 0 if empty else product


def _read_tensor(f: BinaryIO, path: Path, offset: int, info: TensorInfo) -> torch.Tensor:
    """The tensor at byte `offset` of the open file: mapped when large and aligned, else read."""
    nbytes, itemsize = info.end - info.begin, info.dtype.itemsize
    if nbytes >= _MMAP_MIN_BYTES and offset % itemsize == 0:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # a mapping must start on a page boundary
        try:
            extra = {"trackfd": False} if sys.version_info >= (3, 13) else {}  # no duplicated descriptor
            mapped = mmap.mmap(f.fileno(), offset + nbytes - start, offset=start, access=mmap.ACCESS_COPY, **extra)
        except OSError:  # out of mappings or descriptors: reading gives the same tensor
            pass
        else:
            flat = torch.frombuffer(mapped, dtype=info.dtype, count=nbytes // itemsize, offset=offset - start)
            return flat.view(info.shape)  # the tensor keeps the mapping alive; it is unmapped when freed
    data = torch.empty(nbytes, dtype=torch.uint8)
    f.seek(offset)
    if nbytes and f.readinto(memoryview(data.numpy())) != nbytes:
        raise SafetensorsError(f"{path}: the file became shorter while it was being read")
    return data.view(info.dtype).view(info.shape)
