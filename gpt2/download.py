"""Fetching the published GPT-2 checkpoints from the Hugging Face hub, once, into a cache.

`download(name)` returns the cache directory holding `name`'s config.json and model.safetensors
($GPT2_CACHE_DIR/<name>/<revision>, default ~/.cache/gpt2-distill; $GPT2_HF_ENDPOINT names a mirror).
`gpt2` is pinned to a revision and each file's size and sha256; the other names follow "main" and are
checked against the server's Content-Length (and then by the safetensors reader's validation).
Each file arrives through a `.part` file that a dropped connection or a second run resumes with an
HTTP Range request; a lock keeps two processes (ranks of one job) from writing the same part, and
the file is renamed into place only once it is complete and checked. Reading the files and mapping
them onto our GPT is gpt2/weights.py's work.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from gpt2.config import PUBLISHED

try:
    import fcntl  # to lock a download against a second process
except ImportError:  # Windows
    fcntl = None

HF_ENDPOINT = "https://huggingface.co"  # overridden by $GPT2_HF_ENDPOINT (a mirror, or a test server)
# name: (revision, {file: (size, sha256)}); the names not here follow "main"
PINNED = {
    "gpt2": ("607a30d783dfa663caf39e06633721c8d4cfcd7e", {
        "config.json": (665, "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4"),
        "model.safetensors": (548_105_171, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
    }),
}


class DownloadError(RuntimeError):
    """A published checkpoint that could not be fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("GPT2_CACHE_DIR") or Path.home() / ".cache" / "gpt2-distill").expanduser()


def download(name: str, *, endpoint: str | None = None) -> Path:
    """The cache directory holding `name`'s config.json and model.safetensors, fetched if absent."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown GPT-2 model {name!r}; the published ones are: {', '.join(PUBLISHED)}")
    endpoint = (endpoint or os.environ.get("GPT2_HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
    revision, checks = PINNED.get(name, ("main", {}))
    directory = cache_dir() / name / revision
    for filename in ("config.json", "model.safetensors"):
        size, sha256 = checks.get(filename, (None, None))
        dest = directory / filename
        if dest.is_file() and size is not None and dest.stat().st_size != size:  # a damaged cache
            print(f"{dest} is {dest.stat().st_size:,} bytes, not {size:,}: downloading it again", file=sys.stderr)
            dest.unlink()
        with _exclusive(directory / f".{filename}.lock"):  # ranks of one job: one downloads, the rest wait
            if not dest.is_file():
                url = f"{endpoint}/openai-community/{name}/resolve/{revision}/{filename}"
                download_file(url, dest, size=size, sha256=sha256)
    return directory


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (where the OS offers fcntl) so that two processes
    never append to one .part file."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "wb") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def download_file(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
                  attempts: int = 3) -> Path:
    """Fetch `url` to `dest` through `dest.part`: resumed with an HTTP Range request when a part is
    already there or the connection drops, checked against Content-Length, `size` and `sha256`,
    then renamed into place, so `dest` only ever exists complete."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = (f"download it yourself and pass its directory or file to load_pretrained instead, or set "
            f"GPT2_CACHE_DIR to a cache that holds it (this one is {cache_dir()})")
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "gpt2-distill", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
                if response.status == 206:  # the rest of the file: "Content-Range: bytes have-last/total"
                    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
                    if not match or int(match[1]) != have:
                        part.unlink()
                        continue
                    total = int(match[2]) if match[2] != "*" else None
                else:  # the whole file: the server ignored the Range, so start over
                    have, length = 0, response.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                if size is not None and total is not None and total != size:
                    raise DownloadError(f"{url} is {total:,} bytes but {size:,} were expected; refusing it. {hint}")
                with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B",
                                                                    unit_scale=True, desc=dest.name) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # our part is not a prefix the server can continue: start over
                part.unlink()
                continue
            raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}. {hint}") from e
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            got = part.stat().st_size if part.exists() else 0
            if got > have and attempt < attempts:  # some progress: resume where it stopped
                continue
            kept = f" ({got:,} bytes kept in {part}; run again to resume)" if got else ""
            raise DownloadError(f"cannot download {url}: {e}{kept}. {hint}") from e
        got = part.stat().st_size
        if total is not None and got < total:  # the connection closed early without an error
            continue
        expected = size if size is not None else total
        if expected is not None and got != expected:
            part.unlink()
            raise DownloadError(f"{url} gave {got:,} bytes but {expected:,} were expected (deleted). {hint}")
        if sha256 is not None and sha256_file(part) != sha256:
            part.unlink()
            raise DownloadError(f"{url} does not have the expected sha256 {sha256} (deleted). {hint}")
        os.replace(part, dest)
        return dest
    raise DownloadError(f"cannot download {url}: still incomplete after {attempts} attempts "
                        f"({part} kept; run again to resume). {hint}")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read 16 MB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()
