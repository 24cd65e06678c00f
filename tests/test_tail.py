"""Frequency buckets, per-bucket perplexity and training-set statistics against plain-Python references."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from gpt2.metrics import tail
from studies import ngram, sets
from gpt2.metrics.tail import HEAD, MID, TAIL, UNSEEN
from gpt2.tokenizer import EOT_ID


def reference_buckets(counts: list[int], cuts=(0.5, 0.9)) -> list[int]:
    """The boundary rule as written: the mass of the strictly more frequent types decides."""
    total = sum(counts)
    out = []
    for c in counts:
        above = sum(other for other in counts if other > c)
        out.append(UNSEEN if c == 0 else HEAD if above < cuts[0] * total else MID if above < cuts[1] * total else TAIL)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_buckets_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    counts = rng.zipf(1.6, 300) * (rng.random(300) < 0.8)  # heavy-tailed, many ties, some zeros
    cuts = [(0.5, 0.9), (0.3, 0.6), (0.5, 0.5), (0.2, 1.0)][seed]
    got = tail.frequency_buckets(counts, cuts)
    assert got.tolist() == reference_buckets(counts.tolist(), cuts)


def test_bucket_boundaries():
    # 5 + 3 + 2 = 10 tokens. Type 0 ends exactly at 50%: head. Type 1 starts at 50%: mid; with it the
    # mass reaches 80%, so type 2 starts below 90%: mid. Type 3 is never seen.
    assert tail.frequency_buckets([5, 3, 2, 0]).tolist() == [HEAD, MID, MID, UNSEEN]
    # Type 0 straddles 50% (it holds tokens 0..5 of 10): head. Type 2 starts exactly at 90%: tail.
    assert tail.frequency_buckets([6, 3, 1]).tolist() == [HEAD, MID, TAIL]
    assert tail.frequency_buckets([4, 3, 3]).tolist() == [HEAD, HEAD, HEAD]  # types tied with a straddler go with it
    assert tail.frequency_buckets([6, 3, 1], cuts=(0.6, 0.9)).tolist() == [HEAD, MID, TAIL]
    assert tail.frequency_buckets([0, 0, 0]).tolist() == [UNSEEN] * 3  # an empty train split
    with pytest.raises(ValueError, match="cuts"):
        tail.frequency_buckets([1, 2], cuts=(0.9, 0.5))


def test_bucket_summary():
    summary = tail.bucket_summary(np.array([5, 3, 2, 0, 0]), tail.frequency_buckets([5, 3, 2, 0, 0]))
    assert summary["head"] == {"n_types": 1, "train_share": 0.5, "min_count": 5, "max_count": 5}
    assert summary["mid"] == {"n_types": 2, "train_share": 0.5, "min_count": 2, "max_count": 3}
    assert summary["tail"] == {"n_types": 0, "train_share": 0.0, "min_count": None, "max_count": None}
    assert summary["unseen"]["n_types"] == 2


def test_bucket_perplexity_matches_the_reference():
    rng = np.random.default_rng(5)
    buckets = np.array([HEAD, HEAD, MID, MID, MID, UNSEEN, HEAD, UNSEEN], dtype=np.int8)  # no tail type
    targets, nll = rng.integers(0, 8, 400), rng.exponential(3.0, 400)
    table = tail.bucket_perplexity(targets, nll, buckets)
    for index, name in [*enumerate(tail.BUCKETS), (None, "all")]:
        mine = [x for t, x in zip(targets.tolist(), nll.tolist()) if index is None or buckets[t] == index]
        row = table[name]
        assert row["n_targets"] == len(mine) and row["share_targets"] == len(mine) / 400
        if not mine:
            assert row == {"n_targets": 0, "share_targets": 0.0, "mean_nll": None, "ppl": None, "share_nll": 0.0}
            continue
        assert row["mean_nll"] == pytest.approx(sum(mine) / len(mine), rel=1e-12)
        assert row["ppl"] == pytest.approx(math.exp(sum(mine) / len(mine)), rel=1e-12)
        assert row["share_nll"] == pytest.approx(sum(mine) / nll.sum(), rel=1e-12)
    assert table["tail"]["n_targets"] == 0 and table["all"]["share_nll"] == 1.0


def test_bucket_perplexity_all_unseen_and_errors():
    buckets = tail.frequency_buckets(np.zeros(5, dtype=np.int64))
    table = tail.bucket_perplexity(np.array([1, 2]), np.array([1.0, 3.0]), buckets)
    assert table["unseen"]["n_targets"] == 2 and table["unseen"]["mean_nll"] == 2.0 and table["head"]["ppl"] is None
    assert tail.bucket_perplexity(np.array([], dtype=np.int64), np.array([]), buckets)["all"]["share_targets"] is None
    with pytest.raises(ValueError, match="one length"):
        tail.bucket_perplexity(np.array([1, 2]), np.array([1.0]), buckets)


def test_bucket_perplexity_of_an_ngram_baseline_reconciles():
    rng = np.random.default_rng(6)
    train, tokens = rng.integers(0, 50, 2000) // rng.integers(1, 5, 2000), rng.integers(0, 60, 500)
    counts = ngram.count_ngrams(train, 60)
    nll = ngram.bigram_nll(counts, tokens, 0.4)
    table = tail.bucket_perplexity(tokens[1:], nll, tail.frequency_buckets(counts.unigram))
    assert table["all"]["ppl"] == pytest.approx(ngram.perplexity(nll)[1], rel=1e-12)
    assert sum(table[b]["share_targets"] for b in tail.BUCKETS) == pytest.approx(1.0, abs=1e-12)
    assert sum(table[b]["share_nll"] for b in tail.BUCKETS) == pytest.approx(1.0, abs=1e-12)


def reference_set_statistics(sequences: list[list[int]], train: list[int], buckets: list[int]) -> dict:
    tokens = [t for s in sequences for t in s]
    counts, train_types = Counter(tokens), set(train)
    stats = {"n_tokens": len(tokens), "n_types": len(counts), "train_types_in_set": len(set(counts) & train_types)}
    for n in (1, 2, 3):
        grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else None
    stats["entropy_bits"] = -sum(c / len(tokens) * math.log2(c / len(tokens)) for c in counts.values())
    for index, name in enumerate(tail.BUCKETS):
        types = {t for t in range(len(buckets)) if buckets[t] == index}
        stats[name] = {
            "types_in_set": len(types & set(counts)),
            "share_of_bucket_types": len(types & set(counts)) / len(types) if types else None,
            "token_share": sum(counts[t] for t in types) / len(tokens),
        }
    return stats


def test_set_statistics_match_the_reference():
    rng = np.random.default_rng(7)
    train = (rng.integers(0, 40, 3000) // rng.integers(1, 6, 3000)).tolist()  # types 0..39, skewed
    train_counts = np.bincount(train, minlength=60)  # types 40..59 are never seen in train
    buckets = tail.frequency_buckets(train_counts)
    sequences = [rng.integers(0, 60, n).tolist() for n in (30, 1, 0, 55, 12)]
    got = sets.set_statistics([np.array(s) for s in sequences], train_counts, buckets)
    want = reference_set_statistics(sequences, train, buckets.tolist())
    assert got["n_sequences"] == 5 and got["share_of_train_types"] == want["train_types_in_set"] / len(set(train))
    for key, value in want.items():
        if isinstance(value, dict):
            for field, v in value.items():
                assert got[key][field] == pytest.approx(v, rel=1e-12), (key, field)
        else:
            assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["unseen"]["token_share"] > 0 and got["tail"]["types_in_set"] > 0


def test_set_statistics_of_a_stored_stream_and_edge_cases():
    train_counts = np.zeros(ngram.VOCAB_SIZE, dtype=np.int64)
    train_counts[[10, 11, 12]] = [5, 3, 2]
    buckets = tail.frequency_buckets(train_counts)
    sequences = [np.array([10, 11, 10]), np.array([12, 99])]
    stream = np.array([EOT_ID, 10, 11, 10, EOT_ID, 12, 99])  # as data.sequences.write_sequences stores them
    assert sets.set_statistics(stream, train_counts, buckets) == sets.set_statistics(sequences, train_counts, buckets)
    stats = sets.set_statistics(sequences, train_counts, buckets)
    assert stats["n_tokens"] == 5 and stats["unseen"]["token_share"] == 0.2 and stats["head"]["token_share"] == 0.4
    assert stats["tail"] == {"types_in_set": 0, "share_of_bucket_types": None, "token_share": 0.0}  # an empty bucket
    empty = sets.set_statistics([], train_counts, buckets)
    assert empty["n_tokens"] == 0 and empty["entropy_bits"] is None and empty["head"]["token_share"] is None
    with pytest.raises(ValueError, match="token ids"):
        sets.set_statistics([np.array([ngram.VOCAB_SIZE])], train_counts, buckets)


def test_split_at_eot():
    pieces = sets.split_at_eot(np.array([EOT_ID, 1, 2, EOT_ID, EOT_ID, 3]))
    assert [p.tolist() for p in pieces] == [[1, 2], [], [3]]
    assert [p.tolist() for p in sets.split_at_eot(np.array([4, 5]))] == [[4, 5]]  # no separator: one sequence
    assert sets.split_at_eot(np.array([], dtype=np.int64)) == []


def test_entropy_bits():
    assert sets.entropy_bits(np.array([1, 1, 0, 2])) == pytest.approx(1.5, rel=1e-12)
    assert sets.entropy_bits(np.array([7])) == 0.0
