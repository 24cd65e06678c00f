"""An English pretraining corpus from Debian packages -> GPT-2 token shards: `python -m data.corpus --help`.

The CPU stand-in for WebText: real English that exists offline on any Debian machine, and is not
Wikipedia (data/corpus_sources.py lists the packages and how each is read). The steps:

1. install the packages that are missing (`apt-get update`, `apt-get install`; needs root and apt);
2. read each source into plain-text documents (markup stripped);
3. deduplicate: an exact duplicate of an earlier document (whitespace collapsed) is dropped, then a
   paragraph of at least --min_dedup_chars characters seen earlier in the corpus is dropped from the
   later document (a document left empty is dropped);
4. tokenize each document with its "\n\n" separator, on its own (a document boundary is a token boundary);
5. drop the documents that share a 13-gram with the Wikitext-2 test split (--heldout_raw): token
   13-grams, and word 13-grams (lower-cased letters and digits, so Wikitext's " @-@ " spacing cannot hide
   a shared sentence); both counts go into the manifest;
6. split by document: a document is val when the hash of its text falls in the first --val_fraction
   (stable: it does not depend on the other documents), train otherwise; no test split (the study
   tests on Wikitext-2);
7. write the shards and manifest.json (data/shards.py): packages and versions, source files with
   SHA-256, documents and tokens per source and split, what was dropped and why, the overlap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tiktoken

from data.corpus_sources import SOURCES, SourceError, read_source
from data.shards import ShardError, write_data_dir
from gpt2 import tokenizer
from gpt2.download import sha256_file
from gpt2.cli import config_to_dict, parse_config

SOURCE_NAMES = tuple(s.name for s in SOURCES)
SEPARATOR = "\n\n"  # ends every document, so documents join as paragraphs
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling n-gram hash


@dataclass
class CorpusConfig:
    """Build the offline English pretraining corpus from Debian packages into GPT-2 token shards."""

    out_dir: str = "shards/corpus"  # folder for the train/val shards and manifest.json
    sources: list[str] = field(default_factory=lambda: list(SOURCE_NAMES))  # which sources (data/corpus_sources.py)
    install: bool = True  # apt-get install the sources' packages that are missing (needs root); False: fail instead
    heldout_raw: str = "../shared/wikitext-2-raw/wiki.test.raw"  # text whose n-grams the corpus must not share
    ngram: int = 13  # n of the overlap check (GPT-3's contamination check uses 13-grams)
    val_fraction: float = 0.005  # share of documents (by hash of their text) held out as val
    min_dedup_chars: int = 40  # paragraphs at least this long are deduplicated across the corpus
    shard_tokens: int = 100_000_000  # tokens per shard file
    threads: int = 0  # tokenizer threads; 0: one per CPU core

    def __post_init__(self):
        unknown = sorted(set(self.sources) - set(SOURCE_NAMES))
        if unknown or not self.sources:
            raise ValueError(f"--sources {' '.join(unknown) or '(none)'}: choose among {' '.join(SOURCE_NAMES)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.ngram < 1 or self.min_dedup_chars < 1 or self.threads < 0:
            raise ValueError("--ngram and --min_dedup_chars must be >= 1, --threads >= 0")


class CorpusError(RuntimeError):
    """A problem the user can fix (packages, files); main() prints it without a traceback."""


# ---------------------------------------------------------------- Debian packages


def installed_version(package: str) -> str | None:
    """The installed version of a Debian package, or None (not installed, or no dpkg here)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                             capture_output=True, text=True, check=False)
    except OSError:
        return None
    status, _, version = out.stdout.partition("\t")
    return version if out.returncode == 0 and status.endswith(" installed") else None


def install_command(packages: list[str], sudo: bool = False) -> str:
    prefix = "sudo " if sudo else ""
    return f"{prefix}apt-get update && {prefix}apt-get install -y --no-install-recommends {' '.join(packages)}"


