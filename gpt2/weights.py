"""GPT-2 weights in and out: the published checkpoints, Hugging Face directories, single files.

`load_pretrained(source)` takes
  * a published name, "gpt2", "gpt2-medium", "gpt2-large" or "gpt2-xl": its config.json and
    model.safetensors are downloaded once from the Hugging Face hub into a cache directory
    ($GPT2_CACHE_DIR, default ~/.cache/gpt2-distill), resumably, and checked (gpt2/download.py);
  * a directory in Hugging Face's layout: config.json with model.safetensors or pytorch_model.bin;
  * a .safetensors or .bin file, with config.json beside it (without one the shape is read off the
    tensors, which works for the published shapes: nothing in the weights says the number of heads).

Our parameter names are Hugging Face's, so loading is four small steps:
  * keys may carry the `transformer.` prefix (GPT2LMHeadModel files) or not (GPT2Model files, such
    as the published openai-community/gpt2 model.safetensors);
  * `h.{i}.attn.bias` and `h.{i}.attn.masked_bias` are causal-mask buffers, not weights: dropped;
  * c_attn, attn.c_proj, c_fc and mlp.c_proj are HF `Conv1D`s, stored (in, out): transposed to
    nn.Linear's (out, in);
  * `lm_head.weight`, when present, must equal `wte.weight`: GPT-2 ties them, and so do we.
`save_hf(model, directory)` writes the same layout back, for transformers and for us.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from gpt2.config import PUBLISHED, GPTConfig
from gpt2.model import GPT
from gpt2.atomic import atomic_open
from gpt2.download import DownloadError, download  # DownloadError: load_pretrained raises it, so it is ours too
from gpt2.safetensors import load_file, save_file

__all__ = ["CONV1D", "DownloadError", "WeightsError", "load_pretrained", "model_holding", "save_hf"]

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_LAYER = re.compile(r"(?:transformer\.)?h\.(\d+)\.")


class WeightsError(ValueError):
    """A checkpoint that cannot become a GPT: wrong keys or shapes, unsafe pickle, missing config."""


def load_pretrained(source: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None, dropout: float | None = None) -> GPT:
    """A GPT in eval mode holding the weights of `source` (a published name, a directory or a file),
    on `device`, in `dtype` (default: the checkpoint's), with `dropout` (default: config.json's)."""
    weights_path, config_path = _resolve(source)
    tensors = _read_weights(weights_path)
    if config_path is not None:
        try:
            hf_config = json.loads(config_path.read_text())
            if not isinstance(hf_config, dict):
                raise ValueError(f"it holds a JSON {type(hf_config).__name__}, not an object")
            config = GPTConfig.from_hf_dict(hf_config)
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise WeightsError(f"{config_path}: not a usable GPT-2 config.json: {e}") from e
    else:
        config = _infer_config(tensors, weights_path)
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    return _build_model(tensors, config, weights_path, device=device, dtype=_as_dtype(dtype))


def save_hf(model: GPT, directory: str | os.PathLike) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory: config.json and model.safetensors with
    `transformer.` keys in Conv1D layout and no lm_head (it is tied). Each file is written atomically."""
    if not isinstance(model, GPT):
        raise TypeError(f"save_hf takes the plain GPT module, got {type(model).__name__}; "
                        "pass the module inside the wrappers (train.py keeps it as parts.raw_model)")
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise WeightsError("the model's lm_head is not tied to transformer.wte: GPT-2's layout cannot hold it")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.t() if name.endswith(CONV1D) else t  # views; the writer copies one at a time
               for name, t in model.state_dict().items() if name != "lm_head.weight"}
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with atomic_open(directory / "config.json") as f:
        f.write(json.dumps(model.config.to_hf_dict(), indent=2).encode() + b"\n")
    return directory


def _resolve(source: str | os.PathLike) -> tuple[Path, Path | None]:
    """(weights file, its config.json or None) for a published name, a directory or a file."""
    if isinstance(source, str) and source in PUBLISHED:
        directory = download(source)
        return directory / "model.safetensors", directory / "config.json"
    path = Path(source).expanduser()
    if path.is_dir():
        config = path / "config.json"
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return path / name, config if config.is_file() else None
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise WeightsError(f"{path} has neither model.safetensors nor pytorch_model.bin (it holds: {found})")
    if path.is_file():
        config = path.parent / "config.json"
        return path, config if config.is_file() else None
    raise WeightsError(f"{str(source)!r} is neither a published GPT-2 ({', '.join(PUBLISHED)}) nor an existing "
                       "directory (config.json + model.safetensors) or .safetensors / .bin file")


# ----------------------------------------------------------------------------- reading and mapping

def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)  # SafetensorsError is already a ValueError naming the file and the rule
    if path.suffix not in (".bin", ".pt", ".pth"):
        raise WeightsError(f"{path}: expected a .safetensors or a .bin (torch.save) file")
    try:
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            tensors = torch.load(path, map_location="cpu", weights_only=True)  # a pre-1.6 (non-zip) file
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise WeightsError(
            f"{path} holds Python objects{f' ({found[1]})' if found else ''} besides tensors, so loading it needs "
            "arbitrary unpickling, which can run any code and is refused for safety. If you trust the file, "
            "convert it once to safetensors:\n  python -c \"import torch; from gpt2.safetensors import save_file; "
            f"sd = torch.load('{path}', weights_only=False); save_file({{k: v for k, v in sd.items() "
            f"if isinstance(v, torch.Tensor)}}, '{path.with_suffix('.safetensors')}')\"") from e
    except Exception as e:  # a truncated or corrupt archive
        raise WeightsError(f"{path}: torch.load cannot read it ({type(e).__name__}: {e})") from e
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise WeightsError(f"{path}: expected a state dict {{name: tensor}}, found a {type(tensors).__name__} "
                           "of other things")
    return tensors


