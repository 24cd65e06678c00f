"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum, computed exactly as Google's rouge-score 0.1.2 does.

`score(target, prediction)` equals `RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
.score(target, prediction)` with its defaults, and `score(target, prediction, use_stemmer=True)`
equals `RougeScorer([...], use_stemmer=True).score(...)`. Note the argument order, rouge-score's
own: the reference first. tests/test_rouge.py checks every figure on generated text.

- Tokens: the text lowercased, then every maximal run of the characters a-z and 0-9 (anything
  else separates tokens, so "don't" is "don", "t" and accented or CJK letters vanish). With
  `use_stemmer=True`, every token longer than 3 characters is replaced by its Porter stem
  (gpt2/metrics/porter.py, equal to nltk's `PorterStemmer()`, which rouge-score uses): "cats" and "cat"
  then match, as do "running" and "run"; "was" and "has" stay as they are.
- ROUGE-N: n-gram overlap. matched = sum over target n-grams of min(count in target, count in
  prediction); precision = matched / prediction n-grams, recall = matched / target n-grams.
- ROUGE-L: the longest common subsequence (LCS) of the two token lists; precision = LCS /
  prediction length, recall = LCS / target length.
- ROUGE-Lsum: summary-level LCS (Lin 2004, section 3.2) over the lines of each text. For each
  target line, the union of the positions on its LCS with every prediction line counts as hits,
  each token hit no more often than it occurs in both texts.
- F = 2PR / (P + R), or 0 when P + R = 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gpt2.metrics.porter import stem

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


_ZERO = RougeScore(0.0, 0.0, 0.0)
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str, *, use_stemmer: bool = False) -> list[str]:
    """rouge-score's tokenizer: lowercase, then runs of [a-z0-9]; with `use_stemmer`, the tokens
    longer than 3 characters Porter-stemmed."""
    # Equal to its "replace [^a-z0-9]+ by a space, split on whitespace, drop empty tokens".
    tokens = _TOKEN.findall(text.lower())
    if use_stemmer:
        # rouge-score then drops tokens that no longer match ^[a-z0-9]+$. None do: the stemmer only
        # removes letters or appends a-z, and never empties a word longer than 2 characters.
        tokens = [stem(t) if len(t) > 3 else t for t in tokens]
    return tokens


def _lines(text: str, use_stemmer: bool) -> list[list[str]]:
    """The tokens of each line; rouge-score splits on "\\n" only. Lines without tokens add nothing
    to ROUGE-Lsum, so they are dropped here."""
    return [line for line in (tokenize(s, use_stemmer=use_stemmer) for s in text.split("\n")) if line]


def _f(precision: float, recall: float) -> RougeScore:
    if precision + recall > 0:
        return RougeScore(precision, recall, 2 * precision * recall / (precision + recall))
    return RougeScore(precision, recall, 0.0)


def _rouge_n(target_grams: Counter, prediction_grams: Counter, n_target: int, n_prediction: int) -> RougeScore:
    matched = 0
    for gram, c in target_grams.items():
        p = prediction_grams.get(gram, 0)
        matched += c if c < p else p
    return _f(matched / max(n_prediction, 1), matched / max(n_target, 1))


# ---------------------------------------------------------------------------------------------
# LCS with bit vectors (Allison & Dix 1986; Hyyrö 2004). Think of the usual table L[i][j] = LCS of
# ref[:i] and can[:j]. Along a row, L grows by 0 or 1 per column, so a row is stored as an integer
# whose bit j is 0 where L[i][j+1] = L[i][j] + 1, and 1 where it does not grow. One row follows
# from the previous one with a few integer operations instead of a Python loop over columns.


def _lcs_rows(ref: list[str], can: list[str]) -> list[int]:
    """The rows L[0..len(ref)] of the LCS table of ref x can, as bit vectors (see above)."""
    match_bits: dict[str, int] = {}  # token -> bit j set where can[j] is that token
    for j, tok in enumerate(can):
        match_bits[tok] = match_bits.get(tok, 0) | (1 << j)
    full = (1 << len(can)) - 1
    row = full  # row 0: the LCS with an empty ref never grows
    rows = [row]
    for tok in ref:
        u = row & match_bits.get(tok, 0)
        row = ((row + u) | (row - u)) & full
        rows.append(row)
    return rows