def ensure_packages(packages: list[str], install: bool) -> dict[str, str]:
    """{package: version}, installing the missing ones with apt-get when `install` (and we may)."""
    missing = [p for p in packages if installed_version(p) is None]
    if missing and not install:
        raise CorpusError(f"Debian packages not installed: {' '.join(missing)}. Run `{install_command(missing, True)}`, "
                          "or leave out --no_install to let this command do it")
    if missing:
        if shutil.which("apt-get") is None:
            raise CorpusError(f"the corpus is read from Debian packages ({' '.join(missing)} missing) and apt-get is not "
                              f"on this machine: build it on Debian or Ubuntu, where `{install_command(missing, True)}` "
                              "installs them")
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise CorpusError(f"installing {' '.join(missing)} needs root: run `{install_command(missing, True)}`, "
                              "then this command again")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
            print("+", shlex.join(cmd), file=sys.stderr)
            if subprocess.run(cmd, env=env).returncode != 0:
                raise CorpusError(f"`{shlex.join(cmd)}` failed (its output is above); fix that, then run this again")
    versions = {p: installed_version(p) for p in packages}
    if None in versions.values():
        raise CorpusError(f"still not installed after apt-get: {[p for p, v in versions.items() if v is None]}")
    return versions


# ---------------------------------------------------------------- deduplication


def _key(text: str) -> bytes:
    return hashlib.sha1(" ".join(text.split()).encode()).digest()


def deduplicate(docs: list[tuple[str, str]], min_chars: int) -> tuple[list[tuple[str, str]], dict]:
    """(source, text) documents in order -> the kept ones, and per source what was dropped. A document
    equal to an earlier one (whitespace collapsed) is dropped whole; then a paragraph of >= min_chars
    characters equal to an earlier kept paragraph is dropped from its document."""
    seen_docs, seen_paras, kept = set(), set(), []
    dropped: dict[str, dict] = {}
    for source, text in docs:
        stats = dropped.setdefault(source, {"duplicate_documents": 0, "duplicate_document_chars": 0,
                                            "duplicate_paragraphs": 0, "duplicate_paragraph_chars": 0})
        key = _key(text)
        if key in seen_docs:
            stats["duplicate_documents"] += 1
            stats["duplicate_document_chars"] += len(text)
            continue
        seen_docs.add(key)
        paras = []
        for para in text.split("\n\n"):
            pkey = _key(para) if len(para) >= min_chars else None
            if pkey is not None and pkey in seen_paras:
                stats["duplicate_paragraphs"] += 1
                stats["duplicate_paragraph_chars"] += len(para)
                continue
            if pkey is not None:
                seen_paras.add(pkey)
            paras.append(para)
        if paras:
            kept.append((source, "\n\n".join(paras)))
    return kept, dropped


# ---------------------------------------------------------------- n-gram overlap


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """(len - n + 1,) uint64 rolling hashes of the n-grams of a 1-D id array (wrapping arithmetic)."""
    ids = np.asarray(ids, dtype=np.uint64) + np.uint64(1)
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _P + ids[k : k + count]
    return h


def overlapping_ngrams(docs: list[np.ndarray], heldout: np.ndarray, n: int) -> np.ndarray:
    """(len(docs),) count of each document's n-gram positions whose n-gram occurs in `heldout`. n-grams do
    not cross document boundaries; hash matches are confirmed on the ids, so a collision cannot count."""
    held = ngram_hashes(heldout, n)
    order = np.argsort(held, kind="stable")
    lengths = np.array([len(x) for x in docs], dtype=np.int64)
    ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in docs]) if docs else np.zeros(0, dtype=np.int64)
    hashes = ngram_hashes(ids, n)  # one pass over the whole corpus, then the n-grams that span two documents go
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if docs else np.zeros(0, dtype=np.int64)
    doc_of = np.repeat(np.arange(len(docs)), lengths)[: len(hashes)]
    inside = np.arange(len(hashes)) + n <= (starts + lengths)[doc_of]
    candidates = np.flatnonzero(inside & np.isin(hashes, held))
    counts = np.zeros(len(docs), dtype=np.int64)
    for pos in candidates:
        at = order[np.searchsorted(held, hashes[pos], sorter=order)]  # a held-out position with that hash
        counts[doc_of[pos]] += np.array_equal(ids[pos : pos + n], np.asarray(heldout[at : at + n], dtype=np.int64))
    return counts


