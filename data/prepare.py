"""Text -> GPT-2 token shards: `python -m data.prepare --help`.

Sources (one per run):
- Wikitext-2 raw (wikitext-2-raw-v1), downloaded once into --cache_dir, or read from --raw_dir.
  Splits: train = wiki.train.raw, val = wiki.valid.raw, test = wiki.test.raw. Each file's SHA-1 is
  checked against the published one. A split missing from --raw_dir is reported and skipped.
- --offline: for machines that have only wiki.valid.raw and wiki.test.raw (the train split cannot be
  fetched). train = the head of wiki.valid.raw, val = its tail (--val_fraction, cut at a line end),
  test = wiki.test.raw. The manifest says so: numbers from such shards are not comparable with
  published Wikitext-2 results.
- --text PATH ...: your own corpus, .txt files or folders of them (searched recursively, sorted by
  path). The last --val_fraction of its characters becomes val (cut at a line end, so that a file can
  straddle train and val), the rest train; there is no test split.

Joining convention: a split's token stream decodes to the split's text byte for byte. Files are
concatenated with nothing in between and no <|endoftext|> token is inserted anywhere; each file is
tokenized on its own, so a file boundary is always a token boundary.

Tokenization runs on chunks of text in parallel threads (tiktoken releases the GIL). A chunk ends right
after the last non-space character of a line, i.e. where the next character is whitespace. GPT-2's
pre-tokenizer always splits there (a token holding a non-space character can hold a space only as its
first character) and none of its look-aheads reaches past it, so chunked and single-call encoding
give the same tokens (tests/test_data.py checks this).

Output: --out_dir/{train,val,test}_{index:06d}.bin (see data/shards.py) and manifest.json: the
source with checksums, tokenizer, token counts per split and per shard, the offline flag, the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

from gpt2 import tokenizer
from gpt2.cli import config_to_dict, parse_config
from data.shards import ShardError, write_data_dir
from gpt2.atomic import atomic_open

ZIP_URL = "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"
ZIP_BYTES = 4_721_645
ZIP_SHA256 = "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
# split -> (file name, published SHA-1); the zip holds them under wikitext-2-raw/
WIKITEXT_FILES = {
    "train": ("wiki.train.raw", "d33faf256327882db0edc7c67cd098d1051a2112"),
    "val": ("wiki.valid.raw", "db78d4db83700cba1b1bf4a9381087043db2876d"),
    "test": ("wiki.test.raw", "6f1fe2054a940eebfc76b284b09680763b37f5ea"),
}
SPLITS = ("train", "val", "test")
CHUNK_CHARS = 1 << 18  # ~256 KiB of text per tokenizer call: enough chunks to keep every thread busy
# A safe chunk end: a non-space character followed by the rest of its line's whitespace. Python's \S
# excludes every character the tokenizer's \s matches, and the whitespace listed here is ASCII.
_LINE_END = re.compile(r"\S[ \t\r\f\v]*\n")


@dataclass
class PrepareConfig:
    """Tokenize Wikitext-2 (or your own text) with GPT-2's BPE into llm.c token shards."""

    out_dir: str = "shards/wikitext2"  # folder for the {split}_NNNNNN.bin shards and manifest.json
    raw_dir: str | None = None  # read wiki.{train,valid,test}.raw from this folder instead of downloading
    text: list[str] = field(default_factory=list)  # your own corpus instead of Wikitext-2: .txt files or folders of them
    offline: bool = False  # without wiki.train.raw: train on the head of wiki.valid.raw, val on its tail, test on wiki.test.raw
    val_fraction: float = 0.1  # with --text or --offline: the fraction of the text, at its end, held out as val
    cache_dir: str = "cache/wikitext"  # where the downloaded zip is kept (reused when its checksum matches)
    shard_tokens: int = 100_000_000  # tokens per shard file (llm.c's size; a Wikitext-2 split fits in one)
    allow_checksum_mismatch: bool = False  # accept input files whose checksum differs from the published one (recorded)
    threads: int = 0  # tokenizer threads; 0: one per CPU core

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if not 1 <= self.shard_tokens <= 2**31 - 1:
            raise ValueError(f"--shard_tokens must lie in [1, 2**31 - 1] (the header stores an int32), got {self.shard_tokens}")
        if self.text and (self.raw_dir or self.offline):
            raise ValueError("--text is your own corpus; it cannot be combined with --raw_dir or --offline (Wikitext-2)")
        if self.offline and not self.raw_dir:
            raise ValueError("--offline prepares from local files: give --raw_dir DIR (holding wiki.valid.raw, wiki.test.raw)")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")


class PrepareError(RuntimeError):
    """A problem with the input the user can fix; main() prints it without a traceback."""


# ---------------------------------------------------------------- tokenization


