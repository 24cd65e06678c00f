"""Where Wikitext's articles begin in a GPT-2 token stream, so that a split can be cut between articles.

Wikitext is a sequence of Wikipedia articles, each opening with a top-level heading line " = Title = " (one '='
on each side; " = = Section = = " lines head sections inside an article). The raw files start with a blank line
(" \\n") before the first heading, and put one blank line before and after every heading:

    " \\n = Robert Boulter = \\n \\n Robert Boulter is an English film ... \\n \\n = Du Fu = \\n \\n ..."

Those blank lines are part of the rule: a formula broken over lines can also read " = 1 henry and capacitance
C = " (twice in wiki.test.raw, inside "Constant k filter"), but with text on the lines around it. So the test
split has 60 articles, the number Wikitext-2 was published with.
"""

from __future__ import annotations

import re

import numpy as np

from gpt2 import tokenizer

# A top-level heading line: " = " then a title that does not start with '=' (a section's " = = "), " = " after
# a title that does not end with '=', trailing spaces. Table lines such as " = National record " are not.
HEADING = re.compile(rb"^ = (?!=)[^\n]*(?<!=) = *$", re.MULTILINE)


def article_starts(tokens: np.ndarray) -> np.ndarray:
    """The token indices (ascending, int64) at which an article's top-level heading line begins.

    The tokens are decoded one by one to bytes, so each token's byte offset in the text is known; a heading
    line is found in the bytes, and its start is the token that holds the line's first byte, the space before
    its '='. GPT-2's pre-tokenizer gives that space to the ' =' token (a run of whitespace leaves its last space
    to the punctuation after it), so on Wikitext the start token is ' =' itself, and the '\\n' and ' ' tokens
    before it close the previous line. A token holding both the previous newline and the heading's first byte
    would be the start (it holds part of the heading), but GPT-2 never makes one here.
    """
    enc = tokenizer.get_encoding()
    pieces = [enc.decode_single_token_bytes(int(t)) for t in tokens]
    offsets = np.cumsum([0] + [len(p) for p in pieces[:-1]]) if pieces else np.zeros(0, dtype=np.int64)
    text = b"".join(pieces)
    line_starts = [m.start() for m in HEADING.finditer(text) if _between_blank_lines(text, m.start(), m.end())]
    # the token holding byte b: the last token whose first byte is at or before b
    return np.searchsorted(offsets, np.array(line_starts, dtype=np.int64), side="right").astype(np.int64) - 1


def _between_blank_lines(text: bytes, begin: int, end: int) -> bool:
    """Whether the line text[begin:end] has a blank line (spaces at most) before it, or is the first line, and a
    blank line after it, or ends the text."""
    previous = text[text.rfind(b"\n", 0, begin - 1) + 1 : begin - 1] if begin > 0 else b""
    newline = text.find(b"\n", end + 1)
    following = text[end + 1 : newline if newline != -1 else len(text)]
    return not previous.strip(b" ") and not following.strip(b" ")


def snap_to_article(starts: np.ndarray, index: int) -> int:
    """The article start (of `starts`, ascending) nearest to token `index`; on a tie, the earlier one."""
    if len(starts) == 0:
        raise ValueError("snap_to_article: no article starts to snap to (is this Wikitext? its headings read "
                         "' = Title = ')")
    after = int(np.searchsorted(starts, index, side="left"))  # the first start at or after index
    if after == len(starts):
        return int(starts[-1])
    if after == 0:
        return int(starts[0])
    before, later = int(starts[after - 1]), int(starts[after])
    return before if index - before <= later - index else later
