"""Files that appear complete or not at all: every shard, manifest, checkpoint and weight file goes
through `atomic_open`, so an interrupted run never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open `path` for binary writing so that it appears complete or not at all.

    Writes go to a hidden `.{name}.*.tmp` file in the same folder; on success it is fsynced and renamed
    over `path` (os.replace, atomic on POSIX and Windows); on any exception it is deleted. A process
    killed outright may leave the `.tmp` file behind; nothing reads those.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o644)  # mkstemp makes the file private (0600); shards and manifests are not secrets
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
