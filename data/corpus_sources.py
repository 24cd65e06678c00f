"""The English corpus's sources: Debian packages of real text, each read into plain-text documents.

Every reader takes the installed files and returns a list of documents (str, paragraphs separated by
one blank line, no trailing newline); the cleaners are pure functions of text, so that tests can feed
them small fixtures. `SOURCES` lists, per source, the Debian packages it needs and the files it reads.

- GCIDE (`dict-gcide`), the Devil's Dictionary (`dict-devil`), the Jargon File (`dict-jargon`) and
  FOLDOC (`dict-foldoc`) come as dictd databases: `NAME.index` (headword, base64 offset, base64 length)
  and `NAME.dict.dz` (gzip). One document per distinct (offset, length) block; the database's own
  `00-database-*` entries (URL, licence text) are left out.
- WordNet (`wordnet-base`): one document per synset of `data.{noun,verb,adj,adv}`: "lemma, lemma: gloss".
- fortunes (`fortunes`, `fortunes-min`): one document per fortune (`%` lines separate them).
- The King James Bible (`bible-kjv-text`, read with `bible` of `bible-kjv`): one document per chapter.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DICTD_DIR = Path("/usr/share/dictd")
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNE_DIR = Path("/usr/share/games/fortunes")
BIBLE_DATA = Path("/usr/lib/bible.data")
# fortune files that are pictures, not text
FORTUNE_SKIP = ("art", "ascii-art")


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]  # Debian packages that install its files
    description: str
    left_out: str  # what the reader strips or skips, for the manifest


DICTD_LEFT_OUT = "the database's own 00-database-* entries (URL, licence); {braces} of cross-references"
SOURCES = (
    Source("gcide", ("dict-gcide",), "Collaborative International Dictionary of English 0.48 (Webster's 1913 + WordNet 1.5)",
           "00-database-* entries; syllabified headwords and pronunciations; source tags ([1913 Webster], "
           "[WordNet 1.5], [PJC], ...); accent codes ([=e] -> e); {braces}"),
    Source("wordnet", ("wordnet-base",), "WordNet 3.0 synsets: lemmas and glosses",
           "the licence header; synset offsets, pointers and frame numbers (only lemmas and gloss are kept)"),
    Source("fortunes", ("fortunes", "fortunes-min"), "fortune cookies: quotations, jokes, verse (not fortunes-off)",
           "the files art and ascii-art (pictures, not text); the % separators"),
    Source("bible", ("bible-kjv-text", "bible-kjv"), "the King James Bible, one chapter per document", "verse numbers"),
    Source("devil", ("dict-devil",), "Ambrose Bierce, The Devil's Dictionary (1911)", DICTD_LEFT_OUT),
    Source("jargon", ("dict-jargon",), "the Jargon File 4.4.7 (hacker slang, prose entries)", DICTD_LEFT_OUT),
    Source("foldoc", ("dict-foldoc",), "Free On-line Dictionary of Computing", DICTD_LEFT_OUT),
)


class SourceError(RuntimeError):
    """An installed source file that is missing or unreadable; the message names the package to install."""


# ---------------------------------------------------------------- shared text clean-up


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each unwrapped: its lines dedented and joined by one space."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        line = " ".join(part.strip() for part in block.splitlines() if part.strip())
        if line:
            out.append(line)
    return out


def unbrace(text: str) -> str:
    """dictd cross-references: `{word}` -> `word`."""
    return re.sub(r"\{([^{}]*)\}", r"\1", text)


def document(paras: list[str]) -> str:
    return "\n\n".join(p for p in paras if p)


# ---------------------------------------------------------------- dictd databases (GCIDE, Devil, Jargon, FOLDOC)

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_number(text: str) -> int:
    """dictd's base64 numbers (most significant digit first)."""
    value = 0
    for c in text:
        value = value * 64 + _B64[c]
    return value


def dictd_blocks(index_text: str, dict_text: bytes) -> list[str]:
    """The database's entries: one text per distinct (offset, length), in file order, `00-database-*` left out."""
    blocks, skipped = set(), set()
    for line in index_text.splitlines():
        head, offset, length = line.split("\t")[:3]
        span = (dictd_number(offset), dictd_number(length))
        (skipped if head.startswith("00-database") or head.startswith("00database") else blocks).add(span)
    return [dict_text[o : o + n].decode("utf-8", errors="replace") for o, n in sorted(blocks - skipped)]


def read_dictd(name: str) -> tuple[list[str], list[Path]]:
    """The blocks of /usr/share/dictd/NAME.{index,dict.dz}, and the files read."""
    index, data = DICTD_DIR / f"{name}.index", DICTD_DIR / f"{name}.dict.dz"
    for path in (index, data):
        if not path.is_file():
            raise SourceError(f"{path} is missing: install its package (`apt-get install dict-{name}`)")
    return dictd_blocks(index.read_text(encoding="utf-8", errors="replace"), gzip.decompress(data.read_bytes())), [index, data]


def clean_dictd(block: str) -> str:
    """A dictd entry (Devil, Jargon, FOLDOC) as paragraphs: cross-reference braces removed, lines unwrapped."""
    return document(paragraphs(unbrace(block)))