_WORD = re.compile(r"[a-z0-9]+")


def word_ids(texts: list[str], vocab: dict[str, int]) -> list[np.ndarray]:
    """Each text as ids of its lower-cased runs of letters and digits (the vocabulary grows as it goes)."""
    return [np.array([vocab.setdefault(w, len(vocab)) for w in _WORD.findall(t.lower())], dtype=np.int64)
            for t in texts]


# ---------------------------------------------------------------- the build


def is_val(text: str, val_fraction: float) -> bool:
    """A document's split, from the hash of its own text alone."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") < val_fraction * 2**64


def read_sources(cfg: CorpusConfig) -> tuple[list[tuple[str, str]], dict]:
    """All documents as (source, text) in source order, and each source's record for the manifest."""
    chosen = [s for s in SOURCES if s.name in cfg.sources]
    versions = ensure_packages([p for s in chosen for p in s.packages], cfg.install)
    docs, records = [], {}
    for source in chosen:
        try:
            texts, files = read_source(source.name)
        except SourceError as e:
            raise CorpusError(str(e)) from e
        print(f"read {source.name}: {len(texts):,} documents from {len(files)} files", file=sys.stderr)
        docs += [(source.name, t) for t in texts]
        records[source.name] = {
            "description": source.description,
            "left_out": source.left_out,
            "packages": {p: versions[p] for p in source.packages},
            "files": [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files],
            "documents_read": len(texts),
            "chars_read": sum(len(t) for t in texts),
        }
    return docs, records


def heldout_overlap(docs: list[tuple[str, str]], ids: list[np.ndarray], cfg: CorpusConfig) -> tuple[np.ndarray, dict]:
    """Per document, whether it shares an n-gram with --heldout_raw (tokens or words), and the counts."""
    path = Path(cfg.heldout_raw)
    if not path.is_file():
        raise CorpusError(f"--heldout_raw {path} does not exist: point it at Wikitext-2's wiki.test.raw "
                          "(../shared/wikitext-2-raw/wiki.test.raw on the developer machines)")
    heldout_text = path.read_text(encoding="utf-8")
    token_counts = overlapping_ngrams(ids, np.array(tokenizer.encode(heldout_text), dtype=np.int64), cfg.ngram)
    vocab: dict[str, int] = {}
    heldout_words = word_ids([heldout_text], vocab)[0]
    word_counts = overlapping_ngrams(word_ids([t for _, t in docs], vocab), heldout_words, cfg.ngram)
    overlaps = (token_counts > 0) | (word_counts > 0)
    dropped = [{"source": docs[i][0], "begins": docs[i][1][:80], "token_ngrams": int(token_counts[i]),
                "word_ngrams": int(word_counts[i])} for i in np.flatnonzero(overlaps)]
    record = {
        "heldout": str(path), "heldout_sha256": sha256_file(path), "n": cfg.ngram,
        "token_ngrams_shared": int(token_counts.sum()), "documents_sharing_token_ngrams": int((token_counts > 0).sum()),
        "word_ngrams_shared": int(word_counts.sum()), "documents_sharing_word_ngrams": int((word_counts > 0).sum()),
        "corpus_token_ngrams": int(sum(max(len(x) - cfg.ngram + 1, 0) for x in ids)),
        "rule": f"documents sharing any token or word {cfg.ngram}-gram with the held-out text are dropped",
        "dropped_documents": dropped[:100],  # the first 100, for a reader to see what they were
    }
    return overlaps, record


