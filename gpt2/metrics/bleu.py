"""BLEU (Papineni et al., 2002), computed exactly as sacrebleu 2.x does with its defaults.

`corpus_bleu(hyps, [refs_1, refs_2, ...])` equals `sacrebleu.corpus_bleu(hyps, [refs_1, ...])`
(13a tokenizer, mixed case, n-grams 1..4, 'exp' smoothing, no effective order) and
`sentence_bleu(hyp, refs)` equals `sacrebleu.sentence_bleu(hyp, refs)` (the same, with effective
order). tests/test_bleu.py checks every figure against sacrebleu on generated text.

The recipe, in the order the code follows it:
1. Tokenize every segment with the "13a" rules of mteval-v13a.pl (WMT's scorer): symbols become
   their own tokens; periods and commas too, except inside numbers (1,000.5); a dash after a digit.
2. For each order n = 1..4 count the hypothesis n-grams ("totals") and the matched ones
   ("counts"), each n-gram's match clipped to the largest count it has in any one reference.
3. The reference length of a segment is the reference length closest to the hypothesis length
   (the shorter one on a tie). Sum everything over the corpus.
4. BLEU = BP * geometric mean of the precisions counts/totals, where BP = exp(1 - ref_len/sys_len)
   when the system output is shorter than the references (else 1). A precision with no match is
   replaced by 1 / (2^k * total), k counting the zero precisions so far ('exp' smoothing, NIST's).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ORDER = 4  # n-grams of 1 to 4 tokens
_LOG_ZERO = -9999999999  # sacrebleu's floor for log(0): the score becomes exp(-huge) = 0.0


@dataclass
class BLEUScore:
    score: float  # BLEU in [0, 100]
    precisions: list[float]  # modified n-gram precisions in percent, orders 1..4
    bp: float  # brevity penalty
    sys_len: int  # hypothesis tokens in the corpus
    ref_len: int  # reference tokens, the closest reference of every segment
    counts: list[int]  # matched (clipped) n-grams, orders 1..4
    totals: list[int]  # hypothesis n-grams, orders 1..4

    def __str__(self) -> str:
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return f"BLEU = {self.score:.2f} {p} (BP = {self.bp:.3f} hyp_len = {self.sys_len} ref_len = {self.ref_len})"


# ---------------------------------------------------------------------------------------------
# The 13a tokenizer. mteval-v13a.pl applies these rules in this order; each regex pass sees the
# output of the previous one, and matches never overlap, so the order is part of the definition.

# Every ASCII symbol except the four that need context ( ' , - . ) becomes a token of its own:
# 13a pads it with a space on each side (the space itself too; runs of spaces collapse at the end).
# One character at a time, so a translation table does what the regex `([...])` -> " \1 " does.
_SYMBOLS = " !\"#$%&()*+/:;<=>?@[\\]^_`{|}~"
_PAD_SYMBOLS = str.maketrans({c: f" {c} " for c in _SYMBOLS})
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")  # "end." -> "end . "; "1,000" untouched
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")  # "1. a" -> "1 .  a"; "1.5" untouched
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")  # "3-4" -> "3 - 4"; "well-known" stays one token

# Only these four HTML entities are undone, in this order ("&amp;lt;" therefore becomes "<").
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(line: str) -> list[str]:
    """Split one segment into tokens with sacrebleu's default "13a" rules (after its rstrip)."""
    line = line.rstrip()  # sacrebleu strips trailing whitespace before tokenizing
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} ".translate(_PAD_SYMBOLS)
    line = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
    line = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    line = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return line.split()


# ---------------------------------------------------------------------------------------------
# Sufficient statistics of one segment: hypothesis length, closest reference length, and the
# matched and total n-gram counts of each order.


def _ngram_counts(tokens: list[str]) -> list[Counter]:
    """Counters of the 1-grams (plain tokens), 2-, 3- and 4-grams (tuples) of a token list."""
    counts = [Counter(tokens)]
    for n in range(2, MAX_ORDER + 1):
        counts.append(Counter(zip(*(tokens[i:] for i in range(n)))))
    return counts


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length nearest the hypothesis length; on a tie, the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def _segment_stats(hyp: str, refs: list[str], stats: list[int]) -> None:
    """Add one segment's [sys_len, ref_len, counts x4, totals x4] to `stats` in place."""
    ref_lens, max_ref_counts = [], None
    for ref in refs:
        tokens = tokenize_13a(ref)
        ref_lens.append(len(tokens))
        counts = _ngram_counts(tokens)
        if max_ref_counts is None:
            max_ref_counts = counts
        else:  # an n-gram may be matched as often as the reference that has it most often
            for merged, this in zip(max_ref_counts, counts):
                for gram, c in this.items():
                    if c > merged[gram]:
                        merged[gram] = c
    hyp_tokens = tokenize_13a(hyp)
    hyp_len = len(hyp_tokens)
    stats[0] += hyp_len
    stats[1] += _closest_ref_len(hyp_len, ref_lens)
    for n, (hyp_counts, ref_counts) in enumerate(zip(_ngram_counts(hyp_tokens), max_ref_counts)):
        matched = 0
        for gram, c in hyp_counts.items():
            r = ref_counts.get(gram)
            if r:
                matched += c if c < r else r
        stats[2 + n] += matched
        stats[2 + MAX_ORDER + n] += max(hyp_len - n, 0)