def _lcs_length(ref: list[str], can: list[str]) -> int:
    return len(can) - _lcs_rows(ref, can)[-1].bit_count()


def _lcs_positions(ref: list[str], can: list[str]) -> list[int]:
    """Positions in `ref` of one LCS, the one rouge-score's backtrack through the table finds."""
    rows = _lcs_rows(ref, can)

    def table(i: int, j: int) -> int:  # L[i][j]: j minus the non-growing columns before j
        return j - (rows[i] & ((1 << j) - 1)).bit_count()

    i, j, positions = len(ref), len(can), []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            positions.append(i - 1)
            i -= 1
            j -= 1
        elif table(i, j - 1) > table(i - 1, j):
            j -= 1
        else:
            i -= 1
    return positions


def _rouge_lsum(target_lines: list[list[str]], prediction_lines: list[list[str]]) -> RougeScore:
    """Summary-level LCS over lines that hold at least one token each."""
    if not target_lines or not prediction_lines:
        return _ZERO
    target_left = Counter(t for line in target_lines for t in line)  # hits still allowed per token
    prediction_left = Counter(t for line in prediction_lines for t in line)
    n_target, n_prediction = sum(target_left.values()), sum(prediction_left.values())
    hits = 0
    for ref in target_lines:
        union = set()
        for can in prediction_lines:
            union.update(_lcs_positions(ref, can))
        for i in union:
            tok = ref[i]
            if prediction_left[tok] > 0 and target_left[tok] > 0:
                hits += 1
                prediction_left[tok] -= 1
                target_left[tok] -= 1
    return _f(hits / n_prediction, hits / n_target)


# ---------------------------------------------------------------------------------------------
# Public API


def score(target: str, prediction: str, *, use_stemmer: bool = False) -> dict[str, RougeScore]:
    """ROUGE-1, -2, -L and -Lsum of `prediction` against `target` (rouge-score's argument order);
    `use_stemmer`: Porter-stem tokens longer than 3 characters, as rouge-score's option does."""
    if not isinstance(target, str) or not isinstance(prediction, str):
        raise TypeError(f"rouge.score takes two strings (target, prediction), got "
                        f"{type(target).__name__} and {type(prediction).__name__}")
    t, p = tokenize(target, use_stemmer=use_stemmer), tokenize(prediction, use_stemmer=use_stemmer)
    result = {
        "rouge1": _rouge_n(Counter(t), Counter(p), len(t), len(p)),
        "rouge2": _rouge_n(Counter(zip(t, t[1:])), Counter(zip(p, p[1:])), len(t) - 1, len(p) - 1),
        "rougeL": _ZERO,
    }
    if t and p:
        lcs = _lcs_length(t, p)
        result["rougeL"] = _f(lcs / len(p), lcs / len(t))
    target_lines, prediction_lines = _lines(target, use_stemmer), _lines(prediction, use_stemmer)
    if len(target_lines) == 1 and len(prediction_lines) == 1:
        result["rougeLsum"] = result["rougeL"]  # one line each: the union LCS is the LCS itself
    else:
        result["rougeLsum"] = _rouge_lsum(target_lines, prediction_lines)
    return result


def corpus_rouge(targets: Sequence[str], predictions: Sequence[str], *,
                 use_stemmer: bool = False) -> dict[str, RougeScore]:
    """Mean over examples of each per-example precision, recall and F (the usual corpus ROUGE);
    `use_stemmer` as in `score`."""
    if isinstance(targets, str) or isinstance(predictions, str):
        raise TypeError("corpus_rouge takes two lists of strings (targets, predictions), not strings")
    if len(targets) != len(predictions):
        raise ValueError(f"corpus_rouge: {len(targets)} targets but {len(predictions)} predictions; "
                         "each prediction needs exactly one target")
    if not targets:
        raise ValueError("corpus_rouge: no examples given; the mean of nothing is undefined")
    sums = {k: [0.0, 0.0, 0.0] for k in ROUGE_TYPES}
    for target, prediction in zip(targets, predictions):
        for k, s in score(target, prediction, use_stemmer=use_stemmer).items():
            acc = sums[k]
            acc[0] += s.precision
            acc[1] += s.recall
            acc[2] += s.fmeasure
    n = len(targets)
    return {k: RougeScore(p / n, r / n, f / n) for k, (p, r, f) in sums.items()}
