"""The offline English corpus (data/corpus.py, data/corpus_sources.py): markup stripping, deduplication,
n-gram overlap and the manifest on small fixture text made here; no apt, no network. One test reads the
real Debian files and skips where they are not installed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data import corpus, corpus_sources
from data.corpus_sources import (bible_chapters, clean_dictd, clean_gcide, dictd_blocks, dictd_number, split_fortunes,
                                 wordnet_gloss)
from data.loader import SplitTokens

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- markup

GCIDE_ENTRY = """Abandon \\A*ban"don\\ ([.a]*b[a^]n"d[u^]n), v. t. [imp. & p. p.
   {Abandoned}; p. pr. & vb. n. {Abandoning}.] [OF.
   abandoner.]
   1. To cast or drive out; to banish. [Obs.]
      [1913 Webster]

            That he might . . . abandon them from him. --Udall.
      [1913 Webster]

   Syn: To give up; yield; forego; caf['e] and [ae]on.
        [WordNet 1.5 +PJC]
"""


def test_clean_gcide_strips_pronunciation_tags_braces_and_accent_codes():
    assert clean_gcide(GCIDE_ENTRY) == (
        "Abandon, v. t. [imp. & p. p. Abandoned; p. pr. & vb. n. Abandoning.] [OF. abandoner.] "
        "1. To cast or drive out; to banish. [Obs.]\n\n"
        "That he might . . . abandon them from him. --Udall.\n\n"
        "Syn: To give up; yield; forego; cafe and aeon.")


def test_clean_gcide_several_headwords():
    entry = 'Hatchettine \\Hatch"et*tine\\, Hatchettite \\Hatch"et*tite\\ (-tit), n. (Min.)\n   Mineral tallow.\n'
    assert clean_gcide(entry) == "Hatchettine, Hatchettite, n. (Min.) Mineral tallow."


def test_clean_dictd_unwraps_and_unbraces():
    entry = "ad-hockery\n\n    1. Gratuitous assumptions made inside\n    certain {programs}.\n"
    assert clean_dictd(entry) == "ad-hockery\n\n1. Gratuitous assumptions made inside certain programs."


def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out, n = digits[n % 64] + out, n // 64
        if n == 0:
            return out


def test_dictd_index_numbers_and_blocks():
    assert dictd_number("A") == 0 and dictd_number("/") == 63 and dictd_number("BA") == 64
    assert dictd_number(_b64(123_456_789)) == 123_456_789
    entries = [b"licence text\n", b"Apple\n  A fruit.\n", b"Pear\n  Another fruit.\n"]
    offsets = np.cumsum([0] + [len(e) for e in entries])
    data = b"".join(entries)
    span = lambda i: f"{_b64(int(offsets[i]))}\t{_b64(len(entries[i]))}"
    index = "\n".join([f"00-database-info\t{span(0)}", f"apple\t{span(1)}", f"Apple\t{span(1)}", f"pear\t{span(2)}"])
    # the database's own entry left out; two headwords of one block give it once
    assert dictd_blocks(index, data) == ["Apple\n  A fruit.\n", "Pear\n  Another fruit.\n"]


def test_wordnet_gloss_from_data_file_lines():
    line = ("00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 + 00692347 v 0101 "
            "| a general concept formed by extracting common features from specific examples  ")
    assert wordnet_gloss(line) == ("abstraction, abstract entity: a general concept formed by extracting common "
                                   "features from specific examples")
    adj = "00001740 00 a 01 able(a) 0 005 | (usually followed by `to') having the necessary means  "
    assert wordnet_gloss(adj) == "able: (usually followed by `to') having the necessary means"
    assert wordnet_gloss("  1 This software and database is being provided to you, the LICENSEE, by  ") is None


def test_split_fortunes_on_percent_lines():
    text = "First fortune,\n\tover two lines.\n%\n%\nSecond.\n    -- Someone\n%\n"
    assert split_fortunes(text) == ["First fortune,\n    over two lines.", "Second.\n    -- Someone"]


def test_bible_chapters_one_document_each_without_verse_numbers():
    text = ("\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n  2 And the earth was "
            "without form.\n\n1 Samuel 2\n\n  1 And Hannah prayed.\n")
    assert bible_chapters(text) == [
        "Genesis 1\n\nIn the beginning God created the heaven and the earth.\nAnd the earth was without form.",
        "1 Samuel 2\n\nAnd Hannah prayed."]


# ---------------------------------------------------------------- dedup and overlap


def test_deduplicate_documents_then_paragraphs():
    long_para = "A paragraph long enough to be deduplicated across documents."
    docs = [("a", f"Intro one.\n\n{long_para}"), ("a", f"Intro   one.\n\n{long_para}"),
            ("b", f"Short.\n\n{long_para}"), ("b", long_para), ("b", "Short.")]
    kept, dropped = corpus.deduplicate(docs, min_chars=40)
    # doc 2 equals doc 1 once whitespace is collapsed; doc 3 loses the repeated paragraph, keeps the short one;
    # doc 4 is left empty and dropped; doc 5 repeats a paragraph too short to be deduplicated
    assert kept == [docs[0], ("b", "Short."), ("b", "Short.")]
    assert dropped["a"] == {"duplicate_documents": 1, "duplicate_document_chars": len(docs[1][1]),
                            "duplicate_paragraphs": 0, "duplicate_paragraph_chars": 0}
    assert dropped["b"]["duplicate_paragraphs"] == 2 and dropped["b"]["duplicate_documents"] == 0
    assert dropped["b"]["duplicate_paragraph_chars"] == 2 * len(long_para)


def test_overlapping_ngrams_counts_exact_shared_positions_within_documents():
    rng = np.random.default_rng(0)
    heldout = rng.integers(0, 50_000, size=500)
    n = 13
    clean = rng.integers(0, 50_000, size=300)
    copied = np.concatenate([rng.integers(0, 50_000, size=40), heldout[100:115], rng.integers(0, 50_000, size=40)])
    short = np.concatenate([rng.integers(0, 50_000, size=20), heldout[200:212]])  # a shared 12-gram only
    # a 13-gram of heldout split over two documents is no document's n-gram
    left, right = heldout[300:306], heldout[306:313]
    counts = corpus.overlapping_ngrams([clean, copied, short, left, right], heldout, n)
    assert counts.tolist() == [0, 15 - n + 1, 0, 0, 0]
    assert corpus.ngram_hashes(np.arange(12), n).shape == (0,)


def test_word_ids_see_through_wikitext_spacing():
    vocab = {}
    wiki, plain = corpus.word_ids([" The well @-@ known , old Road ", "the well-known old road"], vocab)
    assert wiki.tolist() == plain.tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- the build, end to end on fixture sources

HELDOUT = (" = Valkyria Chronicles = \n\n Senjō no Valkyria 3 is a tactical role @-@ playing video game developed "
           "by Sega and Media.Vision for the PlayStation Portable . Released in January 2011 in Japan , it is the "
           "third game in the series . \n")


def _fixture_sources(tmp_path):
    files = {name: tmp_path / f"{name}.txt" for name in ("gcide", "fortunes")}
    files["gcide"].write_text("fixture gcide")
    files["fortunes"].write_text("fixture fortunes")
    docs = {
        "gcide": [f"Word{i}, n. The meaning number {i} of a word, in plain words." for i in range(300)]
                 + ["Word0, n. The meaning number 0 of a word, in plain words."],  # an exact duplicate
        "fortunes": [f"Fortune {i}: a penny saved is a penny earned, said number {i}." for i in range(100)]
                    + ["He said the game was developed by Sega and Media.Vision for the PlayStation Portable. "
                       "Released in January 2011 in Japan, it is the third game."],  # shares word 13-grams
    }
    return docs, files


def test_build_writes_shards_and_manifest(tmp_path, monkeypatch, encoding):
    docs, files = _fixture_sources(tmp_path)
    monkeypatch.setattr(corpus, "read_source", lambda name: (docs[name], [files[name]]))
    monkeypatch.setattr(corpus, "installed_version", lambda package: "9.9-test")
    heldout = tmp_path / "wiki.test.raw"
    heldout.write_text(HELDOUT)
    out = tmp_path / "corpus"
    argv = ["--out_dir", str(out), "--sources", "gcide", "fortunes", "--heldout_raw", str(heldout),
            "--val_fraction", "0.1", "--no_install"]
    manifest = corpus.main(argv)
    assert manifest == json.loads((out / "manifest.json").read_text())
    sources = manifest["source"]["sources"]
    assert sources["gcide"]["packages"] == {"dict-gcide": "9.9-test"}
    assert sources["gcide"]["files"][0]["sha256"] == hashlib.sha256(b"fixture gcide").hexdigest()
    assert sources["gcide"]["dropped"]["duplicate_documents"] == 1
    assert sources["fortunes"]["dropped"]["overlapping_heldout_documents"] == 1
    assert manifest["overlap"]["documents_sharing_word_ngrams"] == 1
    assert manifest["overlap"]["documents_sharing_token_ngrams"] == 0  # Wikitext's spacing hides it from tokens
    [dropped] = manifest["overlap"]["dropped_documents"]
    assert dropped["source"] == "fortunes" and docs["fortunes"][-1].startswith(dropped["begins"])
    assert dropped["token_ngrams"] == 0 and dropped["word_ngrams"] == 9  # "developed ... third game": 21 words, 9 13-grams
    for split in ("train", "val"):
        tokens = SplitTokens(out, split)
        assert len(tokens) == manifest["splits"][split]["n_tokens"] == sum(r[f"{split}_tokens"] for r in sources.values())
        assert manifest["splits"][split]["documents"] == sum(r[f"{split}_documents"] for r in sources.values())
    assert sum(r["train_documents"] + r["val_documents"] for r in sources.values()) == 400
    val_text = encoding.decode(SplitTokens(out, "val")[:].tolist())
    kept = [d for name in ("gcide", "fortunes") for d in docs[name][:-1]]
    expected_val = [d for d in kept if corpus.is_val(d, 0.1)]
    assert 0 < len(expected_val) < 100 and val_text == "".join(d + "\n\n" for d in expected_val)


def test_missing_packages_give_the_command_to_run(monkeypatch):
    monkeypatch.setattr(corpus, "installed_version", lambda package: None)
    with pytest.raises(corpus.CorpusError, match=r"sudo apt-get update && sudo apt-get install -y .*dict-gcide"):
        corpus.ensure_packages(["dict-gcide"], install=False)
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(corpus.CorpusError, match="apt-get is not on this machine"):
        corpus.ensure_packages(["dict-gcide"], install=True)
    monkeypatch.setattr(corpus.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(corpus.os, "geteuid", lambda: 1000)
    with pytest.raises(corpus.CorpusError, match="needs root: run `sudo apt-get update"):
        corpus.ensure_packages(["dict-gcide"], install=True)


def test_bad_sources_flag_names_the_choices():
    with pytest.raises(ValueError, match="--sources webtext: choose among gcide wordnet"):
        corpus.CorpusConfig(sources=["webtext"])


# ---------------------------------------------------------------- the real Debian files, where installed


@pytest.mark.slow
@pytest.mark.skipif(not (corpus_sources.DICTD_DIR / "gcide.index").is_file()
                    or not (corpus_sources.WORDNET_DIR / "data.noun").is_file(),
                    reason="dict-gcide / wordnet-base not installed (`make corpus` installs them)")
def test_real_gcide_and_wordnet_are_clean_text():
    gcide, _ = corpus_sources.read_source("gcide")
    assert len(gcide) > 100_000
    joined = "\n".join(gcide)
    for markup in ("[1913 Webster]", "Webster]", "[PJC]", "[=e]", "[a^]", "['e]", "00-database"):
        assert markup not in joined, markup
    # left: a few entries whose markup is broken in the source ("{accessorial ]"), or that write a backslash
    for markup in ("{", "}", "\\", "[WordNet"):
        assert sum(markup in d for d in gcide) < 200, markup
    wordnet, _ = corpus_sources.read_source("wordnet")
    assert len(wordnet) == 117_659  # WordNet 3.0's synsets
    assert "entity: that which is perceived or known or inferred to have its own distinct existence" in wordnet[0]


# ---------------------------------------------------------------- make base resumes whatever run its folder holds


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_base_resumes_when_its_folder_holds_a_checkpoint(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text("{}")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than pyproject.toml: make does not reinstall
    run = lambda: subprocess.run(["make", "-n", "base", f"VENV={venv}", f"CORPUS={tmp_path / 'corpus'}",
                                  f"BASE_DIR={tmp_path / 'base'}"], cwd=REPO, capture_output=True, text=True, check=True)
    first = run().stdout
    assert "train.py --init scratch" in first and f"--data_dir {tmp_path / 'corpus'}" in first
    assert "--resume" not in first
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "latest.pt").touch()
    assert "--resume" in run().stdout
