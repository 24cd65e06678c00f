"""Article starts in a GPT-2 token stream (data/articles.py), and the test split cut between articles
(studies.evaluations.cut_test_split): on hand-written Wikitext-like text, and on the real test split when
../shared has wiki.test.raw, tokenized as data.prepare tokenizes it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import SHARED

from data.articles import article_starts, snap_to_article
from data.prepare import encode_documents
from gpt2 import tokenizer
from studies.evaluations import cut_test_split

# Three articles (Alpha, Beta Ω, Gamma); section headings at two depths; a formula line that reads like a heading
# but has text around it; characters that GPT-2 splits into byte tokens before a heading.
TEXT = (" \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It was used by 杜甫 ( Du Fu ) . \n"
        " With inductance L \n = 1 henry and capacitance C = \n 1 farad . \n \n = Beta Ω = \n \n Beta follows 🙂 \n"
        " \n = = = Sub = = = \n \n More text . \n \n = Gamma = \n \n Last . \n")
TITLES = [" = Alpha = ", " = Beta Ω = ", " = Gamma = "]


def heading_lines(text: str) -> list[int]:
    """The character offsets of the top-level heading lines, by lines: ' = Title = ' (no '=' next to the outer
    ones) with a blank line before it (or first) and after it."""
    lines, offsets, at = text.split("\n"), [], 0
    for i, line in enumerate(lines):
        blank_around = (i == 0 or not lines[i - 1].strip()) and (i + 1 == len(lines) or not lines[i + 1].strip())
        if re.fullmatch(r" = [^=].*[^=] = ", line) and blank_around:
            offsets.append(at)
        at += len(line) + 1
    return offsets


def check_starts(text: str, tokens: np.ndarray, starts: np.ndarray) -> None:
    """Each start is a ' =' token, and the tokens before it decode to exactly the text before its heading line."""
    raw = text.encode("utf-8")
    lines = heading_lines(text)
    assert len(starts) == len(lines)
    for start, line in zip(starts, lines):
        assert tokenizer.decode_bytes(tokens[start : start + 1]) == b" ="
        assert tokenizer.decode_bytes(tokens[:start]) == raw[: len(text[:line].encode("utf-8"))]


def test_article_starts_on_wikitext_like_text(encoding):
    tokens = np.array(tokenizer.encode(TEXT), dtype=np.uint16)
    starts = article_starts(tokens)
    assert starts.dtype == np.int64 and len(starts) == 3  # not the sections, not the formula line
    assert starts[0] == 2  # after the leading blank line's ' ' and '\n' tokens, as in wiki.test.raw
    assert [tokenizer.decode(tokens[s : s + 6]).split("\n")[0] for s in starts] == TITLES
    check_starts(TEXT, tokens, starts)
    assert list(article_starts(tokens[2:])) == list(starts - 2)  # a text opening with its heading: start 0
    assert len(article_starts(np.zeros(0, dtype=np.uint16))) == 0


def test_snap_to_article_nearest_and_ties():
    starts = np.array([2, 100, 300])
    assert [snap_to_article(starts, i) for i in (0, 2, 51, 52, 100, 199, 200, 201, 10_000)] == \
        [2, 2, 2, 100, 100, 100, 100, 300, 300]  # 51 and 200 are ties: the earlier start
    with pytest.raises(ValueError, match="no article starts"):
        snap_to_article(np.zeros(0, dtype=np.int64), 5)


def test_cut_test_split_at_article_starts():
    starts = np.array([2, 100, 300, 520, 800])
    dev, held = cut_test_split(1000, 250, 400, starts)  # dev-test to 300; 300 + 400 = 700: nearest boundary 800
    assert (dev.first, dev.n_tokens, held.first, held.n_tokens) == (0, 300, 300, 500)
    assert cut_test_split(1000, 250, 0, starts)[1].n_tokens == 700  # 0: to the end of the split
    assert cut_test_split(1000, 250, 700, list(starts))[1].n_tokens == 700  # reaching the end: to the end
    assert cut_test_split(1000, 250, 650, starts)[1].n_tokens == 700  # 950: the split's end is the nearest boundary
    assert cut_test_split(1000, 250, 10, starts)[1].n_tokens == 220  # at least one article: to 520
    assert cut_test_split(1000, 250, 110, starts)[1].n_tokens == 220  # 410: a tie of 520 and 300, 300 excluded
    assert cut_test_split(1000, 200, 0, starts)[0].n_tokens == 100  # 200: a tie of 100 and 300, the earlier
    with pytest.raises(ValueError, match="snapped to the article start at token 0"):
        cut_test_split(1000, 40, 0, np.array([0, 500]))


def test_cut_test_split_without_starts_is_unchanged():
    assert cut_test_split(286_221, 60_000, 100_000) == cut_test_split(286_221, 60_000, 100_000, None)
    dev, held = cut_test_split(286_221, 60_000, 100_000)
    assert (dev.n_tokens, held.first, held.n_tokens) == (60_000, 60_000, 100_000)


@pytest.fixture(scope="module")
def test_split():
    """wiki.test.raw's text and its tokens as data.prepare makes the test split (the file decoded as UTF-8,
    nothing stripped or added, no <|endoftext|>), or skip."""
    path = SHARED / "wikitext-2-raw" / "wiki.test.raw"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the Wikitext-2 test split, on developer machines)")
    try:
        tokenizer.get_encoding()
    except RuntimeError as e:
        pytest.skip(str(e))
    text = path.read_bytes().decode("utf-8")
    return text, encode_documents([text], threads=1)


@pytest.mark.shared
def test_article_starts_on_the_test_split(test_split):
    """60 articles (the number Wikitext-2's test split was published with), each start where its heading line
    is. The study's cut at 60,000 falls inside "Temnospondyli", tokens 55,695 to 66,897."""
    text, tokens = test_split
    starts = article_starts(tokens)
    assert len(tokens) == 286_221 and len(starts) == len(heading_lines(text)) == 60
    check_starts(text, tokens, starts)
    assert snap_to_article(starts, 60_000) == 55_695 and snap_to_article(starts, 180_000) == 176_281
    inside = int(np.searchsorted(starts, 60_000, side="right")) - 1
    assert (starts[inside], starts[inside + 1]) == (55_695, 66_897)
    assert tokenizer.decode(tokens[55_695:55_712]).startswith(" = Temnospondyli = \n")
    dev, held = cut_test_split(len(tokens), 60_000, 120_000, starts)
    assert (dev.n_tokens, held.first, held.first + held.n_tokens) == (55_695, 55_695, 176_281)  # 175,695 snapped