def safe_cut(text: str, pos: int) -> int:
    """The first chunk boundary at or after `pos` (len(text) if none): just after a line's last non-space."""
    m = _LINE_END.search(text, max(pos - 1, 0))
    return len(text) if m is None else m.start() + 1


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Cut text into pieces of about chunk_chars that tokenize, one by one, exactly as the whole does."""
    chunks, begin = [], 0
    while begin < len(text):
        end = safe_cut(text, begin + chunk_chars)
        chunks.append(text[begin:end])
        begin = end
    return chunks


def encode_documents(docs: list[str], threads: int = 0, desc: str = "tokenize", chunk_chars: int | None = None) -> np.ndarray:
    """Documents -> one uint16 token stream: each document encoded on its own, in parallel chunks."""
    chunks = [c for doc in docs for c in chunk_text(doc, chunk_chars or CHUNK_CHARS)]
    threads = threads or os.cpu_count() or 1
    bar = tqdm(total=sum(len(c) for c in chunks), unit="char", unit_scale=True, desc=desc, leave=False)
    pieces = []
    with ThreadPoolExecutor(threads) as pool, bar:
        for chunk, ids in zip(chunks, pool.map(tokenizer.encode, chunks)):  # in order
            pieces.append(np.array(ids, dtype=np.uint16))
            bar.update(len(chunk))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def split_tail(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): val is the last `val_fraction` of the characters, starting at a safe line-end cut."""
    total = sum(len(d) for d in docs)
    target, start = round(total * (1.0 - val_fraction)), 0
    for i, doc in enumerate(docs):
        if start + len(doc) > target:
            cut = safe_cut(doc, target - start)
            train, val = docs[:i] + [doc[:cut]], [doc[cut:]] + docs[i + 1 :]
            break
        start += len(doc)
    else:
        train, val = docs, []
    train, val = [d for d in train if d], [d for d in val if d]
    if not train or not val:
        raise PrepareError(
            f"--val_fraction {val_fraction} of {total} characters leaves {'train' if not train else 'val'} empty "
            "(val starts at the end of a line): give more text, or a val_fraction further from 0 and 1"
        )
    return train, val


# ---------------------------------------------------------------- sources


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _decode(data: bytes, where) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrepareError(f"{where}: not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8 first") from e


def _checked(name: str, data: bytes, expected: str, allow_mismatch: bool, where) -> dict:
    """A Wikitext file's record for the manifest; a checksum mismatch is an error unless allowed."""
    actual = _sha1(data)
    if actual != expected:
        problem = f"{where}: SHA-1 is {actual}, the published {name} has {expected} (a different or damaged file)"
        if not allow_mismatch:
            raise PrepareError(f"{problem}; fetch the file again, or pass --allow_checksum_mismatch to use it anyway")
        print(f"warning: {problem}; using it anyway (--allow_checksum_mismatch)", file=sys.stderr)
    return {"file": name, "bytes": len(data), "sha1": actual, "expected_sha1": expected, "verified": actual == expected}


def download_wikitext(cache_dir: Path, allow_mismatch: bool) -> Path:
    """The Wikitext-2 raw zip in cache_dir, downloaded (atomically, with a progress bar) if needed."""
    path = cache_dir / Path(ZIP_URL).name
    if path.is_file() and (allow_mismatch or hashlib.sha256(path.read_bytes()).hexdigest() == ZIP_SHA256):
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(ZIP_URL, timeout=60) as response, atomic_open(path) as f:
            total = int(response.headers.get("Content-Length") or ZIP_BYTES)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {path.name}") as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != ZIP_SHA256:
                problem = f"{ZIP_URL}: downloaded SHA-256 {digest.hexdigest()} differs from the published {ZIP_SHA256}"
                if not allow_mismatch:  # raising here discards the partial file
                    raise PrepareError(f"{problem}; try again later, or pass --allow_checksum_mismatch")
                print(f"warning: {problem}; keeping it (--allow_checksum_mismatch)", file=sys.stderr)
    except (urllib.error.URLError, OSError) as e:
        raise PrepareError(
            f"could not download {ZIP_URL} into {cache_dir} ({e}). Without internet, prepare from local files: "
            "`python -m data.prepare --raw_dir DIR` (DIR holding wiki.{train,valid,test}.raw), or "
            "`--raw_dir DIR --offline` when DIR has only the valid and test splits (`make data-offline`)"
        ) from e
    return path