# GCIDE: `Word \Syl*la"ble\ (pronunciation), pos. [etymology]`, source tags on lines of their own,
# accented letters written as codes ([=e], [a^], ['e], [aum], ...).
# a headword's syllabified form and pronunciation: ` \Hatch"et*tite\ (-tit)` (there may be several per entry)
_GCIDE_PRONOUNCED = re.compile(r"[ \t]*\\[^\\\n]{1,100}\\([ \t]*\([^()\n]*(?:\([^()\n]*\)[^()\n]*)*\))?")
# (a tag may be wrapped over two lines: "[1913\n   Webster]")
_GCIDE_TAG = re.compile(r"[ \t]*\[[^\]\[]{0,60}?(?:Webster|WordNet|PJC|Century Dict|RDH)[^\]\[]{0,60}\]|^[ \t]*\[AS\][ \t]*$",
                        re.MULTILINE)
_GCIDE_MARKED = re.compile(r"\[[=~'\"`.,^]([a-zA-Z]{1,2})\]|\[([a-zA-Z]{1,2})\^\]")
_GCIDE_NAMED = {"aum": "a", "imac": "i", "ae": "ae", "oe": "oe", "eth": "th", "thorn": "th", "ng": "ng",
                "deg": " degrees", "root": "root of", "sect": "§"}
_GCIDE_NAMED_RE = re.compile(r"\[(" + "|".join(_GCIDE_NAMED) + r")\]")


def clean_gcide(block: str) -> str:
    """A GCIDE entry as plain paragraphs: headword without its syllable marks and pronunciation, source
    tags ([1913 Webster], [WordNet 1.5], [PJC], ...) removed, accent codes as plain letters, braces removed."""
    text = _GCIDE_PRONOUNCED.sub("", block.strip("\n"))
    text = _GCIDE_TAG.sub("", text)
    text = _GCIDE_MARKED.sub(lambda m: m.group(1) or m.group(2), text)
    text = _GCIDE_NAMED_RE.sub(lambda m: _GCIDE_NAMED[m.group(1)], text)
    return document(paragraphs(unbrace(text)))


# ---------------------------------------------------------------- WordNet

def wordnet_gloss(line: str) -> str | None:
    """One line of WordNet's data.POS -> "lemma, lemma: gloss"; None for the licence header (lines that
    begin with two spaces). Format (wndb(5WN)): offset lex_filenum ss_type w_cnt(hex) [word lex_id]... | gloss."""
    if line.startswith("  ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    parts = fields.split()
    n_words = int(parts[3], 16)
    lemmas = [parts[4 + 2 * i] for i in range(n_words)]
    # adjective markers such as "(a)" or "(p)" are glued to the lemma
    lemmas = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in lemmas]
    return f"{', '.join(dict.fromkeys(lemmas))}: {gloss.strip()}"


def read_wordnet() -> tuple[list[str], list[Path]]:
    files = [WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    docs = []
    for path in files:
        if not path.is_file():
            raise SourceError(f"{path} is missing: install its package (`apt-get install wordnet-base`)")
        docs += [g for g in map(wordnet_gloss, path.read_text(encoding="utf-8", errors="replace").splitlines()) if g]
    return docs, files


# ---------------------------------------------------------------- fortunes

def split_fortunes(text: str) -> list[str]:
    """A fortune file -> its fortunes: `%` lines separate them; lines kept (verse and dialogue are lines),
    trailing spaces and tab-indentation kept as spaces."""
    out = []
    for piece in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
        lines = [line.rstrip().expandtabs(4) for line in piece.strip("\n").splitlines()]
        fortune = "\n".join(lines).strip("\n")
        if fortune.strip():
            out.append(fortune)
    return out


def read_fortunes() -> tuple[list[str], list[Path]]:
    if not FORTUNE_DIR.is_dir():
        raise SourceError(f"{FORTUNE_DIR} is missing: install its package (`apt-get install fortunes`)")
    # a fortune file is the one beside its random-access table NAME.dat
    files = sorted(p.with_suffix("") for p in FORTUNE_DIR.glob("*.dat") if p.with_suffix("").is_file()
                   and p.stem not in FORTUNE_SKIP)
    docs = []
    for path in files:
        docs += split_fortunes(path.read_text(encoding="utf-8", errors="replace"))
    return docs, files


# ---------------------------------------------------------------- the King James Bible

def bible_chapters(text: str) -> list[str]:
    """`bible -l100000 Gen1:1-Rev22:21` output -> one document per chapter: its title, then one verse a
    line without the verse number."""
    docs = []
    for chapter in re.split(r"\n(?=\S[^\n]* \d+\n)", "\n" + text.strip("\n")):
        lines = [line.strip() for line in chapter.strip("\n").splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        verses = [re.sub(r"^\d+\s+", "", line) for line in lines[1:]]
        docs.append(lines[0] + "\n\n" + "\n".join(verses))
    return docs


def read_bible() -> tuple[list[str], list[Path]]:
    if not BIBLE_DATA.is_file():
        raise SourceError(f"{BIBLE_DATA} is missing: install its packages (`apt-get install bible-kjv-text bible-kjv`)")
    try:  # bible.data is compressed in bible-kjv's own format: its program is the reader
        out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], capture_output=True, check=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SourceError(f"could not run `bible` to read {BIBLE_DATA} ({e}): `apt-get install bible-kjv`") from e
    return bible_chapters(out.stdout), [BIBLE_DATA]


def read_source(name: str) -> tuple[list[str], list[Path]]:
    """(documents, files read) of one of SOURCES."""
    if name == "wordnet":
        return read_wordnet()
    if name == "fortunes":
        return read_fortunes()
    if name == "bible":
        return read_bible()
    blocks, files = read_dictd(name)
    clean = clean_gcide if name == "gcide" else clean_dictd
    return [d for d in map(clean, blocks) if d], files
