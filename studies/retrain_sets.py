"""The retrain study's sets made here rather than by data/: the challenging real chunks (by the base's score),
and the third edition's, made from the sets a seed already has: real text at a share of the size (the "less
data" control) and mixtures of real text with the teacher's continuations.

Both read a set back as its sequences (data/sequences.py: each preceded by <|endoftext|>) and write a new one of
exactly the asked number of tokens, separators included, the last sequence cut to fit, as every set is:

    real<s>             the first sequences of the seed's real set, round(s * set_tokens) tokens
    real<s>+<set>       those same real sequences, then the synthetic set's first sequences up to set_tokens,
                        shuffled together (seeded): the mixture adds synthetic text to the less-data control

A mixture's manifest counts the seconds that made the synthetic part (that set's generation time, in proportion
to the tokens taken) so that its time to gain can include them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from data.loader import SplitTokens
from data.sequences import write_sequences
from data.subset import SubsetError, select_by_score
from gpt2.tokenizer import EOT_ID


def read_sequences(set_dir: Path) -> list[np.ndarray]:
    """A set's sequences, in order, without their separators."""
    tokens = SplitTokens(set_dir, "train")[:].astype(np.int64)
    cuts = np.flatnonzero(tokens == EOT_ID).tolist() + [len(tokens)]
    return [tokens[a + 1 : b] for a, b in zip(cuts, cuts[1:])]


def take(sequences: list[np.ndarray], n_tokens: int, where: Path) -> list[np.ndarray]:
    """The first sequences holding exactly n_tokens with a separator each (the last one cut to fit)."""
    out, total = [], 0
    for s in sequences:
        if total >= n_tokens:
            break
        s = s[: n_tokens - total - 1]
        out.append(s)
        total += 1 + len(s)
    if total != n_tokens:
        raise ValueError(f"{where} holds {total:,} tokens in its sequences, fewer than the {n_tokens:,} asked")
    return out


def generation_seconds(set_dir: Path) -> float:
    """The seconds that made a set (a distilled or token-edit set's timing; 0 for real text)."""
    manifest = json.loads((set_dir / "manifest.json").read_text())
    return float(manifest.get("timing", {}).get("seconds") or manifest.get("generation_seconds") or 0.0)


def write_less_data(out: Path, real: Path, share: float, n_tokens: int) -> None:
    """Real text alone at `share` of n_tokens: the real set's first sequences."""
    kept = take(read_sequences(real), round(share * n_tokens), real)
    write_sequences(out, kept, {"kind": "real-less-data", "real_share_of_size": share, "source": str(real),
                                "generation_seconds": 0.0}, shard_tokens=100_000_000, argv=[],
                    prog=["python", "-m", "studies", "retrain"])


def write_mixture(out: Path, real: Path, synthetic: Path, share: float, n_tokens: int, seed: int) -> None:
    """round(share * n_tokens) tokens of real text (as write_less_data) and the synthetic set's first sequences
    for the rest, in a seeded random order."""
    real_part = take(read_sequences(real), round(share * n_tokens), real)
    n_real = sum(len(s) + 1 for s in real_part)
    synthetic_all = read_sequences(synthetic)
    synthetic_part = take(synthetic_all, n_tokens - n_real, synthetic)
    n_synthetic = n_tokens - n_real
    order = np.random.default_rng(seed).permutation(len(real_part) + len(synthetic_part))
    pooled = real_part + synthetic_part
    synthetic_tokens = sum(len(s) + 1 for s in synthetic_all)
    write_sequences(out, [pooled[i] for i in order], {
        "kind": "mixture", "seed": seed, "real_share": n_real / n_tokens, "real_tokens": n_real,
        "synthetic_tokens": n_synthetic, "sources": {"real": str(real), "synthetic": str(synthetic)},
        "generation_seconds": generation_seconds(synthetic) * n_synthetic / synthetic_tokens},
        shard_tokens=100_000_000, argv=[], prog=["python", "-m", "studies", "retrain"])


def write_challenge_set(out: Path, part_b: np.ndarray, scores: np.ndarray, which: str, seed: int, n_tokens: int,
                        chunk: int, challenge_share: float) -> None:
    """The `which` (hardest / middle / easiest) of part B's chunks of `chunk` tokens by `scores` (the base's mean
    NLL of each), n_tokens in all, picked from a random challenge_share of the chunks that the seed draws
    (data.subset.select_by_score)."""
    pool_size = max(1, round(len(scores) * challenge_share))
    pool = np.sort(np.random.default_rng(seed).permutation(len(scores))[:pool_size])
    k = math.ceil(n_tokens / (chunk + 1))  # each chunk costs chunk + 1 tokens with its separator
    if k > len(pool):
        raise SubsetError(f"--set_tokens {n_tokens:,} needs {k} chunks of {chunk} tokens, but a share "
                          f"{challenge_share} of part B holds {len(pool)}: lower --set_tokens or raise "
                          "--challenge_share")
    chosen = pool[select_by_score(scores[pool], k, which)]
    chunks = [part_b[c * chunk : (c + 1) * chunk] for c in chosen]
    chunks[-1] = chunks[-1][: n_tokens - (k - 1) * (chunk + 1) - 1]  # exactly n_tokens, as data.subset does
    write_sequences(out, chunks, {
        "kind": f"challenge-{which}", "seed": seed, "chunk_tokens": chunk, "pool_chunks": len(pool),
        "overlapping_windows": 3 * k > len(pool), "chunk_indices": chosen.tolist(),
        "base_score_mean": float(scores[chosen].mean()), "base_score_pool_mean": float(scores[pool].mean())},
        shard_tokens=100_000_000, argv=[], prog=["python", "-m", "studies", "retrain"])