def _score_from_stats(stats: list[int], effective_order: bool) -> BLEUScore:
    """BLEU from summed statistics, with 'exp' smoothing (sacrebleu's `compute_bleu`)."""
    sys_len, ref_len = stats[0], stats[1]
    counts, totals = stats[2:2 + MAX_ORDER], stats[2 + MAX_ORDER:]
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * MAX_ORDER
    if not any(counts):
        return BLEUScore(0.0, precisions, bp, sys_len, ref_len, counts, totals)
    smooth = 1.0
    order = MAX_ORDER  # with effective order: the highest order the hypothesis has n-grams of
    for n in range(MAX_ORDER):
        if totals[n] == 0:
            break
        if effective_order:
            order = n + 1
        if counts[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * totals[n])
        else:
            precisions[n] = 100.0 * counts[n] / totals[n]
    log_sum = sum([math.log(p) if p != 0.0 else _LOG_ZERO for p in precisions[:order]])
    return BLEUScore(bp * math.exp(log_sum / order), precisions, bp, sys_len, ref_len, counts, totals)


# ---------------------------------------------------------------------------------------------
# Public API


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]]) -> BLEUScore:
    """Corpus BLEU of `hypotheses` against one or more reference streams, as sacrebleu computes it.

    `references` is a list of streams, each holding one reference per hypothesis (sacrebleu's
    layout): `corpus_bleu(hyps, [refs])` for one reference, `[refs_a, refs_b]` for two. A
    reference may be None where a segment has fewer references than the others.
    """
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise TypeError("corpus_bleu: hypotheses must be a list of strings, one per segment")
    if len(hypotheses) == 0:
        raise ValueError("corpus_bleu: no hypotheses given; BLEU of an empty corpus is undefined")
    if isinstance(references, str) or not isinstance(references, Sequence) or len(references) == 0:
        raise TypeError("corpus_bleu: references must be a non-empty list of reference streams, "
                        "e.g. corpus_bleu(hyps, [refs]) for one reference per hypothesis")
    for k, stream in enumerate(references):
        if isinstance(stream, str) or not isinstance(stream, Sequence):
            raise TypeError(f"corpus_bleu: reference stream {k} is a {type(stream).__name__}, not a list of "
                            "strings; pass the references as a list of streams: corpus_bleu(hyps, [refs])")
        if len(stream) != len(hypotheses):
            raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but reference stream {k} holds "
                             f"{len(stream)} references; every stream needs one reference per hypothesis")
    stats = [0] * (2 + 2 * MAX_ORDER)
    for i, hyp in enumerate(hypotheses):
        if not isinstance(hyp, str):
            raise TypeError(f"corpus_bleu: hypothesis {i} is {type(hyp).__name__}, not a string")
        refs = [stream[i] for stream in references if stream[i] is not None]
        if not refs:
            raise ValueError(f"corpus_bleu: segment {i} has no reference in any stream (all are None)")
        _segment_stats(hyp, refs, stats)
    return _score_from_stats(stats, effective_order=False)


def sentence_bleu(hypothesis: str, references: Sequence[str]) -> BLEUScore:
    """BLEU of one hypothesis against its references, as `sacrebleu.sentence_bleu` computes it
    (effective order: orders the hypothesis is too short to have do not zero the score)."""
    if not isinstance(hypothesis, str):
        raise TypeError(f"sentence_bleu: the hypothesis must be a string, got {type(hypothesis).__name__}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError("sentence_bleu: references must be a list of strings, e.g. sentence_bleu(hyp, [ref])")
    refs = [r for r in references if r is not None]
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError("sentence_bleu: references must hold at least one string")
    stats = [0] * (2 + 2 * MAX_ORDER)
    _segment_stats(hypothesis, refs, stats)
    return _score_from_stats(stats, effective_order=True)