def build(cfg: CorpusConfig, argv: list[str] | None = None) -> dict:
    """Read, clean, deduplicate, tokenize, check and split the corpus; write it; return the manifest."""
    try:
        enc = tokenizer.get_encoding()
    except RuntimeError as e:
        raise CorpusError(str(e)) from e
    docs, records = read_sources(cfg)
    docs, dropped = deduplicate(docs, cfg.min_dedup_chars)
    print(f"tokenizing {len(docs):,} documents", file=sys.stderr)
    ids = [np.array(x, dtype=np.uint16)
           for x in enc.encode_ordinary_batch([t + SEPARATOR for _, t in docs], num_threads=cfg.threads or os.cpu_count() or 1)]
    overlaps, overlap = heldout_overlap(docs, ids, cfg)
    splits = {"train": [], "val": []}
    for name, record in records.items():
        record["dropped"] = {**dropped.get(name, {}), "overlapping_heldout_documents": 0}
        record.update({f"{split}_{what}": 0 for split in splits for what in ("documents", "tokens")})
    for (source, text), x, bad in zip(docs, ids, overlaps):
        record = records[source]
        if bad:
            record["dropped"]["overlapping_heldout_documents"] += 1
            continue
        split = "val" if is_val(text, cfg.val_fraction) else "train"
        splits[split].append(x)
        record[f"{split}_documents"] += 1
        record[f"{split}_tokens"] += len(x)
    tokens = {split: np.concatenate(xs) for split, xs in splits.items() if xs}
    if set(tokens) != {"train", "val"}:
        raise CorpusError(f"the corpus has no {'val' if 'train' in tokens else 'train'} documents: "
                          "choose more --sources or a --val_fraction further from 0 and 1")
    manifest = {
        "source": {"dataset": "debian-english", "sources": records},
        "overlap": overlap,
        "tokenizer": {"name": "gpt2", "library": f"tiktoken {tiktoken.__version__}", "vocab_size": tokenizer.VOCAB_SIZE,
                      "eot_id": tokenizer.EOT_ID, "eot_inserted": False},
        "joining": "documents in source order, each ending in a blank line (\\n\\n) and tokenized on its own; "
                   "no <|endoftext|> tokens",
        "dedup": f"exact duplicate documents (whitespace collapsed), then repeated paragraphs of >= "
                 f"{cfg.min_dedup_chars} characters, first occurrence kept",
        "splits": {split: {"documents": len(splits[split])} for split in tokens},
        "command": shlex.join(["python", "-m", "data.corpus", *(sys.argv[1:] if argv is None else argv)]),
        "config": config_to_dict(cfg),
    }
    return write_data_dir(cfg.out_dir, tokens, manifest, cfg.shard_tokens)


def print_summary(manifest: dict) -> None:
    sources, overlap = manifest["source"]["sources"], manifest["overlap"]
    print(f"{'source':<9} {'train tokens':>13} {'val tokens':>11} {'dup docs':>9} {'dup paras':>10} {'overlap':>8}")
    for name, r in sources.items():
        d = r["dropped"]
        print(f"{name:<9} {r['train_tokens']:>13,} {r['val_tokens']:>11,} {d['duplicate_documents']:>9,} "
              f"{d['duplicate_paragraphs']:>10,} {d['overlapping_heldout_documents']:>8,}")
    total = {s: manifest["splits"][s]["n_tokens"] for s in manifest["splits"]}
    print(f"{'total':<9} {total['train']:>13,} {total['val']:>11,}")
    print(f"{overlap['n']}-gram overlap with {overlap['heldout']}: {overlap['token_ngrams_shared']} token n-grams in "
          f"{overlap['documents_sharing_token_ngrams']} documents, {overlap['word_ngrams_shared']} word n-grams in "
          f"{overlap['documents_sharing_word_ngrams']} documents (those documents dropped)")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(CorpusConfig, argv)
    print(json.dumps(config_to_dict(cfg)), file=sys.stderr)
    try:
        manifest = build(cfg, argv)
    except (CorpusError, ShardError) as e:
        sys.exit(f"data.corpus: error: {e}")
    print_summary(manifest)
    return manifest


if __name__ == "__main__":
    main()
