"""Evaluate one model on one split: perplexity, and BLEU / ROUGE of greedy continuations (evaluate.py is its
command line; the studies call `evaluate` too).

Two tasks, both deterministic (the same tokens every time), on the whole split or on a slice of it
(--first_token, --max_eval_tokens: the tokens [first, first + max), evaluated as a text of its own):
1. Perplexity of the whole split with sliding windows (`gpt2.metrics.perplexity`): every token scored once,
   each with at least seq_len - stride tokens of context. The split's text is its tokens decoded
   (lossless: data.prepare guarantees shards decode to the raw text byte for byte), which gives
   bits per byte and word perplexity = exp(total NLL / whitespace-separated words of that text).
2. Continuation: N passages at evenly spaced token offsets of the split (passage i starts at
   i * (n_tokens // N)); the first P tokens are the prompt, the model continues them greedily for
   G tokens (no stop token, so every continuation has G tokens), and the decoded continuations are
   scored against the decoded true next G tokens: corpus BLEU (sacrebleu's defaults, one reference)
   and the mean ROUGE-1/2/L F-measure (rouge-score's defaults: no stemming; --rouge_stemmer stems
   as its use_stemmer=True does).

`evaluate(cfg, split, train)` measures and returns the results: every figure, the resolved config, the
model, the data (the split: a `data.loader.SplitTokens`, handed in by the caller), timings, versions and
the device. Its caller keeps them with `save_results`: a row in a markdown table (one row per model + data
+ split: a rerun replaces its row), then the JSON file. For a train.py run directory the table also shows
the run's training tokens and wall time (its log.jsonl: the last step's tokens_seen and elapsed_s).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import tiktoken
import torch
from tqdm import tqdm

from gpt2.atomic import atomic_open
from gpt2.device import compile_wanted, describe, device_name, resolve_device_and_dtype
from gpt2 import tokenizer
from gpt2.metrics.bleu import corpus_bleu
from gpt2.checkpoint import CheckpointError, load_model, versions
from gpt2.cli import config_to_dict, require_positive
from gpt2.metrics.perplexity import evaluate_perplexity, text_size
from gpt2.metrics.rouge import corpus_rouge
from gpt2.metrics.tail import bucket_perplexity, bucket_summary, frequency_buckets, type_counts
from gpt2.formatting import count, duration
from gpt2.records import run_record
from gpt2.sampler import SamplingConfig, generate
from gpt2.weights import DownloadError, WeightsError

MAX_SEQ_LEN = 1024  # default window: the model's context, but no more than GPT-2's 1024


@dataclass
class EvalConfig:
    """Evaluate a GPT-2 on a split of token shards: perplexity, and BLEU/ROUGE of greedy continuations."""

    model: str = "gpt2"  # a published name (gpt2, ...), a Hugging Face folder or weight file, a train.py
                         # checkpoint (.pt) or run directory (its best.pt, else latest.pt)
    name: str | None = None  # the model's label in the table; None: derived from --model (runs/finetune -> finetune)
    data_dir: str = "shards/wikitext2"  # folder of {split}_NNNNNN.bin shards written by `python -m data.prepare`
    split: str = "test"  # which split to evaluate: train, val or test
    first_token: int = 0  # evaluate the slice that starts at this token of the split (perplexity, frequency
                          # buckets and passages all inside it; the study's held-out slice starts at 60,000)
    max_eval_tokens: int | None = None  # evaluate only the first this many tokens from --first_token (a quick run);
                                        # None: to the end of the split. Recorded in the results and the table
    # perplexity
    seq_len: int | None = None  # tokens per window; None: the model's n_positions, at most 1024
    stride: int | None = None  # tokens between window starts; None: seq_len // 2, so that every token but
                               # the first window's has >= seq_len / 2 tokens of context (GPT-2 paper style;
                               # costs 2x disjoint windows, whose stride is seq_len)
    batch_size: int = 8  # windows per forward pass
    # continuation task (BLEU / ROUGE)
    gen_passages: int = 200  # N: passages, at evenly spaced offsets of the split
    gen_prompt_tokens: int = 128  # P: tokens of each passage given as the prompt
    gen_new_tokens: int = 64  # G: tokens generated greedily and scored against the passage's next G tokens
    gen_batch_size: int = 50  # passages generated together (each holds a KV cache of n_positions tokens)
    rouge_stemmer: bool = False  # ROUGE on Porter stems of words over 3 characters ("cats" matches "cat"),
                                 # as rouge-score's use_stemmer=True; off: rouge-score's default, no stemming
    # hardware and output
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # precision: autocast for perplexity, the weights' dtype
                                                              # for generation; auto: bf16 on CUDA that has it
                                                              # (else fp16); on CPU bf16 with bf16 units, else fp32
    compile: bool | None = None  # torch.compile the decode step (CUDA graphs on CUDA); None: on for CUDA
    out_json: str | None = None  # results file; None: results/<name>.<split>.json
    table: str = "results/results.md"  # markdown table to add this model's row to (created if absent)
    progress: bool = True  # progress bars on stderr

    def __post_init__(self) -> None:
        require_positive(self, "batch_size", "gen_passages", "gen_prompt_tokens", "gen_new_tokens", "gen_batch_size",
                         "max_eval_tokens", "seq_len", "stride")
        if self.first_token < 0:
            raise ValueError(f"--first_token must be >= 0 (a token offset into the split), got {self.first_token}")
        if self.max_eval_tokens is not None and self.max_eval_tokens < 2:
            raise ValueError(f"--max_eval_tokens must be at least 2 (one target), got {self.max_eval_tokens}")
        if self.name is None:
            self.name = default_name(self.model)
        if not self.name or any(c in self.name for c in "|\n"):
            raise ValueError(f"--name {self.name!r}: a table label must be non-empty, without '|' or newlines")


class EvalError(RuntimeError):
    """An evaluation that cannot run as configured; the message says what to change."""


def default_name(source: str) -> str:
    """The table label of a model source: runs/finetune -> finetune, runs/x/latest.pt -> x-latest, gpt2 -> gpt2."""
    path = Path(source)
    if path.is_dir():
        return path.resolve().name
    if path.is_file():
        if path.stem in ("model", "pytorch_model"):  # a Hugging Face folder's weight file: the folder says more
            return path.resolve().parent.name
        return f"{path.resolve().parent.name}-{path.stem}"
    return str(source)  # a published name


# ------------------------------------------------------------------------------- continuation task

def passage_starts(n_tokens: int, n_passages: int, span: int) -> list[int]:
    """Offsets of N non-overlapping passages of `span` tokens, evenly spaced: i * (n_tokens // N)."""
    slot = n_tokens // n_passages
    if slot < span:
        raise EvalError(f"{n_passages} passages x (prompt + generated = {span} tokens) = {n_passages * span:,} tokens "
                        f"do not fit in the {n_tokens:,} tokens evaluated: lower --gen_passages, --gen_prompt_tokens "
                        "or --gen_new_tokens (or raise --max_eval_tokens)")
    return [i * slot for i in range(n_passages)]


def continuation_task(model, tokens, starts: list[int], prompt_tokens: int, new_tokens: int, *, batch_size: int,
                      compile: bool = False, progress: bool = True) -> dict[str, list[str]]:
    """Greedy continuations of the passages at `starts`: {"prompts", "hypotheses", "references"}, decoded text.

    Passage i is tokens[s : s + P + G]; the model sees its first P tokens and generates G more
    (KV-cached, in batches of `batch_size`); the reference is the passage's true last G tokens.
    """
    device = model.lm_head.weight.device
    P, G = prompt_tokens, new_tokens
    passages = np.stack([np.asarray(tokens[s : s + P + G], dtype=np.int64) for s in starts])  # (N, P + G)
    out: dict[str, list[str]] = {"prompts": [], "hypotheses": [], "references": []}
    greedy = SamplingConfig("greedy")
    batches = tqdm(range(0, len(starts), batch_size), desc=f"generate P={P} G={G}", unit="batch", disable=not progress)
    for first in batches:
        batch = torch.from_numpy(passages[first : first + batch_size]).to(device)  # (B, P + G)
        # A short last batch is padded with copies of its last row: every call has one shape, so a compiled
        # decode step keeps its graph and the model its caches (greedy rows do not depend on each other).
        rows = min(batch_size, len(starts))  # every call's batch size
        prompts = torch.cat([batch[:, :P], batch[-1:, :P].expand(rows - len(batch), P)])  # (rows, P)
        result = generate(model, prompts, G, sampling=greedy, stop_token=None, compile=compile)
        new = result.new_tokens[:len(batch)].cpu()  # (B, G): no stop token, so always G tokens
        assert new.shape == (len(batch), G), f"generated {tuple(new.shape)}, expected {(len(batch), G)}"
        for row in range(len(batch)):
            out["prompts"].append(tokenizer.decode(passages[first + row, :P].tolist()))
            out["hypotheses"].append(tokenizer.decode(new[row].tolist()))
            out["references"].append(tokenizer.decode(passages[first + row, P:].tolist()))
    return out


def score_continuations(hypotheses: list[str], references: list[str], *, rouge_stemmer: bool = False) -> dict:
    """Corpus BLEU (0-100, one reference per hypothesis) and mean ROUGE-1/2/L F-measures (0-1),
    with rouge-score's use_stemmer when `rouge_stemmer`."""
    bleu = corpus_bleu(hypotheses, [references])
    rouge = corpus_rouge(references, hypotheses, use_stemmer=rouge_stemmer)  # rouge-score's order: targets first
    return {"bleu": bleu.score, "rouge1": rouge["rouge1"].fmeasure, "rouge2": rouge["rouge2"].fmeasure,
            "rougeL": rouge["rougeL"].fmeasure,
            "bleu_detail": {"precisions": bleu.precisions, "bp": bleu.bp, "sys_len": bleu.sys_len,
                            "ref_len": bleu.ref_len},
            "rouge_detail": {k: dataclasses.asdict(v) for k, v in rouge.items()}}


# ------------------------------------------------------------------------------------ the table

COLUMNS = ("model", "data", "split", "tokens", "ppl", "word ppl", "bits/byte", "BLEU", "ROUGE-1", "ROUGE-2",
           "ROUGE-L", "train tokens", "train time", "eval s")
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "|".join("---" if c in ("model", "data", "split") else "---:"
                                                         for c in COLUMNS) + "|\n"


def table_row(results: dict) -> list[str]:
    ppl, gen, run = results["perplexity"], results["generation"], results["model"]["run"] or {}
    stemmed = " (stemmed)" if results["config"].get("rouge_stemmer") else ""  # not comparable with unstemmed rows
    data = results["data"]
    first, n = data.get("first_token", 0), data["n_tokens_evaluated"]  # a slice after the start: test[60,000:286,221]
    split = data["split"] if not first else f"{data['split']}[{first:,}:{first + n:,}]"
    return [results["name"], data["label"], split,
            f"{results['data']['n_tokens_evaluated']:,}", f"{ppl['ppl']:.2f}", f"{ppl['word_ppl']:.2f}",
            f"{ppl['bits_per_byte']:.4f}", f"{gen['bleu']:.2f}", *(f"{gen[k]:.4f}{stemmed}" for k in ("rouge1", "rouge2", "rougeL")),
            count(run.get("train_tokens")), duration(run.get("train_seconds")),
            f"{results['seconds']['eval']:.0f}"]


def table_rows(path: str | Path) -> list[str]:
    """The row lines of the table at `path` ([] when absent); an error if it is not one this script wrote."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if not text.startswith(HEADER):
        raise EvalError(f"{path} is not a table this script wrote (its header differs from:\n{HEADER}); "
                        "move it away, or pass another --table")
    return [line for line in text[len(HEADER):].splitlines() if line.strip()]


def update_table(path: str | Path, row: list[str]) -> str:
    """Add `row` to the markdown table at `path`, replacing the row of the same model + data + split;
    creates the file with its header when absent. Returns the table's text."""
    path = Path(path)
    lines = table_rows(path)
    new = "| " + " | ".join(row) + " |"
    key = tuple(row[:3])
    replaced = False
    for i, line in enumerate(lines):
        if tuple(c.strip() for c in line.strip().strip("|").split("|")[:3]) == key:
            lines[i], replaced = new, True
    if not replaced:
        lines.append(new)
    text = HEADER + "".join(line + "\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(text.encode())
    return text


# ------------------------------------------------------------------------------------ evaluation

def load_for_eval(cfg: EvalConfig, device: torch.device) -> tuple:
    """The model, and the window, stride, prompt and generation lengths checked against its context."""
    try:
        model = load_model(cfg.model, device=device)
    except (CheckpointError, WeightsError, DownloadError) as e:
        raise EvalError(f"cannot load --model {cfg.model}: {e}") from e
    n_positions = model.config.n_positions
    seq_len = cfg.seq_len or min(n_positions, MAX_SEQ_LEN)
    stride = cfg.stride or max(1, seq_len // 2)
    if seq_len > n_positions:
        raise EvalError(f"--seq_len {seq_len} exceeds the model's context of {n_positions} tokens; use {n_positions} or less")
    if stride > seq_len:
        raise EvalError(f"--stride {stride} exceeds the window of {seq_len} tokens: it would skip tokens; use <= {seq_len}")
    if cfg.gen_prompt_tokens + cfg.gen_new_tokens > n_positions:
        raise EvalError(f"--gen_prompt_tokens {cfg.gen_prompt_tokens} + --gen_new_tokens {cfg.gen_new_tokens} exceed "
                        f"the model's context of {n_positions} tokens; lower them")
    return model, seq_len, stride


def eval_tokens(cfg: EvalConfig, split, vocab_size: int) -> tuple[np.ndarray, bytes, bool | None]:
    """The evaluated tokens (the split from --first_token, at most --max_eval_tokens of them), the raw text they
    stand for, and whether that text matches the manifest's checksum (None when not checkable)."""
    first = cfg.first_token
    if first > len(split) - 2:
        raise EvalError(f"--first_token {first:,} leaves fewer than 2 tokens of the {len(split):,} in {split!r}: "
                        "lower it")
    n_eval = len(split) - first if cfg.max_eval_tokens is None else min(cfg.max_eval_tokens, len(split) - first)
    tokens = split[first : first + n_eval]  # (n_eval,) uint16, in memory
    if int(tokens.max()) >= vocab_size:
        raise EvalError(f"{split!r} holds token id {int(tokens.max())} but the model's vocabulary has "
                        f"{vocab_size} tokens: these shards were written for another tokenizer")
    raw = tokenizer.decode_bytes(tokens.tolist())  # exactly the text the tokens stand for
    split_info = (split.manifest or {}).get("splits", {}).get(cfg.split, {})
    verified = None
    if first == 0 and n_eval == len(split) and "text_sha1" in split_info:
        verified = hashlib.sha1(raw).hexdigest() == split_info["text_sha1"]
        if not verified:
            raise EvalError(f"{cfg.data_dir}: the '{cfg.split}' tokens do not decode to the text manifest.json "
                            f"records (sha1 differs); rebuild the shards with `python -m data.prepare` (`make data`)")
    return tokens, raw, verified


def frequency_table(data_dir: str, train, tokens: np.ndarray, token_nll: np.ndarray) -> dict | None:
    """Perplexity by how frequent each target is in `train`, the real train split of `data_dir` (head: the
    types holding the first 50% of its tokens, mid: up to 90%, tail: the rest, unseen: never in it); None
    when there is no train split."""
    if train is None:
        return None
    counts = type_counts(train[:])
    buckets = frequency_buckets(counts)
    return {"buckets": bucket_perplexity(tokens[1:].astype(np.int64), token_nll, buckets),
            "train_split": {"data_dir": data_dir, "n_tokens": len(train), "types": bucket_summary(counts, buckets)}}


def evaluate(cfg: EvalConfig, split, train=None) -> dict:
    """Run both tasks as configured on `split` (the tokens of cfg.split: len(), slices, .manifest, .shards, as
    `data.loader.SplitTokens` has them); `train`: the train split's tokens (their frequency buckets), or None.
    Returns the results; `save_results` writes them."""
    device, dtype = resolve_device_and_dtype(cfg.device, cfg.dtype)
    t0 = time.perf_counter()
    model, seq_len, stride = load_for_eval(cfg, device)
    load_s = time.perf_counter() - t0
    compile = compile_wanted(cfg.compile, device)
    print(f"{cfg.name}: {model.num_params():,} parameters, context {model.config.n_positions}; windows of {seq_len} "
          f"tokens every {stride}; {describe(device, dtype)}")
    t_eval = time.perf_counter()
    tokens, raw, verified = eval_tokens(cfg, split, model.config.vocab_size)
    _, n_words = text_size(raw.decode("utf-8", errors="replace"))  # a cut prefix may end inside a character
    P, G = cfg.gen_prompt_tokens, cfg.gen_new_tokens
    starts = passage_starts(len(tokens), cfg.gen_passages, P + G)  # checked before the long perplexity pass
    t1 = time.perf_counter()
    ppl = evaluate_perplexity(model, tokens, seq_len=seq_len, stride=stride, batch_size=cfg.batch_size, device=device,
                              autocast_dtype=dtype, n_bytes=len(raw), n_words=n_words, progress=cfg.progress,
                              per_token=True)
    by_frequency = frequency_table(cfg.data_dir, train, tokens, ppl.token_nll)
    t2 = time.perf_counter()
    model.to(dtype)  # generation runs on weights stored in the precision (as distill.py's does)
    texts = continuation_task(model, tokens, starts, P, G, batch_size=cfg.gen_batch_size, compile=compile,
                              progress=cfg.progress)
    scores = score_continuations(texts["hypotheses"], texts["references"], rouge_stemmer=cfg.rouge_stemmer)
    t3 = time.perf_counter()
    results = {
        "name": cfg.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config_to_dict(cfg),
        "resolved": {"seq_len": seq_len, "stride": stride, "device": str(device), "precision": describe(device, dtype),
                     "compiled_decoding": compile},
        "model": {"source": cfg.model, "n_params": model.num_params(), "config": dataclasses.asdict(model.config),
                  "run": run_record(cfg.model)},
        "data": data_record(cfg, split, len(tokens), verified),
        "perplexity": ppl.as_dict(),
        "perplexity_by_frequency": by_frequency,
        "generation": {"passages": cfg.gen_passages, "prompt_tokens": P, "new_tokens": G, "strategy": "greedy",
                       "passage_spacing": starts[1] - starts[0] if len(starts) > 1 else None, **scores,
                       "examples": [{"prompt": texts["prompts"][i], "hypothesis": texts["hypotheses"][i],
                                     "reference": texts["references"][i]} for i in range(min(3, len(starts)))]},
        "seconds": {"load": load_s, "perplexity": t2 - t1, "generation": t3 - t2, "eval": t3 - t_eval},
        "versions": {**versions(), "tiktoken": tiktoken.__version__},
        "device": {"device": str(device), "name": device_name(device)},
    }
    return results


def save_results(cfg: EvalConfig, results: dict) -> str:
    """The results' row in cfg.table, then the JSON (cfg.out_json, or results/<name>.<split>.json); returns the
    table's text. The table first, the JSON last: a resumed study skips an evaluation whose JSON exists, so a kill
    between the two must leave the row to be written again (update_table replaces a row of the same name and
    split)."""
    out_json = Path(cfg.out_json or Path("results") / f"{cfg.name.replace('/', '_')}.{cfg.split}.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    table = update_table(cfg.table, table_row(results))
    with atomic_open(out_json) as f:
        f.write((json.dumps(results, indent=2) + "\n").encode())
    return table


def data_record(cfg: EvalConfig, split, n_eval: int, verified: bool | None) -> dict:
    manifest = split.manifest or {}
    return {"data_dir": cfg.data_dir, "label": Path(cfg.data_dir).resolve().name + (" (offline)" if manifest.get("offline") else ""),
            "split": cfg.split, "n_tokens_split": len(split), "first_token": cfg.first_token,
            "n_tokens_evaluated": n_eval, "whole_split": n_eval == len(split), "offline": manifest.get("offline"), "source": manifest.get("source"),
            "text_sha1_matches_manifest": verified, "shards": [p.name for p in split.shards]}