def _infer_config(tensors: dict[str, torch.Tensor], path: Path) -> GPTConfig:
    """The config of a checkpoint without config.json: sizes from the tensors, heads from PUBLISHED."""
    wte = tensors.get("transformer.wte.weight", tensors.get("wte.weight"))
    wpe = tensors.get("transformer.wpe.weight", tensors.get("wpe.weight"))
    layers = {int(m[1]) for key in tensors if (m := _LAYER.match(key))}
    if wte is None or wpe is None or wte.dim() != 2 or wpe.dim() != 2 or not layers:
        raise WeightsError(f"{path}: no config.json beside it, and its tensors do not look like GPT-2's "
                           "(no 2-d wte.weight / wpe.weight, or no h.{i} blocks)")
    n_layer, n_embd = max(layers) + 1, wte.shape[1]
    n_head = next((p["n_head"] for p in PUBLISHED.values() if (p["n_layer"], p["n_embd"]) == (n_layer, n_embd)), None)
    if n_head is None:
        raise WeightsError(
            f"{path}: no config.json beside it, and n_layer={n_layer}, n_embd={n_embd} is not a published shape, "
            "so the number of heads is unknown. Write one with: python -c \"import json; from gpt2 import GPTConfig; "
            "print(json.dumps(GPTConfig(n_layer=..., n_head=..., n_embd=...).to_hf_dict()))\" > config.json")
    return GPTConfig(vocab_size=wte.shape[0], n_positions=wpe.shape[0], n_embd=n_embd, n_layer=n_layer, n_head=n_head)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype.isidentifier() else None
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise WeightsError(f"dtype must be a floating-point torch dtype such as float32 or bfloat16, got {dtype!r}")
    return dtype


def _listing(keys: set[str], limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class _SkipInit(TorchFunctionMode):
    """Skips torch.nn.init's fills (nn.Embedding and nn.Linear draw their own at construction) while
    a model is built on "meta", where there is nothing to fill anyway. Not only tidier: on meta,
    normal_ runs a Python kernel whose first use imports torch._dynamo, about 1.7 s."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs.get("tensor", args[0] if args else None)
        return func(*args, **kwargs)


def model_holding(config: GPTConfig, state: dict[str, torch.Tensor]) -> GPT:
    """A GPT whose parameters are `state`'s tensors themselves (our names and layout; no copy): built on the
    meta device with no random initialisation, filled with load_state_dict(assign=True), its head tied again.
    checkpoints, published weights and students cut from a teacher (gpt2/kd.py) are all made this way."""
    with torch.device("meta"), _SkipInit():  # shapes only: no memory, no random initialisation to throw away
        model = GPT(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True made two Parameters: tie them again
    return model


def _build_model(tensors: dict[str, torch.Tensor], config: GPTConfig, path: Path, *,
                 device: str | torch.device, dtype: torch.dtype | None) -> GPT:
    """A GPT holding `tensors` (HF names and layout). Entries are popped from `tensors` as they are
    converted, so that each source tensor is freed as soon as its converted copy exists."""
    with torch.device("meta"), _SkipInit():
        expected = {name.removeprefix("transformer."): p.shape for name, p in GPT(config).named_parameters()}

    found, head = {}, None  # found: keys without the prefix and without the mask buffers
    for key in list(tensors):
        t, name = tensors.pop(key), key.removeprefix("transformer.")
        if name == "lm_head.weight":
            head = t
        elif not _MASK_BUFFER.fullmatch(name):
            if name in found:
                raise WeightsError(f"{path}: holds {name!r} twice, with and without the 'transformer.' prefix")
            found[name] = t
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    if missing or unexpected:
        raise WeightsError(f"{path} does not match a GPT-2 of {config.n_layer} layers: "
                           f"missing keys: {_listing(missing) or 'none'}; "
                           f"unexpected keys: {_listing(unexpected) or 'none'}")
    wrong = []
    for name, t in found.items():
        want = tuple(reversed(expected[name])) if name.endswith(CONV1D) else tuple(expected[name])
        if tuple(t.shape) != want:
            wrong.append(f"{name}: expected {want}, got {tuple(t.shape)}")
        elif not t.is_floating_point():
            wrong.append(f"{name}: expected floating-point weights, got {t.dtype}")
    if wrong:
        layout = " (HF Conv1D weights are stored (in, out))" if any(n.endswith(CONV1D) for n in wrong) else ""
        raise WeightsError(f"{path} does not fit config {config}{layout}: " + "; ".join(wrong[:8]))
    if head is not None and not torch.equal(head, found["wte.weight"]):
        raise WeightsError(f"{path}: lm_head.weight differs from wte.weight; an untied head is not supported")
    del head

    dtype = dtype or found["wte.weight"].dtype
    state = {}
    for name in list(found):
        t = found.pop(name)
        if name.endswith(CONV1D):
            t = t.t()  # (in, out) -> (out, in): a view, made contiguous by the copy below
        t = t.to(device=device, dtype=dtype, memory_format=torch.contiguous_format)
        state["transformer." + name] = t.contiguous()  # a no-op unless .to() had nothing to do
        del t  # the source (a mapping or a read) is released once its converted copy exists
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return model_holding(config, state).eval()
