"""The third edition's sets, made from the sets a seed already has: real text at a share of the size (the "less
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
from pathlib import Path

import numpy as np

from data.loader import SplitTokens
from data.sequences import write_sequences
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
