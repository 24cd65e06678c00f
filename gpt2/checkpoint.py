"""Training checkpoints: what one holds (`TrainState`), written atomically, read with errors that say
what to do, and the one entry point every script uses to get a model (`load_model`).

A checkpoint is one `torch.save`d dict: the fields of `TrainState` that are set, and two markers,
    format       "gpt2-distill checkpoint", so that a foreign .pt file is recognised as such
    version      FORMAT_VERSION of this layout

`latest.pt` in a run directory holds everything needed to resume; `best.pt` holds the weights with
the lowest validation loss (no optimizer state) and is what `load_model(run_dir)` returns.

Export to Hugging Face format:  python -m gpt2.checkpoint export runs/finetune out/gpt2-wikitext
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import platform
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt2.atomic import atomic_open
from gpt2.config import GPTConfig
from gpt2.model import GPT
from gpt2.weights import load_pretrained, model_holding, save_hf

FORMAT = "gpt2-distill checkpoint"
FORMAT_VERSION = 1
RUN_FILES = ("best.pt", "latest.pt")  # what load_model looks for in a run directory, in this order


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file, the problem and the way out."""


def versions() -> dict:
    """Software and code versions, stored with every run and checkpoint."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"torch": str(torch.__version__), "python": platform.python_version(), "numpy": np.__version__,
            "git_commit": commit}


@dataclass
class TrainState:
    """What a checkpoint holds. Every checkpoint has the weights and their shape; a training run's also say
    where they came from; its latest.pt also holds everything a resumed run needs to repeat the uninterrupted
    one. A field left None is not written."""

    model: dict  # state dict of the plain module: HF names, no `_orig_mod.` / `module.` prefixes
    model_config: dict  # the GPTConfig `model` fills, as a dict
    step: int | None = None  # optimizer steps taken when it was saved
    config: dict | None = None  # the run's resolved TrainConfig, as a dict
    derived: dict | None = None  # what the run derived: world_size, grad_accum_steps, max_steps, device, dtype, ...
    val_loss: float | None = None  # validation loss at `step`; None when saved between evaluations
    # latest.pt only: what resuming needs
    optimizer: dict | None = None  # AdamW's state dict (under FSDP gathered whole, as one process holds it)
    scaler: dict | None = None  # the GradScaler's state (loss scaling, used under fp16)
    batches: list | None = None  # every micro-batch slot's sampler state, in slot order (data.loader.TrainBatches)
    best_val_loss: float | None = None  # the lowest validation loss so far: best.pt is rewritten below it
    elapsed_s: float | None = None  # the run's training wall time so far, over every session
    # the study's teacher: how many embedding rows of types absent from its train split were replaced
    unseen_rows_shared: int | None = None  # (studies/unseen.py); None for every other checkpoint
    versions: dict | None = None  # torch / python / numpy versions and git commit that wrote it (set by save)

    def to_dict(self) -> dict:
        """The fields that are set, as the dict `torch.save` writes (shallow: the tensors are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> None:
    """Write `state` to `path` atomically: into a temporary file beside it, fsynced, then renamed over `path`.
    A write killed half-way leaves the previous checkpoint untouched."""
    bad = [k for k in state.model if k.startswith(("_orig_mod.", "module."))]
    if bad:
        raise ValueError(f"save_checkpoint: model state has wrapper prefixes ({bad[0]}); save the plain module")
    fields = {**state.to_dict(), "versions": versions()}
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, **fields}, f)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> TrainState:
    """Read a checkpoint written by `save_checkpoint`, or stop with an error that says what is wrong."""
    state = read_checkpoint_file(Path(path), map_location)
    fields = {k: v for k, v in state.items() if k not in ("format", "version")}
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(TrainState)})
    if unknown or "model" not in fields or "model_config" not in fields:
        raise CheckpointError(f"{path} is a checkpoint of this project whose fields this code does not know "
                              f"({', '.join(unknown) or 'no model or model_config'}): load it with the code version "
                              f"that wrote it: {state.get('versions', {}).get('git_commit')}")
    return TrainState(**fields)


def read_checkpoint_file(path: Path, map_location) -> dict:
    """The dict a checkpoint file holds, its format and layout version checked."""
    if not path.is_file():
        hint = f" (the folder holds: {', '.join(sorted(p.name for p in path.parent.iterdir())) or 'nothing'})" \
            if path.parent.is_dir() else ""
        raise CheckpointError(f"checkpoint {path} does not exist{hint}; train one with `python train.py --out_dir DIR`")
    try:
        # weights_only: a checkpoint holds tensors and plain Python values only, so loading one runs no code.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # a readable file holding objects other than tensors and plain values
        raise CheckpointError(
            f"{path} is not a checkpoint of this project: it holds Python objects besides tensors and plain values "
            f"({str(e).splitlines()[-1][:200].strip()}), and loading those could run arbitrary code."
        ) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}): the file "
            "is truncated or corrupt. Use another checkpoint of the run, or retrain."
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a checkpoint of this project (no format={FORMAT!r} marker). "
            "If it is a plain state dict with Hugging Face names, rename it to .bin (load_model reads those)."
        )
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint layout version {state.get('version')}; this code reads "
                              f"version {FORMAT_VERSION}. Load it with the code version that wrote it: "
                              f"{state.get('versions', {}).get('git_commit')}")
    return state


def resolve_checkpoint(source: str | os.PathLike) -> Path | None:
    """The checkpoint file `source` names (a .pt file, or a run directory holding best.pt / latest.pt),
    or None when `source` is something else (a published name, a Hugging Face folder or file)."""
    path = Path(source)
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        return None
    if path.suffix == ".pt":
        return path  # load_checkpoint says so if it is missing
    return None


def model_from_state(state: TrainState, *, device="cpu", dtype: torch.dtype | None = None,
                     dropout: float | None = None) -> GPT:
    """The GPT held by a loaded checkpoint."""
    config = GPTConfig(**state.model_config)
    if dropout is not None:
        config.dropout = dropout
    return model_holding(config, state.model).to(device=device, dtype=dtype)


def load_model(source: str | os.PathLike, *, device="cpu", dtype: torch.dtype | None = None,
               dropout: float | None = None) -> GPT:
    """A GPT from anything a user may point at, in eval mode:
    - a train.py checkpoint (`.pt`), or a run directory (its best.pt, else latest.pt);
    - anything `gpt2.weights.load_pretrained` accepts: a published name ("gpt2", ...), a Hugging Face
      folder (config.json + model.safetensors / pytorch_model.bin) or weight file."""
    checkpoint = resolve_checkpoint(source)
    if checkpoint is not None:
        model = model_from_state(load_checkpoint(checkpoint), device=device, dtype=dtype, dropout=dropout)
    else:
        model = load_pretrained(str(source), device=device, dtype=dtype, dropout=dropout)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpt2.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a checkpoint's weights as a Hugging Face GPT-2 folder")
    export.add_argument("checkpoint", help="a train.py checkpoint (.pt) or run directory (uses best.pt, else latest.pt)")
    export.add_argument("out_dir", help="folder to write config.json and the weights into")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="the weights' dtype in the folder (default: the checkpoint's); bfloat16 halves the file")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.checkpoint, dtype=getattr(torch, args.dtype) if args.dtype else None)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    save_hf(model, args.out_dir)
    print(f"exported {args.checkpoint} ({model.num_params():,} parameters) to {args.out_dir}")


if __name__ == "__main__":
    main()