def read_wikitext(cfg: PrepareConfig) -> tuple[dict[str, list[str]], dict]:
    """{split: [text]} for the Wikitext-2 splits found, and the manifest's record of where they came from."""
    files, source = {}, {"dataset": "wikitext-2-raw-v1"}
    if cfg.raw_dir:
        raw_dir = Path(cfg.raw_dir)
        if not raw_dir.is_dir():
            raise PrepareError(f"--raw_dir {raw_dir} is not a folder; point it at the folder holding wiki.valid.raw etc.")
        source["raw_dir"] = str(raw_dir)
        for split, (name, _) in WIKITEXT_FILES.items():
            if split == "train" and cfg.offline:
                continue  # the offline layout never uses the official train split
            if (raw_dir / name).is_file():
                files[split] = ((raw_dir / name).read_bytes(), raw_dir / name)
            else:
                print(f"note: {raw_dir / name} is absent: no {split} split from it", file=sys.stderr)
    else:
        zip_path = download_wikitext(Path(cfg.cache_dir), cfg.allow_checksum_mismatch)
        source.update(url=ZIP_URL, zip_sha256=hashlib.sha256(zip_path.read_bytes()).hexdigest())
        with zipfile.ZipFile(zip_path) as z:
            for split, (name, _) in WIKITEXT_FILES.items():
                files[split] = (z.read(f"wikitext-2-raw/{name}"), f"{zip_path}:wikitext-2-raw/{name}")
    source["files"] = {
        split: _checked(WIKITEXT_FILES[split][0], data, WIKITEXT_FILES[split][1], cfg.allow_checksum_mismatch, where)
        for split, (data, where) in files.items()
    }
    texts = {split: [_decode(data, where)] for split, (data, where) in files.items()}
    if cfg.offline:
        if "val" not in texts:
            raise PrepareError("--offline trains on wiki.valid.raw, which is absent; point --raw_dir at a folder holding it")
        texts["train"], texts["val"] = split_tail(texts["val"], cfg.val_fraction)
        source["offline_layout"] = (
            f"train = the first {1 - cfg.val_fraction:.0%} of wiki.valid.raw, val = the rest of it "
            "(cut at a line end), test = wiki.test.raw; the official train split is not used"
        )
    if not texts:
        raise PrepareError(f"no Wikitext-2 split found in {cfg.raw_dir}")
    return texts, source


def text_files(paths: list[str]) -> list[Path]:
    """The .txt files named, or found (recursively) in the folders named, each once, sorted by path."""
    found = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(q for q in p.rglob("*.txt") if q.is_file())
        elif p.is_file():
            found.add(p)
        else:
            raise PrepareError(f"--text {p}: no such file or folder")
    if not found:
        raise PrepareError(f"--text {' '.join(paths)}: no .txt files there")
    return sorted(found)


def read_text(cfg: PrepareConfig) -> tuple[dict[str, list[str]], dict]:
    files = text_files(cfg.text)
    blobs = [p.read_bytes() for p in files]
    docs = [_decode(b, p) for b, p in zip(blobs, files)]
    train, val = split_tail(docs, cfg.val_fraction)
    source = {
        "dataset": "text",
        "files": [{"path": str(p), "bytes": len(b), "sha1": _sha1(b)} for p, b in zip(files, blobs)],
        "layout": f"files concatenated in path order; the last {cfg.val_fraction:.0%} of the characters "
        "(from a line end) is val, the rest train; no test split",
    }
    return {"train": train, "val": val}, source


# ---------------------------------------------------------------- tokens -> shards and manifest


def run(cfg: PrepareConfig, argv: list[str] | None = None) -> dict:
    """Prepare the shards that cfg describes; returns the manifest (also written to out_dir)."""
    try:
        tokenizer.get_encoding()  # the BPE files: fail now, not after reading the sources
    except RuntimeError as e:
        raise PrepareError(str(e)) from e
    texts, source = read_text(cfg) if cfg.text else read_wikitext(cfg)
    tokens, splits = {}, {}
    for split in SPLITS:
        if split not in texts:
            continue
        text_bytes = "".join(texts[split]).encode("utf-8")
        tokens[split] = encode_documents(texts[split], cfg.threads, desc=f"tokenize {split}")
        splits[split] = {
            "text_bytes": len(text_bytes),
            "text_sha1": _sha1(text_bytes),  # of the exact text the tokens decode to
        }
    manifest = {
        "source": source,
        "offline": cfg.offline,
        "tokenizer": {
            "name": "gpt2",
            "library": f"tiktoken {tiktoken.__version__}",
            "vocab_size": tokenizer.VOCAB_SIZE,
            "eot_id": tokenizer.EOT_ID,
            "eot_inserted": False,
        },
        "joining": "files concatenated with nothing between them, each tokenized on its own; "
        "a split's tokens decode to its text byte for byte",
        "splits": splits,
        "command": shlex.join(["python", "-m", "data.prepare", *(sys.argv[1:] if argv is None else argv)]),
        "config": config_to_dict(cfg),
    }
    return write_data_dir(cfg.out_dir, tokens, manifest, cfg.shard_tokens)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(PrepareConfig, argv)
    print(json.dumps(config_to_dict(cfg)))
    try:
        manifest = run(cfg, argv)
    except (PrepareError, ShardError) as e:
        sys.exit(f"data.prepare: error: {e}")
    print(f"{'split':<6} {'tokens':>12} {'text bytes':>12} {'shards':>6}   -> {cfg.out_dir}")
    for split, info in manifest["splits"].items():
        print(f"{split:<6} {info['n_tokens']:>12,} {info['text_bytes']:>12,} {len(info['shards']):>6}")
    if cfg.offline:
        print(f"offline layout: {manifest['source']['offline_layout']}")
    return manifest


if __name__ == "__main__":
    main()
